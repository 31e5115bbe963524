"""Batch signatures: what a gateway signs, so anyone can check a stored reading later.

A gateway signs each batch with its Ed25519 key. The signed message is not the JSON
payload (JSON can be re-encoded) but a canonical text built only from what InfluxDB keeps
of the batch, so a certifier can rebuild it from an export and check the signature without
trusting the plantation, the ingest or us::

    farmtel-batch-v1
    plantation <plantation>
    gateway <gateway>
    batch <batch id>
    R <seq> <sensor> <field> <kind> <ts> <clock> <cal or -> <name>=<repr(value)>,...   (by seq)
    G <sensor or *> <start> <end> <reason> <seq or -> <count>       (by start, end, sensor, reason)

Values are written with ``repr(float(v))`` (the shortest text that reads back to the same
float) and sorted by name. Gap ``detail`` text is not signed: it is free text for people.
The signature travels in the batch's ``sig`` field as ``ed25519:<key id>:<base64 sig>``;
the key id is the first 16 hex digits of the SHA-256 of the raw public key.
"""

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract.wire import Batch, Gap, PlainReading, WireReading

SIG_SCHEME = "ed25519"


class SignatureError(ValueError):
    """A signature is missing, malformed, made with an unknown key, or does not match."""


@dataclass(frozen=True, slots=True)
class SignedReading:
    """The parts of a reading that are signed (as stored and exported)."""

    seq: int
    sensor: str
    field: str
    kind: str
    ts: int
    clock: str
    cal: str | None
    values: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class SignedGap:
    sensor: str | None
    start: int
    end: int
    reason: str
    seq: int | None
    count: int


def canonical_message(
    plantation: str,
    gateway: str,
    batch_id: str,
    readings: Iterable[SignedReading],
    gaps: Iterable[SignedGap],
) -> bytes:
    parts = [_head(plantation, gateway, batch_id)]
    for r in sorted(readings, key=lambda r: r.seq):
        vals = ",".join(f"{k}={float(v)!r}" for k, v in sorted(r.values.items()))
        parts.append(
            f"R {r.seq} {r.sensor} {r.field} {r.kind} {r.ts} {r.clock} {r.cal or '-'} {vals}\n"
        )
    _add_gaps(parts, gaps)
    return "".join(parts).encode("utf-8")


def _head(plantation: str, gateway: str, batch_id: str) -> str:
    return f"farmtel-batch-v1\nplantation {plantation}\ngateway {gateway}\nbatch {batch_id}\n"


def _add_gaps(parts: list[str], gaps: Iterable[SignedGap]) -> None:
    for g in sorted(gaps, key=lambda g: (g.start, g.end, g.sensor or "*", g.reason)):
        seq = "-" if g.seq is None else str(g.seq)
        parts.append(f"G {g.sensor or '*'} {g.start} {g.end} {g.reason} {seq} {g.count}\n")


def batch_message(plantation: str, batch: Batch) -> bytes:
    """The canonical message of a batch as the gateway sends it."""
    return canonical_message(
        plantation,
        batch.gateway,
        batch.batch,
        (
            SignedReading(r.seq, r.sensor, r.field, r.kind, r.ts, r.clock.value, r.cal, r.values)
            for r in batch.readings
        ),
        (SignedGap(g.sensor, g.start, g.end, g.reason, g.seq, g.count) for g in batch.gaps),
    )


_value_formats: dict[tuple[str, ...], tuple[str, Callable[[Any], Any], bool]] = {}
"""Value names in a reading's order -> (``name=%r,...`` sorted by name, getter, one value)."""


def _value_format(names: tuple[str, ...]) -> tuple[str, Callable[[Any], Any], bool]:
    order = sorted(names)
    form = (
        ",".join(f"{k.replace('%', '%%')}=%r" for k in order),
        itemgetter(*order),
        len(order) == 1,
    )
    if len(_value_formats) >= 4096:
        _value_formats.clear()
    _value_formats[names] = form
    return form


_SIGNED_FIELDS = ("seq", "sensor", "field", "kind", "ts", "clock", "cal", "values")
_Getters = tuple[Callable[[Any], Any], Callable[[Any], Any]]
_from_wire: _Getters = (itemgetter("seq"), itemgetter(*_SIGNED_FIELDS))
_from_plain: _Getters = (attrgetter("seq"), attrgetter(*_SIGNED_FIELDS))


def wire_batch_message(
    plantation: str,
    gateway: str,
    batch_id: str,
    readings: Sequence[WireReading] | Sequence[PlainReading],
    gaps: Iterable[Gap],
) -> bytes:
    """:func:`batch_message` of the batch of these parts: the same bytes, without building a
    :class:`Reading` or a :class:`SignedReading` per reading. The readings are in their wire
    form, as ``contract.wire.plain_reading`` returns them (the agent), or as the ingest's
    decoder parsed them (``contract.wire.PlainReading``); values floats either way."""
    parts = [_head(plantation, gateway, batch_id)]
    append = parts.append
    formats = _value_formats
    by_seq, fields = _from_plain if readings and type(readings[0]) is PlainReading else _from_wire
    for r in sorted(readings, key=by_seq):
        seq, sensor, field, kind, ts, clock, cal, values = fields(r)
        names = tuple(values)
        if names:
            form, get, one = formats.get(names) or _value_format(names)
            # "%r" % v is repr(v), and the values of a wire form are floats: repr(float(v)).
            vals = form % ((get(values),) if one else get(values))
        else:  # not a valid reading; signed as canonical_message would
            vals = ""
        append(f"R {seq} {sensor} {field} {kind} {ts} {clock} {cal or '-'} {vals}\n")
    _add_gaps(parts, (SignedGap(g.sensor, g.start, g.end, g.reason, g.seq, g.count) for g in gaps))
    return "".join(parts).encode("utf-8")


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key_bytes(key)).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    sig = base64.b64encode(key.sign(message)).decode("ascii")
    return f"{SIG_SCHEME}:{key_id(key.public_key())}:{sig}"


def parse_signature(sig: str) -> tuple[str, bytes]:
    """``(key id, raw signature)``; SignatureError when the text is not ours."""
    scheme, _, rest = sig.partition(":")
    kid, _, b64 = rest.partition(":")
    if scheme != SIG_SCHEME or len(kid) != 16 or not b64:
        raise SignatureError(f"signature {sig[:40]!r} is not ed25519:<key id>:<base64>")
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError:
        raise SignatureError("signature is not valid base64") from None
    if len(raw) != 64:
        raise SignatureError(f"signature is {len(raw)} bytes, not 64")
    return kid, raw


def verify(keys: Mapping[str, Ed25519PublicKey], sig: str | None, message: bytes) -> str:
    """Check ``sig`` over ``message`` against ``keys`` (key id -> public key).

    Returns the key id that verified; raises :class:`SignatureError` naming the problem.
    """
    if not sig:
        raise SignatureError("batch is not signed")
    kid, raw = parse_signature(sig)
    key = keys.get(kid)
    if key is None:
        raise SignatureError(f"signed with key {kid}, which is not registered for this gateway")
    try:
        key.verify(raw, message)
    except InvalidSignature:
        raise SignatureError(f"signature by key {kid} does not match the batch") from None
    return kid


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM (PKCS#8) Ed25519 private key; ValueError naming the file when it is not one."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from PEM text or base64 of the 32 raw bytes."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as err:
        raise ValueError(f"not an Ed25519 public key: {err}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key
