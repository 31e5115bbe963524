"""The manager's questions, asked of InfluxDB in InfluxQL over ``/query``.

Every user-given value goes in as a bound parameter (InfluxDB 1.x binds ``$name`` from
``params=``), and every identifier is checked against its pattern and quoted, so no CLI
filter can change the shape of a query.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from contract.ids import check_ident
from contract.wire import check_value_name
from ingest.influx import InfluxQuery, quote_ident
from ingest.mapping import GAP_MEASUREMENT, INTERNAL_PREFIX

_DURATION_RE = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_WINDOWS = 100_000
BOOKKEEPING_FIELDS = ("seq", "clock", "cal")


class QueryInputError(ValueError):
    """A CLI argument that makes no sense; the message names it and what is allowed."""


def parse_duration(text: str, option: str) -> timedelta:
    m = _DURATION_RE.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise QueryInputError(
            f"{option} {text!r} is not a duration; use a positive number and a unit s, m, h, d "
            "or w, e.g. 90s, 15m, 24h, 7d"
        )
    return timedelta(seconds=int(m.group(1)) * _UNIT_S[m.group(2)])


def parse_time(text: str, option: str) -> datetime:
    """ISO 8601 date or date-time; without an offset it is local time."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryInputError(
            f"{option} {text!r} is not a date or time; use ISO 8601, e.g. 2026-05-01, "
            "2026-05-01T06:00 or 2026-05-01T06:00:00+08:00"
        ) from None
    if value.tzinfo is None:
        value = value.astimezone()
    return value.astimezone(UTC)


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    @property
    def start_ns(self) -> int:
        return int(self.start.timestamp() * 1_000_000) * 1000

    @property
    def end_ns(self) -> int:
        return int(self.end.timestamp() * 1_000_000) * 1000


def time_range(
    since: str | None, start: str | None, end: str | None, now: datetime | None = None
) -> TimeRange:
    """Resolve ``--since`` or ``--from``/``--to`` into a range, or say why it makes no sense."""
    now = now or datetime.now(UTC)
    if since and (start or end):
        raise QueryInputError("give either --since or --from/--to, not both")
    if since:
        return TimeRange(now - parse_duration(since, "--since"), now)
    if not start:
        raise QueryInputError("give a time range: --since 24h, or --from T [--to T]")
    begin = parse_time(start, "--from")
    finish = parse_time(end, "--to") if end else now
    if finish <= begin:
        raise QueryInputError(
            f"--to ({finish.isoformat()}) must be after --from ({begin.isoformat()})"
        )
    return TimeRange(begin, finish)


@dataclass
class LatestRow:
    measurement: str
    field: str
    gateway: str
    sensor: str
    time_ns: int
    values: dict[str, float]
    clock: str


LATEST_RECENT = "7d"
"""``latest`` looks in this recent span first, so InfluxDB opens only its last shards (a year
of 50 sensors, bench/query.py: 0.04 s instead of 1.1 s); the whole history is searched only
when some series of the plantation has nothing that recent (a sensor silent for weeks)."""


def latest(client: InfluxQuery, plantation: str) -> list[LatestRow]:
    """The newest reading of every sensor of a plantation."""
    check_ident(plantation, "--plantation")
    newest = (
        'SELECT * FROM /.*/ WHERE "plantation" = $plantation{span} '
        'GROUP BY "field", "gateway", "sensor" ORDER BY time DESC LIMIT 1'
    )
    # A sensor that sends its values in several messages (a weather station's MDA and MWV
    # sentences) has no single newest point holding all of them: take each value's last.
    each_last = (
        'SELECT last(*) FROM /.*/ WHERE "plantation" = $plantation{span} '
        'GROUP BY "field", "gateway", "sensor"'
    )
    params = {"plantation": plantation}
    span = f" AND time > now() - {LATEST_RECENT}"
    series = client.query(newest.format(span=span), params)
    keys = client.query('SHOW SERIES WHERE "plantation" = $plantation', params)
    stored = sum(1 for s in keys for (key, *_) in s.values if not key.startswith(INTERNAL_PREFIX))
    recent = sum(1 for s in series if s.values and not s.name.startswith(INTERNAL_PREFIX))
    if recent < stored:
        span = ""
        series = client.query(newest.format(span=span), params)
    lasts: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, object]] = {}
    for s in client.query(each_last.format(span=span), params):
        if s.values:
            rec = dict(zip(s.columns, s.values[0], strict=True))
            lasts[(s.name, tuple(sorted(s.tags.items())))] = {
                k.removeprefix("last_"): v for k, v in rec.items() if k.startswith("last_")
            }
    rows = []
    for s in series:
        if s.name.startswith(INTERNAL_PREFIX) or not s.values:
            continue
        record = dict(zip(s.columns, s.values[0], strict=True))
        for name, value in lasts.get((s.name, tuple(sorted(s.tags.items()))), {}).items():
            if record.get(name) is None:
                record[name] = value
        values = {
            k: float(v)
            for k, v in record.items()
            if k not in ("time", *BOOKKEEPING_FIELDS)
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            and k not in s.tags
        }
        rows.append(
            LatestRow(
                measurement=s.name,
                field=s.tags.get("field", ""),
                gateway=s.tags.get("gateway", ""),
                sensor=s.tags.get("sensor", ""),
                time_ns=int(record["time"]),
                values=values,
                clock=str(record.get("clock") or ""),
            )
        )
    rows.sort(key=lambda r: (r.field, r.gateway, r.sensor, r.measurement))
    return rows


@dataclass
class HistoryRow:
    measurement: str
    gateway: str
    sensor: str
    window_start_ns: int
    value: str
    mean: float | None
    min: float | None
    max: float | None


def history(
    client: InfluxQuery,
    plantation: str,
    span: TimeRange,
    every: str,
    sensor: str | None = None,
    value: str | None = None,
) -> list[HistoryRow]:
    """mean/min/max per window and per sensor value, aggregated inside InfluxDB."""
    check_ident(plantation, "--plantation")
    if sensor is not None:
        check_ident(sensor, "--sensor")
    if value is not None:
        try:
            check_value_name(value)
        except ValueError as err:
            raise QueryInputError(f"--field: {err}") from None
    window = parse_duration(every, "--every")
    windows = (span.end - span.start) / window
    if windows > MAX_WINDOWS:
        raise QueryInputError(
            f"--every {every} over {span.end - span.start} gives {int(windows)} windows "
            f"(at most {MAX_WINDOWS}); choose a larger --every"
        )
    if value is None:
        select = "mean(*), min(*), max(*)"
    else:
        q = quote_ident(value)
        select = f"mean({q}) AS mean_{value}, min({q}) AS min_{value}, max({q}) AS max_{value}"
    where = '"plantation" = $plantation AND time >= $start AND time < $end'
    params: dict[str, Any] = {
        "plantation": plantation,
        "start": span.start_ns,
        "end": span.end_ns,
    }
    if sensor is not None:
        where += ' AND "sensor" = $sensor'
        params["sensor"] = sensor
    every_s = int(window.total_seconds())
    series = client.query(
        f"SELECT {select} FROM /.*/ WHERE {where} "
        f'GROUP BY time({every_s}s), "gateway", "sensor" fill(none)',
        params=params,
    )
    rows = []
    for s in series:
        if s.name.startswith(INTERNAL_PREFIX) or s.name == GAP_MEASUREMENT:
            continue
        names = sorted(
            {
                c.split("_", 1)[1]
                for c in s.columns
                if c.startswith("mean_") and c.split("_", 1)[1] not in BOOKKEEPING_FIELDS
            }
        )
        for raw in s.values:
            rec = dict(zip(s.columns, raw, strict=True))
            for name in names:
                mean = rec.get(f"mean_{name}")
                if mean is None:
                    continue
                rows.append(
                    HistoryRow(
                        measurement=s.name,
                        gateway=s.tags.get("gateway", ""),
                        sensor=s.tags.get("sensor", ""),
                        window_start_ns=int(rec["time"]),
                        value=name,
                        mean=_num(mean),
                        min=_num(rec.get(f"min_{name}")),
                        max=_num(rec.get(f"max_{name}")),
                    )
                )
    rows.sort(key=lambda r: (r.gateway, r.sensor, r.value, r.window_start_ns))
    return rows


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
