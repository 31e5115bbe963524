"""One SDI-12 bus: a serial port shared by every sensor wired to it, with the spec's timing.

Several ``[[sensors]]`` entries name one port (one data line, many addresses). The agent
reads all sensors of a port from one thread, so they take turns; :func:`acquire` hands them
one shared :class:`Bus` (reference-counted), because the port is opened exclusively.

Timing (SDI-12 1.4, section 7): before a command, when the line was idle for more than
87 ms, the master sends a break (spacing >= 12 ms) and then marks for >= 8.33 ms. A sensor
answers within 15 ms of the command. pyserial's ``break_condition`` sets and clears the
break (TIOCSBRK/TIOCCBRK); ``send_break`` is not used because on Linux it rounds 12 ms up to
a 250 ms break. On a pseudo-terminal both are silent no-ops: a simulator cannot observe the
break, nor the 7E1 framing (a pty carries 8-bit bytes); the driver masks the parity bit.
"""

import contextlib
import os
import termios
import threading
import time
from typing import Any

import serial

from sensors.base import SensorPortError, port_hint

BREAK_S = 0.013
"""Break length: >= 12 ms by the spec, with a margin for timer slack."""
MARKING_S = 0.009
"""Marking after the break: >= 8.33 ms."""
IDLE_BREAK_S = 0.087
"""A line idle for longer than this needs a break before the next command."""
MAX_LINE_BYTES = 256
"""Longest response kept; SDI-12 responses are at most 75 value characters + CRC + CR LF."""
_POLL_S = 0.005


class Bus:
    """An open SDI-12 port: wake (break), send a command, read response lines.

    Every method raises :class:`SensorPortError` (with ``sensor``) when the port fails.
    """

    def __init__(self, url: str, baudrate: int, sensor: str):
        self.url = url
        self.baudrate = baudrate
        self.users = 0
        self.lock = threading.RLock()
        self._last_activity = 0.0
        self._pending = b""
        try:
            self._port: Any = self._open(url, baudrate, serial.SEVENBITS, serial.PARITY_EVEN)
        except termios.error as err:
            if not _is_pty(url):
                raise SensorPortError(
                    sensor,
                    f"cannot set 7E1 on SDI-12 port {url!r} (option port): {err}; "
                    "use an adapter whose UART supports 7 data bits and even parity",
                ) from None
            # A pty is always 8N1 and Linux refuses a change it cannot apply (EINVAL) once
            # the pty already holds its clamped settings: a simulator is on the other end.
            self._port = self._open(url, baudrate, serial.EIGHTBITS, serial.PARITY_NONE)
        except (serial.SerialException, OSError, ValueError) as err:
            hint = port_hint(err, "the SDI-12 adapter")
            raise SensorPortError(
                sensor, f"cannot open SDI-12 port {url!r} (option port): {err}; {hint}"
            ) from err

    @staticmethod
    def _open(url: str, baudrate: int, bytesize: int, parity: str) -> Any:
        return serial.serial_for_url(
            url,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=serial.STOPBITS_ONE,
            timeout=_POLL_S,
            exclusive=True if "://" not in url else None,
        )

    def _failed(self, sensor: str, err: BaseException) -> SensorPortError:
        return SensorPortError(
            sensor,
            f"SDI-12 port {self.url!r} failed: {err}; check the cable and the adapter "
            "(the port is reopened on the next open())",
        )

    def wake(self, sensor: str) -> None:
        """Send a break and the marking after it, if the line was idle for over 87 ms."""
        if time.monotonic() - self._last_activity <= IDLE_BREAK_S:
            return
        try:
            self._port.break_condition = True
            time.sleep(BREAK_S)
            self._port.break_condition = False
        except (serial.SerialException, OSError) as err:
            raise self._failed(sensor, err) from err
        time.sleep(MARKING_S)
        self._last_activity = time.monotonic()

    def send(self, sensor: str, command: bytes, *, discard_input: bool = True) -> None:
        """Drop unread input (a late answer to an earlier try), then write ``command``.

        ``discard_input=False`` keeps it, for a scan that counts late acknowledgements.
        """
        try:
            if discard_input:
                self._port.reset_input_buffer()
                self._pending = b""
            self._port.write(command)
            self._port.flush()
        except (serial.SerialException, OSError) as err:
            raise self._failed(sensor, err) from err
        self._last_activity = time.monotonic()

    def read_line(self, sensor: str, timeout: float) -> bytes | None:
        """The next line (without CR LF, parity bit cleared) within ``timeout`` s, or None.

        Lines longer than MAX_LINE_BYTES are cut to their last MAX_LINE_BYTES bytes, so that
        noise never grows the buffer and a valid answer after it still ends the line.
        """
        deadline = time.monotonic() + timeout
        while True:
            newline = self._pending.find(b"\n")
            if newline >= 0:
                line, self._pending = self._pending[:newline], self._pending[newline + 1 :]
                return line.rstrip(b"\r")
            try:
                chunk = self._port.read(max(1, min(self._port.in_waiting, 4096)))
            except (serial.SerialException, OSError) as err:
                raise self._failed(sensor, err) from err
            if chunk:
                self._last_activity = time.monotonic()
                self._pending = (self._pending + chunk.translate(_STRIP_PARITY))[-MAX_LINE_BYTES:]
                continue
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        # Closing a port that went away: nothing is left to release.
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()


def _is_pty(url: str) -> bool:
    return "://" not in url and os.path.realpath(url).startswith("/dev/pts/")


_STRIP_PARITY = bytes(b & 0x7F for b in range(256))

_buses: dict[str, Bus] = {}
_buses_lock = threading.Lock()


def acquire(url: str, baudrate: int, sensor: str) -> Bus:
    """The bus on ``url``, opened on first use; pair every call with :func:`release`.

    Raises SensorPortError if the port cannot be opened, or if it is already open at
    another baud rate (two [[sensors]] entries on one bus disagree).
    """
    with _buses_lock:
        bus = _buses.get(url)
        if bus is None:
            bus = Bus(url, baudrate, sensor)
            _buses[url] = bus
        elif bus.baudrate != baudrate:
            raise SensorPortError(
                sensor,
                f"SDI-12 port {url!r} is open at {bus.baudrate} baud by another sensor; "
                f"baudrate = {baudrate} must match it",
            )
        bus.users += 1
        return bus


def release(bus: Bus) -> None:
    """Drop one user of ``bus``; the last one closes the port."""
    with _buses_lock:
        bus.users -= 1
        if bus.users <= 0:
            bus.close()
            if _buses.get(bus.url) is bus:
                del _buses[bus.url]


def discard(bus: Bus) -> None:
    """Close ``bus`` for every user after a port failure; the next acquire reopens it."""
    with _buses_lock:
        bus.close()
        if _buses.get(bus.url) is bus:
            del _buses[bus.url]
