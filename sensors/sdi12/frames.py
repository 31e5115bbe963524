"""SDI-12 frames as bytes: addresses, the CRC, and parsing the responses a master reads.

Pure functions shared by the driver and the simulator; no serial port here. Every parser
raises :class:`FrameError` whose ``reason`` is a short counter name (``bad_crc``,
``wrong_address``, ``bad_format``) and whose message says what was wrong.
"""

import re
from dataclasses import dataclass

ADDRESSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
"""Every SDI-12 address, in the order a scan queries them."""

_ADDRESS_BYTES = frozenset(bytes([c]) for c in ADDRESSES.encode("ascii"))

MAX_VALUE_DIGITS = 7
"""A value is a sign, at most 7 digits and an optional decimal point (SDI-12 1.4, 4.4.5)."""

_VALUE_RE = re.compile(rb"[+-](?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_MEASURE_RE = re.compile(rb"^([0-9]{3})([0-9]{1,3})$")


class FrameError(ValueError):
    """A response that is not what the command asks for. ``reason`` names the counter."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


def check_address(address: str) -> str:
    """Raise ValueError unless ``address`` is one SDI-12 address character."""
    if len(address) != 1 or address not in ADDRESSES:
        raise ValueError(
            f"SDI-12 address {address!r} must be one character: 0-9, A-Z or a-z "
            "(most sensors ship as 0)"
        )
    return address


def crc16(data: bytes) -> int:
    """CRC-16 of SDI-12 (poly 0xA001 reflected, init 0, no final XOR), over ``data``."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def encode_crc(crc: int) -> bytes:
    """The 3 ASCII characters SDI-12 sends for ``crc``: 0x40 | each 6-bit group, high first."""
    return bytes((0x40 | (crc >> 12), 0x40 | ((crc >> 6) & 0x3F), 0x40 | (crc & 0x3F)))


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its encoded CRC (what a sensor sends before CR LF)."""
    return body + encode_crc(crc16(body))


def format_value(value: float, decimals: int) -> bytes:
    """One SDI-12 value: sign, digits, optional point; ``decimals`` digits after it."""
    text = f"{value:+.{decimals}f}"
    if text[1:].replace(".", "").lstrip("0") == "" and text.startswith("-"):
        text = "+" + text[1:]  # -0.00 is sent as +0.00
    return text.encode("ascii")


def parse_values(data: bytes) -> list[float]:
    """The values in the body of a D response (after the address), e.g. ``+1.5-2+30``.

    Raises FrameError(bad_format) if anything but sign-prefixed numbers is there.
    """
    values: list[float] = []
    position = 0
    while position < len(data):
        match = _VALUE_RE.match(data, position)
        if match is None:
            raise FrameError(
                "bad_format", f"not a sign-prefixed value at byte {position}: {data[position:]!r}"
            )
        text = match.group()
        if len(text) - 1 - text.count(b".") > MAX_VALUE_DIGITS:
            raise FrameError("bad_format", f"value {text!r} has more than 7 digits")
        values.append(float(text))
        position = match.end()
    return values


def _body(line: bytes, address: str) -> bytes:
    if not line:
        raise FrameError("bad_format", "empty response")
    if line[:1] not in _ADDRESS_BYTES:
        raise FrameError("bad_format", f"response {line[:40]!r} does not start with an address")
    if line[:1] != address.encode("ascii"):
        raise FrameError("wrong_address", f"response {line[:40]!r} is not from address {address!r}")
    return line[1:]


@dataclass(frozen=True)
class Measurement:
    """What ``aM!`` / ``aC!`` answered: seconds until the data is ready, and how many values."""

    seconds: int
    count: int


def parse_measure(line: bytes, address: str, concurrent: bool = False) -> Measurement:
    """Parse ``atttn`` (``aM!``, ``aMC!``) or ``atttnn`` (``aC!``, ``aCC!``); ``line`` has no
    CR LF. Raises FrameError."""
    body = _body(line, address)
    match = _MEASURE_RE.match(body)
    digits = 2 if concurrent else 1
    if match is None or len(match.group(2)) != digits:
        raise FrameError(
            "bad_format",
            f"measurement answer {line!r} must be the address, 3 digits of seconds and "
            f"{digits} digit(s) of value count",
        )
    return Measurement(int(match.group(1)), int(match.group(2)))


def parse_data(line: bytes, address: str, crc: bool) -> list[float]:
    """The values of a ``aDn!`` response (``line`` without CR LF); with ``crc``, the last 3
    characters must be the CRC of the rest. Raises FrameError (``bad_crc`` on a mismatch)."""
    body = _body(line, address)
    if crc:
        if len(body) < 3:
            raise FrameError("bad_crc", f"response {line!r} is too short to hold a CRC")
        expected = encode_crc(crc16(line[:-3]))
        if line[-3:] != expected:
            raise FrameError(
                "bad_crc", f"CRC of {line[:-3]!r} is {expected!r}, the sensor sent {line[-3:]!r}"
            )
        body = body[:-3]
    return parse_values(body)


@dataclass(frozen=True)
class Identity:
    """What ``aI!`` answered (SDI-12 1.4, 4.4.2); text fields stripped of padding."""

    address: str
    sdi_version: str
    vendor: str
    model: str
    version: str
    serial: str

    def as_dict(self) -> dict[str, str]:
        return {
            "address": self.address,
            "sdi_version": self.sdi_version,
            "vendor": self.vendor,
            "model": self.model,
            "version": self.version,
            "serial": self.serial,
        }


def parse_identity(line: bytes, address: str) -> Identity:
    """Parse ``allccccccccmmmmmmvvvxxx...``; raises FrameError if it is shorter than 20 bytes
    or not printable ASCII."""
    body = _body(line, address)
    if len(body) < 19 or not all(0x20 <= b < 0x7F for b in body):
        raise FrameError("bad_format", f"identification {line!r} is not 2+8+6+3 printable chars")
    text = body.decode("ascii")
    return Identity(
        address=address,
        sdi_version=f"{text[0]}.{text[1]}",
        vendor=text[2:10].strip(),
        model=text[10:16].strip(),
        version=text[16:19].strip(),
        serial=text[19:].strip(),
    )
