"""Threshold alerts on stored readings: ``[[alerts]]`` rules in ingest.toml.

A rule such as "soil moisture under 18 % for 10 minutes" or "frost: air_temp_c < 0" is
checked against every reading the ingest has just stored (so an alert never fires on data
that did not reach InfluxDB). Time is the readings' own time (the gateway clock), not the
ingest's, so a backlog drained after an outage raises the alerts it would have raised live.

An alert *fires* when a (rule, plantation, gateway, sensor) condition has held for at least
``for_s`` seconds of reading time, and *resolves* at the first reading that breaks it. Each
transition is

- published on ``farmtel/v1/{plantation}/{gateway}/alerts`` (QoS 1, not retained),
- logged (``alert state=firing rule=frost ...``),
- recorded as a point of measurement ``farmtel_alert`` through the ingest's own writer.

Limits, said plainly: the state lives in memory, so an ingest restart begins the ``for_s``
count again; and with several ingest processes in one share group each sees only the
batches the broker hands it, so a ``for_s`` condition spread over batches that went to
different processes is noticed later than it could be (each still fires on its own part).
Readings older than the newest one already seen for the same key are ignored by the rule
state (a redelivered or out-of-order batch cannot flap an alert).
"""

from __future__ import annotations

import fnmatch
import logging
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import ConfigDict, Field, field_validator

from contract.ids import Ident
from contract.settings import Strict
from contract.topics import alerts_topic
from contract.wire import Batch, check_value_name
from ingest.line_protocol import encode_point

log = logging.getLogger(__name__)

ALERT_MEASUREMENT = "farmtel_alert"
"""Measurement of recorded alert transitions; see :func:`alert_line` for its schema."""
ALERT_TAGS = ("plantation", "gateway", "sensor", "rule", "severity", "state")
ALERT_FIELDS = ("value", "threshold", "op", "value_name", "since_ns", "for_s")

Op = Literal["<", "<=", ">", ">="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class AlertRule(Strict):
    """One ``[[alerts]]`` table: a threshold on one value, optionally held for a while."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    name: Ident
    """Rule id, shown in alerts and used as their ``rule`` tag, e.g. frost or dry-soil."""
    plantation: Ident | None = None
    """Only readings of this plantation; every plantation when unset."""
    sensor: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    """Only sensors whose id matches this shell glob (soil-*, *-north); every sensor when unset."""
    value: str
    """The value name to watch, with its unit, e.g. moisture_pct or air_temp_c."""
    op: Op
    """Comparison of the value with threshold that raises the alert: <, <=, > or >=."""
    threshold: float
    """The limit, in the value's unit (e.g. 0 for frost on air_temp_c)."""
    for_s: Annotated[float, Field(ge=0, le=30 * 86_400)] = 0.0
    """Seconds of reading time the condition must hold before the alert fires; 0 fires on the
    first reading that meets it."""
    severity: Literal["info", "warning", "critical"] = "warning"
    """How urgent: info, warning or critical (a tag on the alert, for routing)."""

    @field_validator("value")
    @classmethod
    def _check_value(cls, value: str) -> str:
        return check_value_name(value)

    @field_validator("threshold")
    @classmethod
    def _check_threshold(cls, threshold: float) -> float:
        if threshold != threshold or threshold in (float("inf"), float("-inf")):
            raise ValueError(f"threshold {threshold} must be a finite number")
        return threshold

    def applies_to(self, plantation: str, sensor: str) -> bool:
        if self.plantation is not None and self.plantation != plantation:
            return False
        return self.sensor is None or fnmatch.fnmatchcase(sensor, self.sensor)


def check_rule_names(rules: Sequence[AlertRule]) -> None:
    """Raise ``ValueError`` when two rules share a name (their alerts could not be told apart)."""
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ValueError(f"alert rule name {rule.name!r} is used twice; give each its own")
        seen.add(rule.name)


@dataclass(frozen=True)
class Alert:
    """One transition of one rule for one sensor. Times in ns since the epoch (gateway clock)."""

    rule: str
    severity: str
    state: Literal["firing", "resolved"]
    plantation: str
    gateway: str
    sensor: str
    value_name: str
    value: float
    op: str
    threshold: float
    for_s: float
    since_ns: int
    ts: int

    def payload(self) -> bytes:
        return orjson.dumps(self.__dict__)

    def line(self) -> str:
        return alert_line(self)


def alert_line(alert: Alert) -> str:
    """The ``farmtel_alert`` point: tags plantation, gateway, sensor, rule, severity, state;
    fields value, threshold, op, value_name, since_ns, for_s; time = the reading's time."""
    return encode_point(
        ALERT_MEASUREMENT,
        {
            "plantation": alert.plantation,
            "gateway": alert.gateway,
            "sensor": alert.sensor,
            "rule": alert.rule,
            "severity": alert.severity,
            "state": alert.state,
        },
        {
            "value": alert.value,
            "threshold": alert.threshold,
            "op": alert.op,
            "value_name": alert.value_name,
            "since_ns": alert.since_ns,
            "for_s": alert.for_s,
        },
        alert.ts,
    )


@dataclass
class _State:
    last_ts: int = -1
    since_ns: int | None = None
    firing: bool = False


Publish = Callable[[str, bytes], Any]
Record = Callable[[bytes], None]


class AlertEngine:
    """Evaluates the rules on stored batches and emits transitions.

    ``publish(topic, payload)`` sends an alert over MQTT; ``record(lines)`` stores the
    ``farmtel_alert`` points (the ingest passes its InfluxDB writer's ``write``). A failing
    ``record`` or ``publish`` is logged and counted in ``errors``; it never stops ingest.
    """

    def __init__(self, rules: Sequence[AlertRule], publish: Publish, record: Record):
        self.rules = list(rules)
        self.publish = publish
        self.record = record
        self.states: dict[tuple[str, str, str, str], _State] = {}
        self.fired = 0
        self.resolved = 0
        self.errors = 0

    def evaluate(self, plantation: str, batch: Batch) -> list[Alert]:
        """Update the rule state with ``batch``'s readings; return transitions in time order."""
        if not self.rules:
            return []
        out: list[Alert] = []
        for reading in sorted(batch.readings, key=lambda r: r.ts):
            for rule in self.rules:
                if rule.value not in reading.values or not rule.applies_to(
                    plantation, reading.sensor
                ):
                    continue
                key = (rule.name, plantation, batch.gateway, reading.sensor)
                state = self.states.setdefault(key, _State())
                if reading.ts <= state.last_ts:
                    continue
                state.last_ts = reading.ts
                value = reading.values[rule.value]
                if _OPS[rule.op](value, rule.threshold):
                    if state.since_ns is None:
                        state.since_ns = reading.ts
                    held_s = (reading.ts - state.since_ns) / 1e9
                    if not state.firing and held_s >= rule.for_s:
                        state.firing = True
                        out.append(self._alert(rule, "firing", plantation, batch, reading, state))
                else:
                    if state.firing:
                        out.append(self._alert(rule, "resolved", plantation, batch, reading, state))
                    state.firing = False
                    state.since_ns = None
        return out

    def _alert(
        self,
        rule: AlertRule,
        state_name: Literal["firing", "resolved"],
        plantation: str,
        batch: Batch,
        reading: Any,
        state: _State,
    ) -> Alert:
        return Alert(
            rule=rule.name,
            severity=rule.severity,
            state=state_name,
            plantation=plantation,
            gateway=batch.gateway,
            sensor=reading.sensor,
            value_name=rule.value,
            value=float(reading.values[rule.value]),
            op=rule.op,
            threshold=rule.threshold,
            for_s=rule.for_s,
            since_ns=state.since_ns if state.since_ns is not None else reading.ts,
            ts=reading.ts,
        )

    def observe(self, plantation: str, batch: Batch) -> list[Alert]:
        """Evaluate ``batch`` (already stored) and log, record and publish its transitions."""
        alerts = self.evaluate(plantation, batch)
        if not alerts:
            return alerts
        for alert in alerts:
            if alert.state == "firing":
                self.fired += 1
            else:
                self.resolved += 1
            log_fn = log.warning if alert.state == "firing" else log.info
            log_fn(
                "alert state=%s rule=%s severity=%s plantation=%s gateway=%s sensor=%s "
                "value=%s %g %s %g since_ns=%d",
                alert.state,
                alert.rule,
                alert.severity,
                alert.plantation,
                alert.gateway,
                alert.sensor,
                alert.value_name,
                alert.value,
                alert.op,
                alert.threshold,
                alert.since_ns,
            )
        # Recorded before published: whoever acts on the MQTT alert finds it in `farmtel
        # alerts list`.
        try:
            self.record("\n".join(a.line() for a in alerts).encode())
        except Exception as err:  # the readings are stored; losing the record is logged
            self.errors += 1
            log.error("alert record failed alerts=%d error=%s", len(alerts), err)
        for alert in alerts:
            try:
                self.publish(alerts_topic(alert.plantation, alert.gateway), alert.payload())
            except Exception as err:  # a broker hiccup must not stop the writer thread
                self.errors += 1
                log.error("alert publish failed rule=%s error=%s", alert.rule, err)
        return alerts
