"""The ``modbus_soil`` driver: a Modbus RTU master reading one soil probe per instance.

Each ``read()`` sends one read request (function 03 or 04) to ``address`` and waits up to
``timeout`` seconds for the answer. What goes wrong is raised as what it is:

- an exception answer (function | 0x80) -> :class:`SensorReportedError` with the code and
  its meaning;
- answer-shaped bytes with a bad CRC, or bytes that never make a whole answer (short
  frame, noise) -> :class:`SensorProtocolError`;
- no byte at all -> :class:`SensorTimeoutError`;
- the port cannot be opened or fails (unplugged adapter) -> :class:`SensorPortError`.

Several probes share one RS-485 bus: every driver instance on one port URL uses one shared
pyserial port (opened once, reference-counted) and one lock, so a request and its answer
are never interleaved with another probe's, whichever thread asks. Each transaction applies
its own serial settings, so probes at different baud rates may share a bus.

Why our own master and not pymodbus's client: pymodbus 3.16's RTU framer drops a frame
with a bad CRC with only a debug log line and the client then reports "no response", so a
CRC error and a silent probe look the same; the issue needs them told apart. A read request
and its answer are simple enough to frame by hand (sensors/modbus_soil/rtu.py); the tests
check our CRC and frames against pymodbus's own.
"""

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import serial

from contract.settings import ConfigError
from sensors import base
from sensors.base import (
    Sample,
    SensorConfig,
    SensorPortError,
    SensorProtocolError,
    SensorReportedError,
    SensorTimeoutError,
    port_hint,
)
from sensors.modbus_soil import rtu
from sensors.modbus_soil.config import Config

log = logging.getLogger(__name__)

PORT_POLL_S = 0.02
"""pyserial's read timeout: how often a transaction looks at its deadline while waiting."""
FRAME_GAP_S = 0.1
"""After a whole answer-shaped frame with a bad CRC, this long a silence ends the wait
(Modbus says 3.5 characters, 29 ms at 1200 baud; USB adapters deliver in bursts, so we
allow more). Anything else (noise, an adapter's echo of our request, half an answer) waits
for the full timeout: a slow probe may still answer after it."""
MAX_ANSWER_BUFFER = 4096
"""Bytes kept while looking for an answer; older noise is dropped."""
SCAN_TIMEOUT_S = 0.15
"""Default seconds to wait for each slave id during a scan."""

RS485 = "the RS-485 adapter"
"""What else to check when a port error says nothing specific (:func:`port_hint`)."""
_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


@dataclass
class SharedPort:
    """One serial port used by every probe on its bus; ``lock`` serializes transactions."""

    url: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    serial_port: serial.SerialBase | None = None

    def ensure_open(self, sensor: str) -> serial.SerialBase:
        """The open pyserial port (opened now if needed); call with ``lock`` held."""
        if self.serial_port is None:
            try:
                self.serial_port = serial.serial_for_url(
                    self.url,
                    timeout=PORT_POLL_S,
                    exclusive=True if "://" not in self.url else None,
                )
            except (serial.SerialException, OSError, ValueError) as err:
                hint = port_hint(err, RS485)
                raise SensorPortError(
                    sensor, f"cannot open port {self.url!r} (option port): {err}; {hint}"
                ) from err
        return self.serial_port

    def drop(self) -> None:
        """Close the pyserial port (after an error or when the last user leaves)."""
        port, self.serial_port = self.serial_port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as err:
                log.info("close failed port=%s error=%s", self.url, err)


_PORTS: dict[str, SharedPort] = {}
_PORTS_LOCK = threading.Lock()


def _acquire(url: str) -> SharedPort:
    with _PORTS_LOCK:
        shared = _PORTS.setdefault(url, SharedPort(url))
        shared.users += 1
        return shared


def _release(shared: SharedPort) -> None:
    with _PORTS_LOCK:
        shared.users -= 1
        if shared.users > 0:
            return
        if _PORTS.get(shared.url) is shared:
            del _PORTS[shared.url]
    with shared.lock:
        shared.drop()


def open_port_count() -> int:
    """How many shared ports are open now (for tests: every close() released its port)."""
    with _PORTS_LOCK:
        return sum(1 for p in _PORTS.values() if p.serial_port is not None)


class Driver(base.Driver):
    """Polls one probe; see the module docstring for errors and bus sharing."""

    name: ClassVar[str] = "modbus_soil"
    streaming: ClassVar[bool] = False
    config: Config

    def __init__(self, config: SensorConfig):
        if not isinstance(config, Config):
            raise TypeError(
                f"modbus_soil driver needs a sensors.modbus_soil.config.Config, got {type(config)}"
            )
        super().__init__(config)
        self.profile = config.register_map()
        self.request = rtu.read_request(
            config.address, self.profile.function, self.profile.start, self.profile.count
        )
        self._shared: SharedPort | None = None

    def open(self) -> None:
        """Join the shared port of ``config.port`` (opening it if this is the first probe).

        Raises SensorPortError when the port cannot be opened.
        """
        if self._shared is not None:
            return
        shared = _acquire(self.config.port)
        try:
            with shared.lock:
                shared.ensure_open(self.config.id)
        except SensorPortError:
            _release(shared)
            raise
        self._shared = shared

    def close(self) -> None:
        """Leave the shared port (closed when the last probe leaves). Safe to call twice."""
        shared, self._shared = self._shared, None
        if shared is not None:
            _release(shared)

    def read(self) -> list[Sample]:
        """Ask the probe once; one sample of the profile's values, or a SensorError."""
        words = self.transaction()
        arrived = base.now_ns()
        values = self.profile.decode(words)
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise SensorProtocolError(
                self.config.id,
                f"slave {self.config.address} sent values that are not numbers: {bad}; "
                "check the register types and word_order of the profile",
            )
        return [Sample(values=values, ts=arrived)]

    def transaction(self) -> list[int]:
        """Send the request and return the registers of the answer; see module docstring."""
        if self._shared is None:
            raise SensorPortError(self.config.id, "the port is not open; call open() first")
        shared = self._shared
        with shared.lock:
            port = shared.ensure_open(self.config.id)
            try:
                self._configure(port)
                port.reset_input_buffer()
                port.write(self.request)
                port.flush()
                buffer = self._collect(port)
            except (serial.SerialException, OSError) as err:
                shared.drop()
                raise SensorPortError(
                    self.config.id,
                    f"port {self.config.port!r} failed: {err}; {port_hint(err, RS485)}",
                ) from err
        return self._interpret(buffer)

    def _configure(self, port: serial.SerialBase) -> None:
        cfg = self.config
        # pyserial reconfigures the tty only when a setting changes.
        port.baudrate = cfg.baudrate
        port.parity = _PARITY[cfg.parity]
        port.bytesize = cfg.bytesize
        port.stopbits = cfg.stopbits
        port.timeout = PORT_POLL_S

    def _collect(self, port: serial.SerialBase) -> bytearray:
        """Bytes until a valid answer, an idle gap after some bytes, or the timeout."""
        cfg, profile = self.config, self.profile
        buffer = bytearray()
        deadline = time.monotonic() + cfg.timeout
        last_byte = 0.0
        corrupt = False
        while True:
            chunk = port.read(max(1, port.in_waiting))
            now = time.monotonic()
            if chunk:
                buffer += chunk
                last_byte = now
                answer = rtu.find_answer(buffer, cfg.address, profile.function, profile.count)
                if not isinstance(answer, rtu.Incomplete):
                    return buffer
                corrupt = answer.bad_crc > 0
                if len(buffer) > MAX_ANSWER_BUFFER:
                    del buffer[: len(buffer) - MAX_ANSWER_BUFFER]
            elif corrupt and now - last_byte >= FRAME_GAP_S:
                return buffer
            if now >= deadline:
                return buffer

    def _interpret(self, buffer: bytearray) -> list[int]:
        cfg, profile = self.config, self.profile
        answer = rtu.find_answer(buffer, cfg.address, profile.function, profile.count)
        if isinstance(answer, rtu.Registers):
            return answer.words
        if isinstance(answer, rtu.ExceptionReply):
            raise SensorReportedError(
                cfg.id,
                f"slave {cfg.address} answered function {profile.function} with Modbus "
                f"exception {answer.code}: {answer.meaning}",
            )
        if not buffer or bytes(buffer) == self.request:  # nothing, or our own echo only
            raise SensorTimeoutError(
                cfg.id,
                f"slave {cfg.address} on {cfg.port!r} did not answer within {cfg.timeout} s; "
                f"check the slave id (option address), baudrate ({cfg.baudrate}), parity "
                "and the A/B wiring",
            )
        shown = bytes(buffer[:64]).hex(" ")
        if answer.bad_crc:
            raise SensorProtocolError(
                cfg.id,
                f"slave {cfg.address}: CRC error in the answer ({len(buffer)} bytes: {shown}); "
                "check termination and wiring of the RS-485 bus",
            )
        raise SensorProtocolError(
            cfg.id,
            f"slave {cfg.address}: short or malformed frame ({len(buffer)} bytes, expected "
            f"{rtu.response_bytes(profile.count)}: {shown}); check the profile and baudrate",
        )

    @classmethod
    def scan(
        cls, port: str, options: Mapping[str, str], progress: Callable[[str], None]
    ) -> Iterator[dict[str, str]]:
        """Probe slave ids (``addresses=1-247`` by default) with the profile's read request.

        Every id that answers anything is yielded: ``{"address", "profile", "answer"}`` where
        answer is ``ok`` (plus the values), ``exception <code>: <meaning>`` (a device is
        there, but the profile does not fit it) or ``garbled: ...``. Silent ids are skipped.
        Options are those of ``farmtel sensors read`` plus ``addresses`` (e.g. ``1-16`` or
        ``3,7,10-12``); ``timeout`` is per id (default 0.15 s). Raises ConfigError for a bad
        option and SensorPortError when the port cannot be used.
        """
        from sensors.commands import build_config  # the command layer builds configs

        rest = dict(options)
        if "address" in rest:
            raise ConfigError(
                "command line options",
                [
                    (
                        "address",
                        "is not used by a scan: give the slave ids to probe as "
                        "--option addresses=1-16 (or 3,7,10-12)",
                    )
                ],
            )
        addresses = parse_addresses(rest.pop("addresses", "1-247"))
        rest.setdefault("timeout", str(SCAN_TIMEOUT_S))
        config = build_config(cls.name, port, rest)
        assert isinstance(config, Config)
        name = config.profile or ("custom" if config.custom_profile else "soil_7in1")
        holder = cls(config)  # keeps the shared port open across the probes
        holder.open()
        try:
            for number, address in enumerate(addresses, 1):
                progress(f"slave id {address} ({number}/{len(addresses)})")
                probe = cls(config.model_copy(update={"address": address}))
                probe.open()
                found: dict[str, str] = {"address": str(address), "profile": name}
                try:
                    sample = probe.read()[0]
                except SensorTimeoutError:
                    continue
                except SensorReportedError as err:
                    found["answer"] = str(err).partition("with Modbus ")[2] or str(err)
                except SensorProtocolError as err:
                    found["answer"] = f"garbled: {err}"
                else:
                    found["answer"] = "ok"
                    found.update({k: f"{v:g}" for k, v in sample.values.items()})
                finally:
                    probe.close()
                yield found
        finally:
            holder.close()


def parse_addresses(text: str) -> list[int]:
    """Slave ids from ``1-16`` / ``3,7,10-12``; raise ConfigError naming the option."""
    found: list[int] = []
    try:
        for part in text.split(","):
            low_text, dash, high_text = part.strip().partition("-")
            low = int(low_text)
            high = int(high_text) if dash else low
            if not 1 <= low <= high <= 247:
                raise ValueError(part)
            found.extend(range(low, high + 1))
    except ValueError:
        raise ConfigError(
            "command line options",
            [("addresses", f"{text!r} must be slave ids 1-247 as ranges, e.g. 1-16 or 3,7,10-12")],
        ) from None
    return sorted(set(found))
