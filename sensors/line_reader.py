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

Reads of one port are spaced by its ``read_window`` (:class:`Pace`) while it is busy:
once bytes came within half the window after the previous read (so that a window is
likely to gather two lines or more), the reader waits until the window since that read
has passed before it looks at the port again, so that lines arriving meanwhile are taken
in one wake-up instead of one each (a thread wake-up, not the parsing, is most of what a
line costs the agent). When the wait finds nothing, the port is quiet again: the reader
sleeps in poll() and reads the next bytes the moment they arrive. So lines that come
alone or slowly (a sensor printing every second) are read, and stamped, on arrival, at one
wake-up per line as without a window; a line that comes within the window after the
previous read of a busy port is read, and stamped, up to ``read_window`` seconds after it
arrived (a line's timestamp is the time its last byte was read; lines read together get
timestamps 1 ns apart, see the drivers). Nothing is dropped or split by the wait: the
bytes wait in the kernel's tty buffers, and a line cut by a read is completed by the next
one. A read returns at most the line discipline's 4 KiB buffer, so a port that delivers
``FAST_CHUNK_BYTES`` or more in one read is not held at all (it is read as fast as
without a window): a fast or bursty device is never slowed down to 4 KiB per window.
"""

import math
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
FAST_CHUNK_BYTES = 1024
"""A read of this many bytes or more ends the hold (:class:`Pace`): the device is fast."""


class Pace:
    """When a streaming port is read (module docstring): a busy port at most once per
    ``window`` seconds, a quiet one as soon as bytes arrive. ``window`` 0: always at once.

    The read loop calls :meth:`hold` before it looks at the port, :meth:`quiet` when a hold
    found nothing waiting, and :meth:`read_done` after each read that returned bytes.
    """

    __slots__ = ("busy", "last_read", "window")

    def __init__(self, window: float):
        if not 0.0 <= window <= 60.0:
            raise ValueError(f"read window {window!r} must be between 0 and 60 seconds")
        self.window = window
        self.busy = False
        """Bytes keep coming (module docstring): hold before the next look at the port."""
        self.last_read = -math.inf
        """time.monotonic() of the last read that returned bytes."""

    def hold(self, left: float) -> bool:
        """If busy, sleep until ``window`` after the last read (at most ``left`` s).

        Returns True if the port is busy: the caller then checks without blocking whether
        bytes are waiting, and calls :meth:`quiet` if none are.
        """
        if not self.busy:
            return False
        wait = min(self.last_read + self.window - time.monotonic(), left)
        if wait > 0.0:
            time.sleep(wait)
        return True

    def quiet(self) -> None:
        """Nothing came during the window: read the next bytes as soon as they arrive."""
        self.busy = False

    def read_done(self, now: float, waiting: bool, size: int) -> None:
        """``size`` bytes were read at ``now`` (time.monotonic()); ``waiting``: they were
        already there when a hold ended, rather than waking the reader."""
        self.busy = (
            self.window > 0.0
            and size < FAST_CHUNK_BYTES
            and (waiting or now - self.last_read < self.window / 2)
        )
        self.last_read = now


def read_stream(
    sensor: str,
    port_url: str,
    port: serial.SerialBase | None,
    timeout: float,
    feed: Callable[[bytes, int], list[T]],
    pace: Pace | None = None,
) -> list[T]:
    """The read loop of a streaming driver: hand what arrives to ``feed(chunk, arrival_ns)``
    until it returns something or ``timeout`` seconds pass (then ``[]``).

    ``arrival_ns`` is the wall-clock time the chunk was read. With ``pace``, a busy port
    is not looked at again until its window has passed since the last read (module
    docstring); the wait counts against ``timeout``. Raises SensorPortError if the port is
    not open or goes away (unplugged adapter).
    """
    if port is None:
        raise SensorPortError(sensor, "read() before open(); the port is not open")
    fd = _device_fd(port)
    if fd is not None:
        return _read_device(sensor, port_url, fd, timeout, feed, pace)
    deadline = time.monotonic() + timeout
    while True:
        try:
            waiting = 0
            if pace is not None and pace.hold(deadline - time.monotonic()):
                waiting = port.in_waiting
                if not waiting:
                    pace.quiet()
            chunk = port.read(min(max(waiting or port.in_waiting, 1), READ_CHUNK_BYTES))
        except (serial.SerialException, OSError) as err:
            raise _port_failed(sensor, port_url, err) from err
        if chunk:
            arrival_ns = time.time_ns()
            if pace is not None:
                pace.read_done(time.monotonic(), waiting > 0, len(chunk))
            out = feed(chunk, arrival_ns)
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
    pace: Pace | None = None,
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
        waiting = False
        try:
            if pace is not None and pace.hold(left):
                # The window is over: take what came meanwhile, or wait for the next bytes.
                ready = poller.poll(0)
                waiting = bool(ready)
                if not waiting:
                    pace.quiet()
                    ready = poller.poll(max(0.0, deadline - time.monotonic()) * 1000.0)
            else:
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
            arrival_ns = time.time_ns()
            if pace is not None:
                pace.read_done(time.monotonic(), waiting, len(chunk))
            out = feed(chunk, arrival_ns)
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
