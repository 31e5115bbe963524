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

import os
import select
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
    fd = _device_fd(port)
    if fd is not None:
        return _read_device(sensor, port_url, fd, timeout, feed)
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = port.read(min(max(port.in_waiting, 1), READ_CHUNK_BYTES))
        except (serial.SerialException, OSError) as err:
            raise _port_failed(sensor, port_url, err) from err
        if chunk:
            out = feed(chunk, time.time_ns())
            if out:
                return out
        if time.monotonic() >= deadline:
            return []


def _port_failed(sensor: str, port_url: str, err: object) -> SensorPortError:
    return SensorPortError(
        sensor,
        f"port {port_url!r} failed while reading: {err}; check the cable and the "
        "adapter (the port is reopened on the next open())",
    )


def _device_fd(port: serial.SerialBase) -> int | None:
    """The file descriptor of a local serial device opened by pyserial's POSIX class, else
    None (``socket://``, ``rfc2217://``, ``loop://`` ... and other platforms)."""
    if type(port).read is not _POSIX_READ:
        return None
    fd = getattr(port, "fd", None)
    return fd if isinstance(fd, int) else None


_HANGUP = select.POLLHUP | select.POLLERR | select.POLLNVAL
_POSIX_READ = getattr(getattr(serial, "serialposix", None), "Serial", serial.SerialBase).read
"""pyserial's own POSIX ``read``: a port whose class still uses it can be read through its fd."""


def _read_device(
    sensor: str,
    port_url: str,
    fd: int,
    timeout: float,
    feed: Callable[[bytes, int], list[T]],
) -> list[T]:
    """:func:`read_stream` on a local device: sleep in poll() until bytes arrive or the
    deadline passes, then take everything the tty holds in one read.

    pyserial's ``read(n)`` wakes on its own timeout to look at the clock and returns after
    ``n`` bytes, so ``read(max(in_waiting, 1))`` cost two reads, two selects and two ioctls
    per line plus ten wake-ups a second per idle port. Here: one poll and one read per
    chunk the tty delivers (usually a whole line), none while the port is idle. The fd is
    non-blocking (pyserial opens it with O_NONBLOCK). An unplugged adapter shows as an
    error or an end of file on read, as in pyserial.
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    left = timeout
    while True:
        try:
            ready = poller.poll(left * 1000.0)
            chunk = os.read(fd, READ_CHUNK_BYTES) if ready else b""
        except BlockingIOError as err:
            if ready[0][1] & _HANGUP:  # no data and never will be: do not spin on it
                raise _port_failed(sensor, port_url, err) from err
            chunk = b""  # readiness without data (another reader took it): wait again
        except OSError as err:
            raise _port_failed(sensor, port_url, err) from err
        else:
            if ready and not chunk:
                # What pyserial reports for a device that vanished: readable, yet no data.
                raise _port_failed(
                    sensor,
                    port_url,
                    "device reports readiness to read but returned no data (device "
                    "disconnected or multiple access on port?)",
                )
        if chunk:
            out = feed(chunk, time.time_ns())
            if out:
                return out
        left = deadline - time.monotonic()
        if left <= 0:
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
