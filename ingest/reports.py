"""More of the manager's questions: per-value summaries, gaps and alerts, in InfluxQL.

Same rules as :mod:`ingest.queries`: user values are bound parameters, identifiers are
checked against their pattern and quoted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract.ids import check_ident
from contract.wire import check_value_name
from ingest.alerts import ALERT_MEASUREMENT
from ingest.influx import InfluxQuery, quote_ident
from ingest.mapping import GAP_MEASUREMENT, INTERNAL_PREFIX
from ingest.queries import (
    BOOKKEEPING_FIELDS,
    QueryInputError,
    TimeRange,
    require_stored_value,
    value_fields,
)


def _check_value(value: str | None) -> None:
    if value is not None:
        try:
            check_value_name(value)
        except ValueError as err:
            raise QueryInputError(f"--value: {err}") from None


def _where(
    plantation: str | None, span: TimeRange, **tags: str | None
) -> tuple[str, dict[str, Any]]:
    where = "time >= $start AND time < $end"
    params: dict[str, Any] = {"start": span.start_ns, "end": span.end_ns}
    if plantation is not None:
        check_ident(plantation, "--plantation")
        where += ' AND "plantation" = $plantation'
        params["plantation"] = plantation
    for tag, value in tags.items():
        if value is not None:
            check_ident(value, f"--{tag}")
            where += f' AND "{tag}" = ${tag}'
            params[tag] = value
    return where, params


@dataclass
class SummaryRow:
    measurement: str
    gateway: str
    sensor: str
    value: str
    count: int
    min: float | None
    mean: float | None
    max: float | None


def summary(
    client: InfluxQuery,
    plantation: str,
    span: TimeRange,
    sensor: str | None = None,
    value: str | None = None,
) -> list[SummaryRow]:
    """count/min/mean/max of every value of every sensor over ``span``, inside InfluxDB."""
    _check_value(value)
    where, params = _where(plantation, span, sensor=sensor)
    if value is None:
        select = "count(*), min(*), mean(*), max(*)"
    else:
        require_stored_value(value, value_fields(client)[0])
        q = quote_ident(value)
        select = (
            f"count({q}) AS count_{value}, min({q}) AS min_{value}, "
            f"mean({q}) AS mean_{value}, max({q}) AS max_{value}"
        )
    series = client.query(
        f'SELECT {select} FROM /.*/ WHERE {where} GROUP BY "gateway", "sensor"', params=params
    )
    rows = []
    for s in series:
        if s.name.startswith(INTERNAL_PREFIX) or not s.values:
            continue
        rec = dict(zip(s.columns, s.values[0], strict=True))
        names = sorted(
            {
                c.split("_", 1)[1]
                for c in s.columns
                if c.startswith("mean_") and c.split("_", 1)[1] not in BOOKKEEPING_FIELDS
            }
        )
        for name in names:
            mean = rec.get(f"mean_{name}")
            count = rec.get(f"count_{name}")
            if mean is None or not count:
                continue
            rows.append(
                SummaryRow(
                    measurement=s.name,
                    gateway=s.tags.get("gateway", ""),
                    sensor=s.tags.get("sensor", ""),
                    value=name,
                    count=int(count),
                    min=_num(rec.get(f"min_{name}")),
                    mean=_num(mean),
                    max=_num(rec.get(f"max_{name}")),
                )
            )
    rows.sort(key=lambda r: (r.gateway, r.sensor, r.value))
    return rows


@dataclass
class GapRow:
    start_ns: int
    end_ns: int
    duration_s: float
    gateway: str
    sensor: str
    reason: str
    detail: str


def gaps(
    client: InfluxQuery,
    plantation: str,
    span: TimeRange,
    gateway: str | None = None,
    sensor: str | None = None,
) -> list[GapRow]:
    """Declared gaps (``farmtel_gap``) that start within ``span``, oldest first."""
    where, params = _where(plantation, span, gateway=gateway, sensor=sensor)
    series = client.query(
        f"SELECT * FROM {quote_ident(GAP_MEASUREMENT)} WHERE {where}", params=params
    )
    rows = []
    for s in series:
        for raw in s.values:
            rec = dict(zip(s.columns, raw, strict=True))
            start = int(rec["time"])
            end = int(rec.get("end_ns") or start)
            rows.append(
                GapRow(
                    start_ns=start,
                    end_ns=end,
                    duration_s=float(rec.get("duration_s") or max(0, end - start) / 1e9),
                    gateway=str(rec.get("gateway") or ""),
                    sensor=str(rec.get("sensor") or ""),
                    reason=str(rec.get("reason") or ""),
                    detail=str(rec.get("detail") or ""),
                )
            )
    rows.sort(key=lambda r: (r.start_ns, r.gateway, r.sensor))
    return rows


@dataclass
class AlertRow:
    time_ns: int
    plantation: str
    gateway: str
    sensor: str
    rule: str
    severity: str
    state: str
    value_name: str
    value: float | None
    op: str
    threshold: float | None
    since_ns: int | None


def alerts(
    client: InfluxQuery,
    plantation: str | None,
    span: TimeRange,
    state: str | None = None,
) -> list[AlertRow]:
    """Recorded alert transitions (``farmtel_alert``) within ``span``, newest first."""
    where, params = _where(plantation, span)
    if state is not None:
        where += ' AND "state" = $state'
        params["state"] = state
    series = client.query(
        f"SELECT * FROM {quote_ident(ALERT_MEASUREMENT)} WHERE {where}", params=params
    )
    rows = []
    for s in series:
        for raw in s.values:
            rec = dict(zip(s.columns, raw, strict=True))
            since = rec.get("since_ns")
            rows.append(
                AlertRow(
                    time_ns=int(rec["time"]),
                    plantation=str(rec.get("plantation") or ""),
                    gateway=str(rec.get("gateway") or ""),
                    sensor=str(rec.get("sensor") or ""),
                    rule=str(rec.get("rule") or ""),
                    severity=str(rec.get("severity") or ""),
                    state=str(rec.get("state") or ""),
                    value_name=str(rec.get("value_name") or ""),
                    value=_num(rec.get("value")),
                    op=str(rec.get("op") or ""),
                    threshold=_num(rec.get("threshold")),
                    since_ns=int(since) if isinstance(since, int | float) else None,
                )
            )
    rows.sort(key=lambda r: r.time_ns, reverse=True)
    return rows


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
