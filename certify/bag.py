"""BagIt (RFC 8493) bundles: writing with checksums computed on the fly, and checking.

Layout::

    bagit.txt                  BagIt-Version 1.0, UTF-8
    bag-info.txt               who, what, when (Payload-Oxum, Farmtel-... fields)
    data/...                   the payload
    manifest-sha256.txt        sha256 of every payload file
    tagmanifest-sha256.txt     sha256 of bagit.txt, bag-info.txt, the manifest, the org key
    org-public-key.pem         the exporting organisation's public key (PEM)
    manifest-sha256.txt.sig    the organisation's seal (see certify.orgkey)

Payload files are hashed while they are written, so an export never reads its output back.
"""

import base64
import hashlib
import io
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from certify.orgkey import PUBLIC_KEY_FILE, SEAL_FILE, public_pem, seal_message
from contract import signing

BAGIT_TXT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
MANIFEST = "manifest-sha256.txt"
TAGMANIFEST = "tagmanifest-sha256.txt"
TAG_FILES = ("bagit.txt", "bag-info.txt", MANIFEST, PUBLIC_KEY_FILE)
"""Tag files listed in the tag manifest, in this order."""
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64}) +(\S.*)$")


class BagError(RuntimeError):
    """The bundle cannot be written; the message names the path and what to do."""


class HashingWriter:
    """A payload file being written; counts bytes and hashes them as they go."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._pending: list[bytes] = []
        self._pending_size = 0

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= 1 << 20:
            self._flush()

    def _flush(self) -> None:
        chunk = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        self._hash.update(chunk)
        self._file.write(chunk)
        self.size += len(chunk)

    def close(self) -> str:
        """Close the file and return its sha256 (hex)."""
        self._flush()
        self._file.close()
        return self._hash.hexdigest()


class BagWriter:
    """Writes a bag into an empty or new folder ``root``.

    Raises :class:`BagError` when ``root`` exists and is not empty (an export never mixes
    with older files) or cannot be created.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise BagError(f"--out {root} exists and is not an empty folder; choose a new path")
        self._created = not root.exists()
        try:
            (root / "data").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise BagError(f"--out {root}: cannot create it ({err.strerror})") from None
        self._open: dict[str, HashingWriter] = {}
        self.digests: dict[str, str] = {}
        self.sizes: dict[str, int] = {}

    def abort(self) -> None:
        """Remove what was written (an export that failed leaves no half bundle behind)."""
        for w in self._open.values():
            w.close()
        self._open.clear()
        if self._created:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for child in self.root.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

    def payload(self, name: str) -> HashingWriter:
        """Open ``data/<name>`` for writing."""
        w = HashingWriter(self.root / "data" / name)
        self._open[name] = w
        return w

    def close_payload(self, name: str) -> None:
        w = self._open.pop(name)
        self.digests[f"data/{name}"] = w.close()
        self.sizes[f"data/{name}"] = w.size

    def add_payload(self, name: str, data: bytes) -> None:
        w = self.payload(name)
        w.write(data)
        self.close_payload(name)

    def finish(self, info: Mapping[str, str], key: Ed25519PrivateKey) -> None:
        """Write the tag files, the manifests and the seal made with ``key``."""
        for name in list(self._open):
            self.close_payload(name)
        oxum = f"{sum(self.sizes.values())}.{len(self.sizes)}"
        lines = [f"{k}: {v}" for k, v in info.items()] + [f"Payload-Oxum: {oxum}"]
        bag_info = ("\n".join(lines) + "\n").encode()
        manifest = "".join(f"{h}  {p}\n" for p, h in sorted(self.digests.items())).encode()
        tags = {
            "bagit.txt": BAGIT_TXT,
            "bag-info.txt": bag_info,
            MANIFEST: manifest,
            PUBLIC_KEY_FILE: public_pem(key.public_key()),
        }
        tagmanifest = "".join(
            f"{hashlib.sha256(tags[n]).hexdigest()}  {n}\n" for n in TAG_FILES
        ).encode()
        tags[TAGMANIFEST] = tagmanifest
        tags[SEAL_FILE] = (signing.sign(key, seal_message(manifest, tagmanifest)) + "\n").encode()
        for name, data in tags.items():
            (self.root / name).write_bytes(data)


class BundleSource(Protocol):
    """Read access to a bundle: a folder on disk, or files in memory (tamper tests)."""

    def names(self) -> list[str]:
        """Every file, as a ``/``-separated path relative to the bundle root."""
        ...

    def read(self, name: str) -> bytes: ...

    def open(self, name: str) -> BinaryIO: ...


class FolderBundle:
    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        out: list[str] = []
        for dirpath, _dirs, files in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            out.extend((rel / f).as_posix() for f in files)
        return sorted(out)

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def open(self, name: str) -> BinaryIO:
        return (self.root / name).open("rb")


@dataclass
class MemoryBundle:
    files: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def load(cls, source: BundleSource) -> "MemoryBundle":
        return cls({n: source.read(n) for n in source.names()})

    def names(self) -> list[str]:
        return sorted(self.files)

    def read(self, name: str) -> bytes:
        return self.files[name]

    def open(self, name: str) -> BinaryIO:
        return io.BytesIO(self.files[name])


def iter_lines(source: BundleSource, name: str) -> Iterator[bytes]:
    """The lines of a bundle file, read in 1 MiB blocks (memory stays flat)."""
    with source.open(name) as f:
        rest = b""
        while block := f.read(1 << 20):
            block = rest + block
            lines = block.split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


def sha256_file(source: BundleSource, name: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with source.open(name) as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def parse_manifest(text: bytes, what: str, failures: list[str]) -> dict[str, str]:
    """``path -> sha256`` from a manifest file; malformed lines become failures."""
    out: dict[str, str] = {}
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        failures.append(f"{what} is not UTF-8")
        return out
    for n, line in enumerate(decoded.split("\n"), 1):
        if not line:
            continue
        m = _MANIFEST_LINE.match(line)
        if not m:
            failures.append(f"{what} line {n} is not '<sha256>  <path>': {line[:80]!r}")
            continue
        path = m.group(2)
        if path in out:
            failures.append(f"{what} lists {path} twice")
        if path.startswith("/") or ".." in path.split("/"):
            failures.append(f"{what} line {n} names a path outside the bag: {path!r}")
            continue
        out[path] = m.group(1)
    return out


BAG_INFO_NOT_UTF8 = "bag-info.txt is not UTF-8"
"""The failure :func:`parse_bag_info` lists when it cannot read the file at all."""


def parse_bag_info(text: bytes, failures: list[str]) -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        failures.append(BAG_INFO_NOT_UTF8)
        return info
    for line in decoded.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            failures.append(f"bag-info.txt line {line[:60]!r} is not 'Label: value'")
            continue
        if key.strip() in info:
            failures.append(f"bag-info.txt has {key.strip()} twice")
        info[key.strip()] = value.strip()
    return info


REQUIRED_FILES = ("bagit.txt", "bag-info.txt", MANIFEST, TAGMANIFEST, SEAL_FILE)
"""The files every bundle has at its top, besides data/."""


@dataclass
class BagCheck:
    """What :func:`check_bag` found: failures (each a sentence) and notes for the reader."""

    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    """Files named missing in ``failures`` (verify does not name them again)."""
    payload_ok: bool = False
    """True when every payload file matches the manifest: the files can be read further."""


def check_bag(source: BundleSource, pinned: Ed25519PublicKey | None) -> BagCheck:
    """Check the bag's structure, every checksum and the organisation's seal.

    ``pinned`` is the organisation key the certifier trusts; without it the embedded key
    is used and a note says that this proves only integrity, not who exported.
    """
    check = BagCheck()
    fail = check.failures.append
    names = source.names()
    present = set(names)
    for required in REQUIRED_FILES:
        if required not in present:
            fail(f"{required} is missing")
            check.missing.add(required)
    if "bagit.txt" in present and source.read("bagit.txt") != BAGIT_TXT:
        fail("bagit.txt is not 'BagIt-Version: 1.0' with UTF-8 tag files")
    manifest_bytes = source.read(MANIFEST) if MANIFEST in present else b""
    tag_bytes = source.read(TAGMANIFEST) if TAGMANIFEST in present else b""
    manifest = parse_manifest(manifest_bytes, MANIFEST, check.failures)
    tagmanifest = parse_manifest(tag_bytes, TAGMANIFEST, check.failures)

    # Tag files: every one listed must match, and nothing unlisted may sit beside them.
    for name, digest in tagmanifest.items():
        if name.startswith("data/"):
            fail(f"{TAGMANIFEST} lists the payload file {name}")
        elif name not in present:
            if name not in check.missing:
                fail(f"{TAGMANIFEST} lists {name}, which is missing")
                check.missing.add(name)
        elif hashlib.sha256(source.read(name)).hexdigest() != digest:
            fail(f"{name} was changed: its sha256 does not match {TAGMANIFEST}")
    for name in TAG_FILES:
        if name in present and name not in tagmanifest:
            fail(f"{name} is not listed in {TAGMANIFEST}")
    for name in names:
        if (
            not name.startswith("data/")
            and name not in tagmanifest
            and name
            not in (
                TAGMANIFEST,
                SEAL_FILE,
            )
        ):
            fail(f"{name} is an extra file that no manifest lists")

    # Payload: every file listed and matching, no file unlisted.
    payload_ok = bool(manifest)
    total = 0
    for name, digest in manifest.items():
        if not name.startswith("data/"):
            fail(f"{MANIFEST} lists {name}, which is not under data/")
            payload_ok = False
        elif name not in present:
            fail(f"{name} is missing (listed in {MANIFEST})")
            check.missing.add(name)
            payload_ok = False
        else:
            got, size = sha256_file(source, name)
            total += size
            if got != digest:
                fail(f"{name} was changed: its sha256 does not match {MANIFEST}")
                payload_ok = False
    for name in names:
        if name.startswith("data/") and name not in manifest:
            fail(f"{name} is an extra payload file that {MANIFEST} does not list")
            payload_ok = False

    if "bag-info.txt" in present:
        check.info = parse_bag_info(source.read("bag-info.txt"), check.failures)
        oxum = check.info.get("Payload-Oxum")
        # When a payload file is missing or changed, that failure is named above: the
        # octet count would only say it again.
        if payload_ok and oxum != f"{total}.{len(manifest)}":
            fail(
                f"bag-info.txt Payload-Oxum is {oxum}, but the payload holds "
                f"{total}.{len(manifest)} (bytes.files)"
            )

    _check_seal(source, present, manifest_bytes, tag_bytes, pinned, check)
    check.payload_ok = payload_ok and not check.failures
    return check


def _check_seal(
    source: BundleSource,
    present: set[str],
    manifest_bytes: bytes,
    tag_bytes: bytes,
    pinned: Ed25519PublicKey | None,
    check: BagCheck,
) -> None:
    fail = check.failures.append
    key = pinned
    if pinned is None:
        if PUBLIC_KEY_FILE not in present:
            fail(
                f"{PUBLIC_KEY_FILE} is missing and no --pubkey was given: nothing to check "
                "the seal with"
            )
            return
        try:
            key = signing.load_public_key(source.read(PUBLIC_KEY_FILE).decode("ascii"))
        except (ValueError, UnicodeDecodeError) as err:
            fail(f"{PUBLIC_KEY_FILE} is not an Ed25519 public key ({err})")
            return
        check.notes.append(
            "THE SEAL WAS CHECKED WITH THE KEY INSIDE THE BUNDLE. That proves the files are "
            "intact, not who exported them: get the organisation's public key from the "
            "organisation itself and run again with --pubkey FILE."
        )
    elif PUBLIC_KEY_FILE in present:
        try:
            embedded = signing.load_public_key(source.read(PUBLIC_KEY_FILE).decode("ascii"))
            if signing.key_id(embedded) != signing.key_id(pinned):
                check.notes.append(
                    f"{PUBLIC_KEY_FILE} (key {signing.key_id(embedded)}) is not the pinned "
                    f"key {signing.key_id(pinned)}"
                )
        except (ValueError, UnicodeDecodeError):
            pass  # reported by the tag manifest check or irrelevant: the pinned key rules
    if SEAL_FILE not in present or key is None:
        return
    # The seal's own messages: contract.signing's speak of gateways and batches.
    try:
        text = source.read(SEAL_FILE).decode("ascii")
    except UnicodeDecodeError:
        fail(f"the organisation's seal {SEAL_FILE} is not ASCII text")
        return
    sig = text.strip()
    try:
        kid, raw = signing.parse_signature(sig)
    except signing.SignatureError:
        kid, raw = "", b""
    # One text per signature: no other spacing, no base64 with stray padding bits.
    if not kid or text != sig + "\n" or sig.rsplit(":", 1)[1] != base64.b64encode(raw).decode():
        fail(
            f"the organisation's seal {SEAL_FILE} is not exactly one line "
            "'ed25519:<key id>:<base64 of the 64-byte signature>'"
        )
        return
    want = signing.key_id(key)
    if kid != want:
        if pinned is not None:
            fail(
                f"the seal was made with key {kid}, not the organisation key you gave "
                f"({want}): the bundle was not sealed by the holder of that key, or --pubkey "
                "is not the exporting organisation's key"
            )
        else:
            fail(f"the seal was made with key {kid}, not the key in {PUBLIC_KEY_FILE} ({want})")
        return
    try:
        key.verify(raw, seal_message(manifest_bytes, tag_bytes))
    except InvalidSignature:
        fail(
            f"the seal does not match {MANIFEST} and {TAGMANIFEST}: they were changed after "
            "sealing (or the seal comes from another bundle)"
        )
        return
    check.notes.append(f"seal: signed by organisation key {kid}")
    declared = check.info.get("Farmtel-Org-Key-Id")
    if declared is not None and declared != kid:
        fail(f"bag-info.txt Farmtel-Org-Key-Id is {declared}, but the seal was made with key {kid}")
