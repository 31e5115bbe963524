"""The ``sdi12`` driver: one measurement per read from one sensor on an SDI-12 bus.

A read is one SDI-12 measurement:

1. ``aM!`` (``aMC!`` with ``use_crc``; ``aC!``/``aCC!`` with ``concurrent``) -> ``atttn``:
   the data is ready in ttt seconds and holds n values;
2. for aM, wait up to ttt seconds for the service request ``a`` CR LF (the sensor says its
   data is ready early); for aC, wait ttt seconds;
3. ``aD0!``, ``aD1!`` ... until n values are collected: a sensor may spread them over
   several D responses. With a CRC, each D response carries its own.

Every command is sent after a break when the line was idle (see :mod:`sensors.sdi12.bus`)
and tried up to ``retries`` times while no valid answer comes within ``response_timeout``.
Lines that are not an answer of this sensor (noise, another address) are counted in
``rejected`` and skipped; a damaged answer of this sensor (bad CRC, malformed) is counted
and the command is sent again at once. What a read raises:

- :class:`SensorTimeoutError`: no valid answer to a command after every try;
- :class:`SensorProtocolError`: answers came but none valid (bad CRC on every try,
  a value count other than the profile's, values missing from the D responses);
- :class:`SensorPortError`: the port cannot be opened or failed.
"""

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar, TypeVar

from sensors import base
from sensors.base import (
    SensorConfig,
    SensorPortError,
    SensorProtocolError,
    SensorTimeoutError,
)
from sensors.sdi12 import bus as sdi12_bus
from sensors.sdi12.config import Config
from sensors.sdi12.frames import (
    ADDRESSES,
    FrameError,
    Identity,
    Measurement,
    parse_data,
    parse_identity,
    parse_measure,
)

log = logging.getLogger(__name__)

SERVICE_REQUEST_GRACE_S = 0.5
"""Extra wait past ttt for the service request before asking for the data anyway."""
IDENTIFY_TIMEOUT_S = 0.5
"""Shortest wait for the aI! answer of a sensor found by a scan."""
DATA_COMMANDS = 10
"""aD0! .. aD9!"""

T = TypeVar("T")


class _NoAnswer(Exception):
    """No line at all came within the response timeout."""


class Driver(base.Driver):
    """Polls one SDI-12 sensor; see the module docstring for the exchange and the errors."""

    name: ClassVar[str] = "sdi12"
    streaming: ClassVar[bool] = False
    config: Config

    def __init__(self, config: SensorConfig):
        if not isinstance(config, Config):
            raise TypeError(f"sdi12 driver needs a sensors.sdi12.config.Config, got {type(config)}")
        super().__init__(config)
        self.config = config
        self.profile = config.profile_spec()
        self._bus: sdi12_bus.Bus | None = None
        self._address = config.address

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or join) the bus on ``config.port``; raise SensorPortError if it cannot."""
        self.close()
        self._bus = sdi12_bus.acquire(self.config.port, self.config.baudrate, self.config.id)

    def close(self) -> None:
        """Leave the bus (the last sensor on it closes the port). Safe to call twice."""
        bus, self._bus = self._bus, None
        if bus is not None:
            sdi12_bus.release(bus)

    def read(self) -> list[base.Sample]:
        """Take one measurement; return one sample, or raise (see the module docstring)."""
        bus = self._bus
        if bus is None:
            raise SensorPortError(self.config.id, "read() before open(); the port is not open")
        try:
            with bus.lock:
                raw = self._measure(bus)
        except SensorPortError:
            sdi12_bus.discard(bus)
            self._bus = None
            raise
        return [base.Sample(values=self.profile.convert(raw), ts=time.time_ns())]

    # -- the exchange ---------------------------------------------------------------------

    def _measure(self, bus: sdi12_bus.Bus) -> list[float]:
        address, crc = self._address, "C" if self.config.use_crc else ""
        verb = "C" if self.config.concurrent else "M"
        command = f"{address}{verb}{crc}!".encode("ascii")
        announced = self._ask(
            bus, command, lambda line: parse_measure(line, address, self.config.concurrent)
        )
        expected = len(self.profile.raw)
        if announced.count != expected:
            raise SensorProtocolError(
                self.config.id,
                f"{command.decode()} announced {announced.count} values but profile "
                f"{self.config.profile!r} has {expected}; check the address and the profile",
            )
        if announced.seconds:
            self._wait_ready(bus, announced)
        values: list[float] = []
        for index in range(DATA_COMMANDS):
            data = f"{address}D{index}!".encode("ascii")
            got = self._ask(bus, data, lambda line: parse_data(line, address, bool(crc)))
            if not got:
                break
            values += got
            if len(values) >= expected:
                break
        if len(values) != expected:
            raise SensorProtocolError(
                self.config.id,
                f"the D responses held {len(values)} values, {expected} were announced",
            )
        return values

    def _wait_ready(self, bus: sdi12_bus.Bus, announced: Measurement) -> None:
        """Wait for the service request (aM) or the announced time (aC)."""
        if self.config.concurrent:
            time.sleep(announced.seconds)
            return
        deadline = time.monotonic() + announced.seconds + SERVICE_REQUEST_GRACE_S
        expected = self._address.encode("ascii")
        while (left := deadline - time.monotonic()) > 0:
            line = bus.read_line(self.config.id, left)
            if line == expected:
                return
            if line is not None:
                self.reject("garbage", line)
        log.info(
            "no service request sensor=%s after_s=%d; asking for the data anyway",
            self.config.id,
            announced.seconds,
        )

    def _ask(self, bus: sdi12_bus.Bus, command: bytes, parse: Callable[[bytes], T]) -> T:
        """Send ``command`` up to ``retries`` times until ``parse`` accepts an answer line."""
        failures: list[str] = []
        own = self._address.encode("ascii")
        for _ in range(self.config.retries):
            bus.wake(self.config.id)
            bus.send(self.config.id, command)
            deadline = time.monotonic() + self.config.response_timeout
            while (left := deadline - time.monotonic()) > 0:
                line = bus.read_line(self.config.id, left)
                if line is None:
                    break
                if line == command:
                    continue  # an adapter that echoes what it sends
                try:
                    return parse(line)
                except FrameError as err:
                    self.reject(err.reason, line)
                    failures.append(f"{err.reason}: {err}")
                    if line[:1] == own:
                        break  # our sensor's answer, damaged: ask again now
        if not failures:
            raise SensorTimeoutError(
                self.config.id,
                f"no answer to {command.decode()} from address {self._address!r} on "
                f"{self.config.port} after {self.config.retries} tries of "
                f"{self.config.response_timeout} s; check the address (farmtel sensors scan), "
                "the wiring and the sensor's power",
            )
        raise SensorProtocolError(
            self.config.id,
            f"no valid answer to {command.decode()} after {self.config.retries} tries; "
            f"last: {failures[-1]}",
        )

    # -- finding sensors ------------------------------------------------------------------

    def identify(self) -> Identity:
        """Ask ``aI!``; raise like :meth:`read`."""
        bus = self._bus
        if bus is None:
            raise SensorPortError(self.config.id, "identify() before open(); the port is not open")
        address = self._address
        with bus.lock:
            return self._ask(
                bus, f"{address}I!".encode("ascii"), lambda line: parse_identity(line, address)
            )

    @classmethod
    def scan(
        cls, port: str, options: Mapping[str, str], progress: Callable[[str], None]
    ) -> Iterator[dict[str, str]]:
        """Query every address (0-9, A-Z, a-z) on ``port`` with ``a!``, then ``aI!``.

        The sweep sends ``a!`` once per address and waits ``response_timeout``; an
        acknowledgement that comes late (in the next address's window) still counts, so a
        slow adapter loses no sensor. Each sensor found is then identified with ``aI!``
        (``retries`` tries of at least IDENTIFY_TIMEOUT_S). Yields one dict per sensor, in
        address order: address, sdi_version, vendor, model, version, serial (or address and
        error when aI! failed). ``options`` are the ``--option key=value`` pairs as typed
        (baudrate, response_timeout, retries). Raises ConfigError for a bad option,
        SensorPortError for the port.
        """
        from sensors.commands import build_config  # the CLI's option parsing, not at import

        config = build_config(cls.name, port, options, defaults={"id": "scan", "field": "scan"})
        if not isinstance(config, Config):
            raise TypeError(f"sdi12 scan got a {type(config)} config")
        bus = sdi12_bus.acquire(config.port, config.baudrate, config.id)
        try:
            with bus.lock:
                answered = cls._sweep(bus, config, progress)
            for address in sorted(answered, key=ADDRESSES.index):
                # Only sensors that answered are identified: a generous window costs little.
                window = max(config.response_timeout, IDENTIFY_TIMEOUT_S)
                probe = cls(
                    config.model_copy(update={"address": address, "response_timeout": window})
                )
                probe.open()
                try:
                    found = probe.identify().as_dict()
                except (SensorTimeoutError, SensorProtocolError) as err:
                    found = {"address": address, "error": str(err)}
                finally:
                    probe.close()
                progress(f"address {address}: {found}")
                yield found
        finally:
            sdi12_bus.release(bus)

    @staticmethod
    def _sweep(bus: sdi12_bus.Bus, config: Config, progress: Callable[[str], None]) -> set[str]:
        """The addresses whose ``a!`` was acknowledged, late answers included."""
        answered: set[str] = set()
        for address in ADDRESSES:
            bus.wake(config.id)
            bus.send(config.id, f"{address}!".encode("ascii"), discard_input=False)
            deadline = time.monotonic() + config.response_timeout
            while (left := deadline - time.monotonic()) > 0:
                line = bus.read_line(config.id, left)
                if line is None:
                    break
                text = line.decode("ascii", "replace")
                if len(text) == 1 and text in ADDRESSES:
                    answered.add(text)
                    if text == address:
                        break
            progress(f"address {address}: {'answered' if address in answered else 'no answer'}")
        return answered
