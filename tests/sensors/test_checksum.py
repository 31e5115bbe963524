"""The line checksums, against published check values."""

from __future__ import annotations

import pytest

from sensors.text_line.checksum import ChecksumKind, append, compute, split_checked

MDA = b"WIMDA,30.2269,I,1.0236,B,17.7,C,,,43.3,,5.0,C,131.5,T,128.6,M,0.8,N,0.4,M"


def test_check_values() -> None:
    assert compute("crc16", b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value
    assert compute("nmea_xor", MDA) == 0x54  # the $WIMDA example in PROTOCOLS.md
    assert split_checked("nmea_xor", b"$" + MDA + b"*54") == MDA


@pytest.mark.parametrize("kind", ["nmea_xor", "crc16"])
def test_round_trip_and_corruption(kind: ChecksumKind) -> None:
    line = append(kind, b"31.20,-1.50")
    assert split_checked(kind, line) == b"31.20,-1.50"
    assert split_checked(kind, line.lower()) == b"31.20,-1.50"
    assert split_checked(kind, line.replace(b"31.2", b"31.3")) is None
    assert split_checked(kind, b"31.20,-1.50") is None
    assert split_checked(kind, line[:-1]) is None


@pytest.mark.parametrize("suffix", [b"*+5", b"*_5", b"* 5", b"*0x"])
def test_only_hex_digits(suffix: bytes) -> None:
    assert split_checked("nmea_xor", b"1,2" + suffix) is None


def test_none_passes_the_line_through() -> None:
    assert split_checked("none", b"1,2*00") == b"1,2*00"
    assert append("none", b"1,2") == b"1,2"
