"""The exporting organisation's Ed25519 key and the seal it puts on a bundle's manifests.

The seal is a signature over this text (UTF-8, ``\\n`` line ends)::

    farmtel-bag-v1
    manifest-sha256.txt <sha256 hex of the file>
    tagmanifest-sha256.txt <sha256 hex of the file>

The tag manifest holds the checksums of bagit.txt, bag-info.txt, the manifest and the
embedded public key, and the manifest holds those of every payload file, so the seal covers
every byte of the bundle. It is stored in ``manifest-sha256.txt.sig`` as
``ed25519:<key id>:<base64 signature>`` (the format of contract/signing.py; the key id is
the first 16 hex digits of the SHA-256 of the raw public key).
"""

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract import signing

SEAL_FILE = "manifest-sha256.txt.sig"
PUBLIC_KEY_FILE = "org-public-key.pem"


class KeyFileError(ValueError):
    """A key file cannot be written or read; the message names the file and what to do."""


def seal_message(manifest: bytes, tagmanifest: bytes) -> bytes:
    """The text the organisation signs, from the two manifest files' bytes."""
    return (
        "farmtel-bag-v1\n"
        f"manifest-sha256.txt {hashlib.sha256(manifest).hexdigest()}\n"
        f"tagmanifest-sha256.txt {hashlib.sha256(tagmanifest).hexdigest()}\n"
    ).encode()


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def new_key_file(path: Path, overwrite: bool = False) -> Ed25519PublicKey:
    """Write a new private key (PKCS#8 PEM, mode 0600) to ``path``; return its public key.

    Raises :class:`KeyFileError` when the file exists (unless ``overwrite``) or cannot be
    written.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"--out {path} exists; choose another path (an organisation key is never "
            "overwritten by accident)"
        ) from None
    except OSError as err:
        raise KeyFileError(f"--out {path}: cannot create it ({err.strerror})") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key.public_key()


def load_org_key(path: Path) -> Ed25519PrivateKey:
    """The organisation's private key; :class:`KeyFileError` naming ``--key`` when unusable."""
    try:
        return signing.load_private_key(path)
    except ValueError as err:
        raise KeyFileError(
            f"--key {err}; create one with `farmtel keys new --out org.pem`"
        ) from None


def load_pubkey_file(path: Path) -> Ed25519PublicKey:
    """A public key file (PEM or base64 of the raw 32 bytes) for ``--pubkey``."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise KeyFileError(f"--pubkey {path}: cannot read it ({err})") from None
    try:
        return signing.load_public_key(text)
    except ValueError as err:
        raise KeyFileError(f"--pubkey {path}: {err}") from None
