"""Line framing for streaming drivers: bytes from a serial port in, complete lines out.

pyserial's ``readline()`` buffers without limit when no line end comes, so streaming
drivers split lines themselves with a cap (the same rules as the ``text_line`` driver):

- a line ends at LF (a CR before it is left to the caller, who strips whitespace);
- ``partial_line``: the bytes before the first line end after a (re)start: the reader
  cannot know whether it started mid-line. A driver whose lines carry their own start mark
  and checksum (NMEA ``$...*hh``) may keep that first line (``keep_first=True``);
- ``too_long``: a line longer than ``max_line`` bytes, or that many bytes with no line end;
  everything up to the next LF is then dropped and the reader resynchronises there.

Rejections go to the ``reject(reason, detail)`` callback; nothing is raised.
"""

import time
from collections.abc import Callable
from typing import TypeVar

import serial

from sensors.base import SensorPortError

Reject = Callable[[str, bytes], None]
T = TypeVar("T")

READ_CHUNK_BYTES = 65_536
"""Most bytes taken from the port in one call."""


def read_stream(
    sensor: str,
    port_url: str,
    port: serial.SerialBase | None,
    timeout: float,
    feed: Callable[[bytes, int], list[T]],
) -> list[T]:
    """The read loop of a streaming driver: hand what arrives to ``feed(chunk, arrival_ns)``
    until it returns something or ``timeout`` seconds pass (then ``[]``).

    Raises SensorPortError if the port is not open or goes away (unplugged adapter).
    """
    if port is None:
        raise SensorPortError(sensor, "read() before open(); the port is not open")
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = port.read(min(max(port.in_waiting, 1), READ_CHUNK_BYTES))
        except (serial.SerialException, OSError) as err:
            raise SensorPortError(
                sensor,
                f"port {port_url!r} failed while reading: {err}; check the cable and the "
                "adapter (the port is reopened on the next open())",
            ) from err
        if chunk:
            out = feed(chunk, time.time_ns())
            if out:
                return out
        if time.monotonic() >= deadline:
            return []


class LineReader:
    """Splits a byte stream into lines of at most ``max_line`` bytes (without the LF)."""

    def __init__(self, max_line: int, reject: Reject, *, keep_first: bool = False):
        self.max_line = max_line
        self._reject = reject
        self._keep_first = keep_first
        self.reset()

    def reset(self) -> None:
        """Forget buffered bytes, e.g. after the port was reopened."""
        self._pending = b""
        self._dropping = False
        self._synced = self._keep_first

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes; raw bytes without the LF (CR and blanks kept)."""
        if self._dropping:
            newline = chunk.find(b"\n")
            if newline < 0:
                return []
            self._dropping = False
            self._synced = True
            chunk = chunk[newline + 1 :]
        data = self._pending + chunk if self._pending else chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        if not self._synced and lines:
            self._synced = True
            first = lines.pop(0)
            if first.strip() or len(first) > self.max_line + 1:
                self._reject("partial_line", first[:80])
        kept = []
        for line in lines:
            # One byte more than max_line: room for the CR of a CR LF line end.
            if len(line) > self.max_line + 1:
                self._reject("too_long", line[:80])
            else:
                kept.append(line)
        if len(self._pending) > self.max_line + 1:
            self._reject("too_long" if self._synced else "partial_line", self._pending[:80])
            self._pending = b""
            self._dropping = True
        return kept
