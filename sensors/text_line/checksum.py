"""Line checksums a microcontroller can append as ``*`` + hex digits.

Shared by the driver (to check) and the simulator (to append), so both agree on the bytes.

- ``nmea_xor``: XOR of every byte of the line before the ``*`` (without a leading ``$``, as
  in NMEA 0183), written as 2 hex digits: ``31.20,-1.50*2C``.
- ``crc16``: CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, not reflected,
  no final XOR; ``"123456789"`` gives 0x29B1) of the same bytes, written as 4 hex digits.

Hex digits may be upper or lower case. Leading and trailing whitespace, including the CR of
a CR LF line end, is not part of the checked bytes.
"""

import binascii
from functools import reduce
from operator import xor
from typing import Literal

ChecksumKind = Literal["none", "nmea_xor", "crc16"]

HEX_DIGITS: dict[str, int] = {"nmea_xor": 2, "crc16": 4}
"""How many hex digits follow the ``*`` for each checksum kind."""


def compute(kind: ChecksumKind, body: bytes) -> int:
    """The checksum of ``body`` (the bytes before ``*``, without a leading ``$``)."""
    if kind == "nmea_xor":
        return reduce(xor, body, 0)
    if kind == "crc16":
        return binascii.crc_hqx(body, 0xFFFF)
    raise ValueError(f"checksum {kind!r} has no value to compute")


def append(kind: ChecksumKind, line: bytes) -> bytes:
    """``line`` with ``*`` and its checksum appended (unchanged for ``none``)."""
    if kind == "none":
        return line
    body = line[1:] if line.startswith(b"$") else line
    return b"%s*%0*X" % (line, HEX_DIGITS[kind], compute(kind, body))


def split_checked(kind: ChecksumKind, line: bytes) -> bytes | None:
    """The line without its ``*hh`` suffix (and a leading ``$``) if the checksum matches,
    else None.

    ``line`` must already be stripped of surrounding whitespace. A missing ``*``, a wrong
    number of hex digits, non-hex digits and a wrong value all give None.
    """
    if kind == "none":
        return line
    digits = HEX_DIGITS[kind]
    star = len(line) - digits - 1
    if star < 0 or line[star] != 0x2A:  # '*'
        return None
    suffix = line[star + 1 :]
    # int(x, 16) would also take '0x', '_', '+' and spaces; a checksum is hex digits only.
    if suffix.strip(b"0123456789abcdefABCDEF"):
        return None
    expected = int(suffix, 16)
    data = line[:star]
    body = data[1:] if data.startswith(b"$") else data
    return body if compute(kind, body) == expected else None
