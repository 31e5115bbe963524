"""Reads every sensor on its schedule, one thread per serial port.

Sensors on one port (an RS-485 or SDI-12 bus) share that port's thread, so reads on a bus
are serialized. A failing sensor backs off on its own and never holds up another port.
Each valid sample becomes a :class:`~agent.outbox.NewReading` handed to ``sink``; the
scheduler stamps the time (if the driver did not), and the clock quality. A sensor that
yields nothing valid for ``silence_limit()`` seconds produces a gap record.
"""

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.clock import ClockWatch
from agent.outbox import NewReading
from contract.wire import Gap
from sensors.base import (
    Driver,
    Sample,
    SensorConfig,
    SensorError,
    SensorPortError,
    SensorTimeoutError,
)
from sensors.plausibility import Range, range_of
from sensors.sample_checks import OUT_OF_RANGE, CheckedValues, check_sample

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0


@dataclass
class SensorHealth:
    """What the gateway status shows about one sensor."""

    state: str = "starting"
    """starting | ok | failing | silent"""
    last_ok_ns: int | None = None
    last_error: str = ""
    consecutive_failures: int = 0
    readings: int = 0
    errors: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    port_open: bool = False
    """The driver holds its port open (the device may still be silent)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "last_ok_ns": self.last_ok_ns,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "readings": self.readings,
            "errors": self.errors,
            "rejected": dict(self.rejected),
            "port_open": self.port_open,
        }


@dataclass
class _Slot:
    config: SensorConfig
    driver: Driver
    health: SensorHealth
    next_due: float = 0.0
    is_open: bool = False
    backoff: float = 0.0
    silent_since_ns: int = 0
    """Start of the current stretch without valid data (the last valid reading, or start-up)."""
    gap_declared_to_ns: int = 0
    last_ts: int = 0
    ranges: dict[str, Range | None] = field(default_factory=dict)
    """range_of() per value name seen, for the shortcut in :func:`_plausible`."""


def _plausible(
    values: dict[str, float], seen: dict[str, Range | None], overrides: Mapping[str, Range]
) -> dict[str, float] | None:
    """A copy of uncalibrated ``values`` if all are finite and in range, else None.

    The common case of :func:`sensors.sample_checks.check_sample` without its objects: the
    ranges are those of :func:`sensors.plausibility.range_of`, looked up once per name. None
    means "ask check_sample", which then decides and says why.
    """
    for name, value in values.items():
        if name in seen:
            limits = seen[name]
        else:
            limits = seen[name] = range_of(name, overrides)
        # value - value is 0.0 only for a finite float.
        if value - value != 0.0 or (limits is not None and not limits[0] <= value <= limits[1]):
            return None
    return dict(values)


ReadingSink = Callable[[Sequence[NewReading]], None]
GapSink = Callable[[Gap], None]


class PortWorker(threading.Thread):
    """Owns one serial port and reads every sensor on it in turn."""

    def __init__(
        self,
        port: str,
        drivers: Sequence[Driver],
        sink: ReadingSink,
        gap_sink: GapSink,
        clock: ClockWatch,
        stop: threading.Event,
        health: dict[str, SensorHealth],
    ):
        super().__init__(name=f"port:{port}", daemon=True)
        now_ns = time.time_ns()
        self.port = port
        self.slots = []
        for d in drivers:
            h = health.setdefault(d.config.id, SensorHealth())
            self.slots.append(_Slot(d.config, d, h, silent_since_ns=now_ns))
        self.sink = sink
        self.gap_sink = gap_sink
        self.clock = clock
        self.stop_event = stop

    def run(self) -> None:
        stop = self.stop_event
        try:
            while not stop.is_set():
                now = time.monotonic()
                serviced = False
                for slot in self.slots:
                    if slot.next_due <= now:  # only the serviced slot's next_due changes
                        if serviced and stop.is_set():
                            break
                        self._service(slot)
                        serviced = True
                if not serviced:
                    wait = min(s.next_due for s in self.slots) - time.monotonic()
                    stop.wait(max(0.0, min(wait, 1.0)))
        finally:
            for slot in self.slots:
                if slot.is_open:
                    self._read_last(slot)
                    self._close(slot)

    def _read_last(self, slot: _Slot) -> None:
        """Take the lines a streaming port already holds before it is closed at a stop: a
        busy port is read once per ``read_window``, so up to that much would be lost."""
        if not slot.driver.streaming:
            return
        try:
            for _ in range(64):  # 64 reads of up to 64 KiB: more than any tty holds
                samples = slot.driver.read_waiting()
                if not samples:
                    return
                self._accept(slot, samples)
        except Exception as err:  # the port went away meanwhile: what was read is kept
            log.warning("last read before stopping failed sensor=%s: %s", slot.config.id, err)

    def _close(self, slot: _Slot) -> None:
        try:
            slot.driver.close()
        except Exception:  # a driver that cannot even close must not stop the others
            log.exception("close failed sensor=%s", slot.config.id)
        slot.is_open = False
        slot.health.port_open = False

    def _service(self, slot: _Slot) -> None:
        cfg, health = slot.config, slot.health
        started = time.monotonic()
        try:
            if not slot.is_open:
                slot.driver.open()
                slot.is_open = True
                health.port_open = True
                log.info("sensor port open sensor=%s port=%s", cfg.id, cfg.port)
            samples = slot.driver.read()
        except SensorError as err:
            self._failed(slot, err)
            return
        except Exception as err:  # a driver bug: report it like a failure, keep the agent up
            log.exception("driver crashed sensor=%s", cfg.id)
            self._failed(slot, SensorError(cfg.id, f"driver error: {err!r}"))
            return
        if samples:
            self._accept(slot, samples)  # updates health.rejected
        else:
            health.rejected = dict(slot.driver.rejected)
            self._check_silence(slot, "no valid data")
        slot.backoff = 0.0
        if slot.driver.streaming:
            slot.next_due = time.monotonic()
        else:
            slot.next_due = started + cfg.interval

    def _accept(self, slot: _Slot, samples: Sequence[Sample]) -> None:
        cfg, health = slot.config, slot.health
        sensor, field_, kind = cfg.id, cfg.field, cfg.kind
        quality_of = self.clock.quality
        last_ts = slot.last_ts
        out = []
        ranges = slot.ranges if cfg.calibration is None else None
        for sample in samples:
            # Calibration, then plausibility: an implausible sample is counted, never stored.
            values: dict[str, float] | None = None
            cal = None
            if ranges is not None:
                values = _plausible(sample.values, ranges, cfg.ranges)
            if values is None:
                checked = check_sample(cfg, sample.values)
                if not isinstance(checked, CheckedValues):
                    slot.driver.reject(OUT_OF_RANGE, f"{checked} (sensor {sensor})")
                    continue
                values, cal = checked.values, checked.cal
            ts = sample.ts if sample.ts is not None else time.time_ns()
            quality = quality_of(ts)
            # Two readings of one sensor must never share a timestamp: InfluxDB keys a point
            # by series + time, so the second would overwrite the first.
            if ts <= last_ts:
                ts = last_ts + 1
            last_ts = ts
            out.append(NewReading(sensor, field_, kind, ts, quality, values, cal))
        slot.last_ts = last_ts
        health.rejected = dict(slot.driver.rejected)
        if not out:
            self._check_silence(slot, "every sample was out of range")
            return
        self.sink(out)
        if slot.gap_declared_to_ns:
            self._close_silence(slot, out[0].ts)
        health.readings += len(out)
        health.last_ok_ns = out[-1].ts
        health.state = "ok"
        health.consecutive_failures = 0
        slot.silent_since_ns = out[-1].ts

    def _failed(self, slot: _Slot, err: SensorError) -> None:
        cfg, health = slot.config, slot.health
        health.errors += 1
        health.consecutive_failures += 1
        health.last_error = str(err)
        health.state = "failing"
        if isinstance(err, SensorPortError) and slot.is_open:
            self._close(slot)
        slot.backoff = min(max(1.0, slot.backoff * 2), max(MAX_BACKOFF_S, cfg.interval))
        log.warning("sensor failed sensor=%s error=%s retry_in_s=%.1f", cfg.id, err, slot.backoff)
        reason = "timeout" if isinstance(err, SensorTimeoutError) else "error"
        self._check_silence(slot, f"{reason}: {err}")
        slot.next_due = time.monotonic() + (
            slot.backoff if slot.driver.streaming else max(slot.backoff, min(cfg.interval, 1.0))
        )

    def _check_silence(self, slot: _Slot, why: str) -> None:
        """Declare a gap for each silence_limit() stretch without valid data."""
        now_ns = time.time_ns()
        limit_ns = int(slot.config.silence_limit() * 1e9)
        start = max(slot.silent_since_ns, slot.gap_declared_to_ns)
        if now_ns - start < limit_ns:
            return
        if slot.health.state == "ok":
            slot.health.state = "silent"
        reason = "sensor_error" if slot.health.consecutive_failures else "sensor_silent"
        self.gap_sink(
            Gap(sensor=slot.config.id, start=start, end=now_ns, reason=reason, detail=why[:500])
        )
        slot.gap_declared_to_ns = now_ns

    def _close_silence(self, slot: _Slot, first_ts: int) -> None:
        """A sensor is back: declare the stretch since the last declared gap, if it is long."""
        start = max(slot.silent_since_ns, slot.gap_declared_to_ns)
        if slot.gap_declared_to_ns and first_ts - start > 0 and start == slot.gap_declared_to_ns:
            reason = "sensor_error" if slot.health.consecutive_failures else "sensor_silent"
            self.gap_sink(
                Gap(
                    sensor=slot.config.id,
                    start=start,
                    end=first_ts,
                    reason=reason,
                    detail="until the sensor answered again",
                )
            )
        slot.gap_declared_to_ns = 0


def group_by_port(drivers: Sequence[Driver]) -> dict[str, list[Driver]]:
    ports: dict[str, list[Driver]] = {}
    for d in drivers:
        ports.setdefault(d.config.port, []).append(d)
    return ports
