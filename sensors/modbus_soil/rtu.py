"""Modbus RTU frames for reading registers: build, find in a byte stream, decode.

Shared by the driver (master) and the simulator (slave). Pure functions on bytes; no I/O.

A read request is ``slave, function, start (2), count (2), CRC (2)``. Its answer is
``slave, function, byte count, data (2 per register), CRC (2)``, or an exception
``slave, function | 0x80, code, CRC (2)``. The CRC is CRC-16/Modbus (poly 0xA001 reflected,
init 0xFFFF), sent low byte first.
"""

import struct
from dataclasses import dataclass

EXCEPTION_FLAG = 0x80
REQUEST_BYTES = 8
EXCEPTION_BYTES = 5

EXCEPTION_MEANINGS: dict[int, str] = {
    1: "illegal function (the probe does not support this function code: try function = 4 or 3)",
    2: "illegal data address (the register range is not in this probe's map: check profile)",
    3: "illegal data value (the register count is not accepted: check profile)",
    4: "slave device failure (the probe failed while reading: check the probe)",
    5: "acknowledge (the probe is busy with a long operation)",
    6: "slave device busy (retry later)",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
"""Modbus exception codes and what they mean for an installer."""


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/Modbus of ``data`` (as an int; it goes on the wire little-endian)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    """``body`` followed by its CRC, low byte first."""
    return body + struct.pack("<H", crc16(body))


def crc_ok(frame: bytes | bytearray | memoryview) -> bool:
    """True if the last two bytes of ``frame`` are the CRC of the rest."""
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def read_request(slave: int, function: int, start: int, count: int) -> bytes:
    """The request frame reading ``count`` registers from ``start``."""
    return with_crc(struct.pack(">BBHH", slave, function, start, count))


def response_bytes(count: int) -> int:
    """Length of a normal answer carrying ``count`` registers."""
    return 5 + 2 * count


def register_response(slave: int, function: int, words: list[int]) -> bytes:
    """The normal answer carrying ``words``."""
    body = struct.pack(f">BBB{len(words)}H", slave, function, 2 * len(words), *words)
    return with_crc(body)


def exception_response(slave: int, function: int, code: int) -> bytes:
    """The exception answer with ``code``."""
    return with_crc(bytes((slave, function | EXCEPTION_FLAG, code)))


@dataclass(frozen=True, slots=True)
class Registers:
    """A valid normal answer: the registers read."""

    words: list[int]


@dataclass(frozen=True, slots=True)
class ExceptionReply:
    """A valid exception answer."""

    code: int

    @property
    def meaning(self) -> str:
        return EXCEPTION_MEANINGS.get(self.code, "unknown exception code")


@dataclass(frozen=True, slots=True)
class Incomplete:
    """No valid answer in the bytes so far. ``bad_crc`` counts answer-shaped frames (right
    slave id, function and length) whose CRC was wrong."""

    bad_crc: int


Answer = Registers | ExceptionReply | Incomplete


def find_answer(buffer: bytes | bytearray, slave: int, function: int, count: int) -> Answer:
    """The first valid answer of ``slave`` to a read of ``count`` registers in ``buffer``.

    Noise before the answer is skipped: every offset where the slave id appears is tried.
    A candidate counts only with the right function (or its exception), the right byte
    count and a good CRC, so random bytes pass for an answer with odds of about 2**-32.
    """
    bad_crc = 0
    normal_len = response_bytes(count)
    position = buffer.find(bytes((slave,)))
    while position >= 0:
        rest = len(buffer) - position
        if rest >= 2:
            code = buffer[position + 1]
            if code == function and rest >= 3 and buffer[position + 2] == 2 * count:
                if rest >= normal_len:
                    frame = bytes(buffer[position : position + normal_len])
                    if crc_ok(frame):
                        data = frame[3:-2]
                        return Registers(list(struct.unpack(f">{count}H", data)))
                    bad_crc += 1
            elif code == function | EXCEPTION_FLAG and rest >= EXCEPTION_BYTES:
                frame = bytes(buffer[position : position + EXCEPTION_BYTES])
                if crc_ok(frame):
                    return ExceptionReply(frame[2])
                bad_crc += 1
        position = buffer.find(bytes((slave,)), position + 1)
    return Incomplete(bad_crc)


@dataclass(frozen=True, slots=True)
class Request:
    """A read request found by the simulator."""

    slave: int
    function: int
    start: int
    count: int


def find_request(buffer: bytearray) -> tuple[Request | None, int]:
    """The first valid read request (function 3 or 4) in ``buffer`` and the bytes consumed
    up to its end; ``(None, n)`` when there is none yet, ``n`` bytes being safe to drop."""
    for position in range(len(buffer)):
        if len(buffer) - position < REQUEST_BYTES:
            return None, position
        frame = bytes(buffer[position : position + REQUEST_BYTES])
        if frame[1] in (3, 4) and crc_ok(frame):
            slave, function, start, count = struct.unpack(">BBHH", frame[:6])
            return Request(slave, function, start, count), position + REQUEST_BYTES
    return None, len(buffer)
