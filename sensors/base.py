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
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from pydantic import Field

from contract.ids import Ident
from contract.settings import Strict

log = logging.getLogger(__name__)


class SensorError(Exception):
    """Base of every driver error. ``sensor`` is the sensor id from the config."""

    def __init__(self, sensor: str, message: str):
        self.sensor = sensor
        super().__init__(f"sensor {sensor}: {message}")


class SensorPortError(SensorError):
    """The serial port cannot be opened or went away (unplugged USB adapter)."""


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
    wall-clock time in ns when the bytes arrived, or None to let the scheduler stamp it.
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

    def silence_limit(self) -> float:
        return (
            self.silence_after if self.silence_after is not None else max(3 * self.interval, 30.0)
        )


class Driver:
    """Base class of drivers; see the module docstring for the lifecycle."""

    name: ClassVar[str]
    streaming: ClassVar[bool] = False
    config: SensorConfig

    def __init__(self, config: SensorConfig):
        self.config = config
        self.rejected: Counter[str] = Counter()

    def reject(self, reason: str, detail: Any = "") -> None:
        """Count and log a frame that was not used."""
        self.rejected[reason] += 1
        log.warning("rejected sensor=%s reason=%s detail=%.200r", self.config.id, reason, detail)

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> list[Sample]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


@dataclass
class DriverInfo:
    """What the registry knows of a driver without importing its code."""

    name: str
    package: str
    summary: str
    extra: dict[str, str] = field(default_factory=dict)


def now_ns() -> int:
    return time.time_ns()
