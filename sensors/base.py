"""What every sensor driver is: a config model, a driver class, errors.

A driver turns bytes on a serial port into :class:`Sample` objects. It knows nothing of
MQTT, the outbox or the clock quality; the agent's scheduler stamps time, sequence and
clock flag and puts the readings in the outbox.

Lifecycle (driven by the agent's scheduler, one thread per serial port):

- ``Driver(config)`` checks nothing that needs the device; config is already validated.
- ``open()`` opens the port. Raises :class:`SensorPortError` when it cannot.
- ``read()`` returns the samples available now:
  - a polling driver (``streaming = False``) asks the device once and returns its
    answer, or raises :class:`SensorTimeoutError` / :class:`SensorProtocolError` /
    :class:`SensorReportedError`;
  - a streaming driver (``streaming = True``) returns whatever valid frames arrived
    within ``config.timeout`` seconds (possibly none).
  Bad frames in a stream are not raised: they are counted in ``rejected`` by reason and
  logged, and reading goes on.
- ``close()`` releases the port; safe to call twice.
"""

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, Field, field_validator

from contract.ids import Ident
from contract.settings import Strict
from contract.wire import check_value_name
from sensors.calibration import Calibration
from sensors.plausibility import Range, check_range_table

log = logging.getLogger(__name__)

REJECT_LOG_INTERVAL_S = 60.0
"""Seconds between two log lines for the same rejection reason of one sensor."""


class SensorError(Exception):
    """Base of every driver error. ``sensor`` is the sensor id from the config."""

    def __init__(self, sensor: str, message: str):
        self.sensor = sensor
        super().__init__(f"sensor {sensor}: {message}")


class SensorPortError(SensorError):
    """The serial port cannot be opened or went away (unplugged USB adapter)."""


def port_hint(err: BaseException, hardware: str = "the adapter") -> str:
    """What an installer should do about a serial port error (``hardware``: what else to
    check when the error says nothing specific, e.g. "the RS-485 adapter")."""
    errno = getattr(err, "errno", None)
    text = str(err).lower()
    if errno == 2 or "no such file" in text:
        return "check the cable and that the path exists (ls -l /dev/serial/by-id/)"
    if errno == 13 or "permission denied" in text:
        return "the user running farmtel needs access: add it to the 'dialout' group"
    if errno == 16 or "exclusively lock" in text or "busy" in text:
        return (
            "another program (or another [[sensors]] entry) uses this port; stop it "
            "(e.g. ModemManager, a serial monitor)"
        )
    return f"check the cable, {hardware} and the port setting"


class SensorTimeoutError(SensorError):
    """The device said nothing within the timeout."""


class SensorProtocolError(SensorError):
    """The bytes were malformed: bad CRC or checksum, short frame, unparsable value."""


class SensorReportedError(SensorError):
    """The device answered with an error of its own (e.g. a Modbus exception)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """Values read from a device at one instant.

    ``values`` maps names with units (``temp_c``) to finite floats. ``ts`` is the
    wall-clock time in ns when the bytes were read (streaming drivers: see the
    ``read_window`` key), or None to let the scheduler stamp it.
    """

    values: dict[str, float]
    ts: int | None = None


class SensorConfig(Strict):
    """Keys every sensor has, whatever its driver."""

    id: Ident
    """Sensor id, unique on the gateway."""
    field: Ident
    """The plantation field (plot) the sensor stands in."""
    driver: str
    """Driver name, as listed by ``farmtel sensors drivers``."""
    kind: Ident = "env"
    """What the sensor measures; becomes the InfluxDB measurement (soil, weather, env ...)."""
    port: str
    """pyserial URL: /dev/ttyUSB0, /dev/serial/by-id/..., socket://host:port, rfc2217://..."""
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 9600
    """Serial speed in baud."""
    interval: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    """Seconds between polls (polling drivers); streaming drivers read continuously."""
    timeout: Annotated[float, Field(gt=0, le=120)] = 2.0
    """Seconds to wait for an answer or a line before giving up on one read."""
    silence_after: Annotated[float, Field(gt=0)] | None = None
    """Seconds without a valid reading before a sensor_silent gap is declared
    (default: 3 x interval, at least 30 s)."""

    calibration: Calibration | None = None
    """Versioned correction of the values: { version, date, by, values = { name = { offset,
    scale } or { two_point = [[raw1, ref1], [raw2, ref2]] } } }. The version travels with
    each reading as ``cal``; see sensors/calibration.py."""
    ranges: dict[str, Range] = Field(default_factory=dict)
    """Plausible range per value name, [low, high] inclusive, checked after calibration;
    overrides the defaults of sensors/plausibility.py, e.g. { temp_c = [-50, 70] }. A sample
    with a value outside is rejected (out_of_range) and never stored."""

    @field_validator("ranges")
    @classmethod
    def _check_ranges(cls, ranges: dict[str, Range]) -> dict[str, Range]:
        for name in ranges:
            check_value_name(name)
        check_range_table(ranges)
        return ranges

    def silence_limit(self) -> float:
        return (
            self.silence_after if self.silence_after is not None else max(3 * self.interval, 30.0)
        )


class StreamingConfig(SensorConfig):
    """Keys of every streaming driver (one that reads what a device prints on its own)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    read_window: Annotated[float, Field(ge=0, le=1)] = 0.2
    """Seconds a busy port is left alone after a read, so that the lines arriving meanwhile
    are read together in one wake-up (less CPU per line). A line that comes alone is read,
    and time-stamped, on arrival; one that comes within the window after the previous read
    is read, and time-stamped, up to this much later. 0 reads each line as it arrives."""


class Driver:
    """Base class of drivers; see the module docstring for the lifecycle."""

    name: ClassVar[str]
    streaming: ClassVar[bool] = False
    config: SensorConfig

    def __init__(self, config: SensorConfig):
        self.config = config
        self.rejected: Counter[str] = Counter()
        self._log_after: dict[str, float] = {}
        self._not_logged: Counter[str] = Counter()

    def reject(self, reason: str, detail: Any = "") -> None:
        """Count a frame that was not used; log it, at most once per reason a minute.

        A noisy line can reject thousands of frames a second: the counts are exact, the
        log says how many went unlogged since the last line for that reason.
        """
        self.rejected[reason] += 1
        now = time.monotonic()
        if now < self._log_after.get(reason, 0.0):
            self._not_logged[reason] += 1
            return
        self._log_after[reason] = now + REJECT_LOG_INTERVAL_S
        log.warning(
            "rejected sensor=%s reason=%s total=%d not_logged=%d detail=%.200r",
            self.config.id,
            reason,
            self.rejected[reason],
            self._not_logged.pop(reason, 0),
            detail,
        )

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> list[Sample]:
        raise NotImplementedError

    def read_waiting(self) -> list[Sample]:
        """Samples from what the port already holds, without waiting (a streaming driver's
        last read before the agent stops: lines held back by ``read_window`` are not lost).
        Polled drivers hold nothing between reads: []."""
        return []

    def close(self) -> None:
        raise NotImplementedError

    @classmethod
    def scan(
        cls, port: str, options: Mapping[str, str], progress: Callable[[str], None]
    ) -> Iterator[dict[str, str]]:
        """Find the devices on the bus at ``port`` (``farmtel sensors scan``).

        ``options`` are the ``--option key=value`` pairs as typed (the driver validates them
        and raises contract.settings.ConfigError); ``progress`` takes one-line progress
        messages (printed on stderr). Yields one dict per device found, at least
        ``{"address": ...}`` plus whatever the device tells about itself. Raises
        :class:`ScanNotSupported` when the driver cannot scan (the default),
        :class:`SensorPortError` when the port cannot be opened.
        """
        raise ScanNotSupported(f"driver {cls.name!r} cannot scan a bus")


class ScanNotSupported(Exception):
    """The driver has no way to find devices on a bus (e.g. a streaming device)."""


@dataclass
class DriverInfo:
    """What the registry knows of a driver without importing its code."""

    name: str
    package: str
    summary: str
    extra: dict[str, str] = field(default_factory=dict)


def now_ns() -> int:
    return time.time_ns()
