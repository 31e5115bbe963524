"""The manager's questions, asked of InfluxDB in InfluxQL over ``/query``.

Every user-given value goes in as a bound parameter (InfluxDB 1.x binds ``$name`` from
``params=``), and every identifier is checked against its pattern and quoted, so no CLI
filter can change the shape of a query.
"""

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from contract.ids import check_ident
from contract.wire import check_value_name
from ingest.influx import InfluxError, InfluxQuery, Series, quote_ident
from ingest.line_protocol import MAX_TIME_NS, MIN_TIME_NS, encode_point
from ingest.mapping import INTERNAL_PREFIX

_DURATION_RE = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_WINDOWS = 100_000
BOOKKEEPING_FIELDS = ("seq", "clock", "cal")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
EARLIEST = _EPOCH + _US * -(-MIN_TIME_NS // 1000)
"""The earliest time a :class:`datetime` (whole microseconds) can give InfluxDB."""
LATEST = _EPOCH + _US * (MAX_TIME_NS // 1000)
"""The latest time a :class:`datetime` (whole microseconds) can give InfluxDB."""
_LONGEST_S = (2**63 - 1) // 1_000_000_000
"""The longest duration, in whole seconds, that InfluxDB takes (in ns, a signed 64-bit int)."""


class QueryInputError(ValueError):
    """A CLI argument that makes no sense; the message names it and what is allowed."""


def utc_text(t: datetime) -> str:
    """``t`` in UTC to the microsecond, as messages quote InfluxDB's limits."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_STORED = f"give a time between {utc_text(EARLIEST)} and {utc_text(LATEST)}"


def _duration_parts(text: str, option: str) -> tuple[int, str]:
    """The number and unit of a duration; the number may be any size (checked by the caller)."""
    m = _DURATION_RE.fullmatch(text.strip())
    digits = m.group(1).lstrip("0") if m else ""
    if not m or not digits:
        raise QueryInputError(
            f"{option} {text!r} is not a duration; use a positive number and a unit s, m, h, d "
            "or w, e.g. 90s, 15m, 24h, 7d"
        )
    # int() refuses over 4300 digits; a number of more than 30 is far too long for InfluxDB.
    return int(digits) if len(digits) <= 30 else 10**30, m.group(2)


def parse_duration(text: str, option: str) -> timedelta:
    count, unit = _duration_parts(text, option)
    longest = _LONGEST_S // _UNIT_S[unit]
    if count > longest:
        raise QueryInputError(
            f"{option} {text!r} is too long; the longest duration InfluxDB takes is {longest}{unit}"
        )
    return timedelta(seconds=count * _UNIT_S[unit])


def _since(text: str, now: datetime) -> datetime:
    """``now`` less ``--since``; refused (not clamped) when that is before :data:`EARLIEST`,
    so that a range never silently covers less than was asked for."""
    count, unit = _duration_parts(text, "--since")
    longest = (now - EARLIEST) // timedelta(seconds=_UNIT_S[unit])
    if count > longest:
        raise QueryInputError(
            f"--since {text!r} reaches back before {utc_text(EARLIEST)}, the earliest time "
            f"InfluxDB stores; the longest --since allowed now is {longest}{unit}"
        )
    return now - timedelta(seconds=count * _UNIT_S[unit])


def parse_time(text: str, option: str) -> datetime:
    """ISO 8601 date or date-time; without an offset it is local time. Refused outside
    :data:`EARLIEST` .. :data:`LATEST`, the times InfluxDB stores."""
    try:
        given = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryInputError(
            f"{option} {text!r} is not a date or time; use ISO 8601, e.g. 2026-05-01, "
            "2026-05-01T06:00 or 2026-05-01T06:00:00+08:00"
        ) from None
    try:
        value = (given if given.tzinfo else given.astimezone()).astimezone(UTC)
    except (OverflowError, ValueError, OSError):
        # Year 1 or 9999 shifted by a UTC offset: far outside InfluxDB's times anyway.
        value = EARLIEST - _US if given.year < 1970 else LATEST + _US
    if value < EARLIEST:
        raise QueryInputError(
            f"{option} {text!r} is before the earliest time InfluxDB stores; {_STORED}"
        )
    if value > LATEST:
        raise QueryInputError(
            f"{option} {text!r} is after the latest time InfluxDB stores; {_STORED}"
        )
    return value


def format_duration(span: timedelta) -> str:
    """``span`` as a user writes a duration (700000d, 36h, 90s), in the largest unit that
    holds it whole; ``about 14d`` when none does (a --from/--to range)."""
    units = [(u, _UNIT_S[u]) for u in ("d", "h", "m", "s")]
    us = span // _US
    if us % 1_000_000 == 0:
        seconds = us // 1_000_000
        for unit, size in units:
            if seconds % size == 0 and seconds:
                return f"{seconds // size}{unit}"
        return "0s"
    unit, size = next(((u, n) for u, n in units if us >= n * 1_000_000), units[-1])
    return f"about {round(us / (size * 1_000_000))}{unit}"


def _ns(t: datetime) -> int:
    """ns since the epoch, exactly: ``timestamp()`` is a float, which cannot hold every
    microsecond of InfluxDB's range."""
    return (t - _EPOCH) // _US * 1000


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    @property
    def start_ns(self) -> int:
        return _ns(self.start)

    @property
    def end_ns(self) -> int:
        return _ns(self.end)


def time_range(
    since: str | None, start: str | None, end: str | None, now: datetime | None = None
) -> TimeRange:
    """Resolve ``--since`` or ``--from``/``--to`` into a range, or say why it makes no sense."""
    now = now or datetime.now(UTC)
    if since and (start or end):
        raise QueryInputError("give either --since or --from/--to, not both")
    if since:
        return TimeRange(_since(since, now), now)
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


@dataclass(slots=True)
class HistoryRow:
    measurement: str
    gateway: str
    sensor: str
    window_start_ns: int
    value: str
    mean: float | None
    min: float | None
    max: float | None


ROLLUP_RP = "farmtel_1h"
"""The retention policy that holds ``query history``'s hourly rollups (API v1 only): one
point per raw series (same measurement, same tags) and hour, with ``mean_<v>``, ``min_<v>``,
``max_<v>`` and ``count_<v>`` for each value ``v``, and ``count_seq`` (readings). The raw
data stays in the default retention policy, untouched; exports never read this one."""
HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS
ROLLUP_WRITE_LINES = 5_000
ROLLUP_DAYS_PER_QUERY = 7
_GROUP_TAGS = '"field", "gateway", "sensor"'
_AGGS = ("mean", "min", "max", "count")
_ROW_ORDER = attrgetter("gateway", "sensor", "value", "window_start_ns")
Progress = Callable[[str], None]


def history(
    client: InfluxQuery,
    plantation: str,
    span: TimeRange,
    every: str,
    sensor: str | None = None,
    value: str | None = None,
    rollups: bool = True,
    progress: Progress | None = None,
    warn: Progress | None = None,
) -> list[HistoryRow]:
    """mean/min/max per window and per sensor value, aggregated inside InfluxDB.

    Only the value fields are aggregated (``SHOW FIELD KEYS``: numbers, without the
    bookkeeping fields ``seq``/``cal``): InfluxDB 1.x pays ~10 us per window, series and
    aggregate, so ``mean(*)`` over a year of hourly windows spent a quarter of its time on
    ``seq``, which nobody reads.

    With ``rollups`` (API v1, ``--every`` a whole number of hours), the full hours of the
    range come from :data:`ROLLUP_RP`, checked on every read against the raw data: per
    series and UTC day, the number of raw readings must equal the rollups' count. A day
    that differs (late data from a gateway that was offline, first use) is computed from
    the raw data again and written back; the partial hours at either end of the range
    always come from the raw data. ``warn`` hears why rollups could not be kept (the answer
    is then computed from the raw data, complete), ``progress`` what takes long.
    """
    check_ident(plantation, "--plantation")
    if sensor is not None:
        check_ident(sensor, "--sensor")
    if value is not None:
        try:
            check_value_name(value)
        except ValueError as err:
            raise QueryInputError(f"--value: {err}") from None
    window = parse_duration(every, "--every")
    windows = (span.end - span.start) / window
    if windows > MAX_WINDOWS:
        raise QueryInputError(
            f"--every {every} over {format_duration(span.end - span.start)} gives "
            f"{int(windows)} windows (at most {MAX_WINDOWS}); choose a larger --every"
        )
    every_ns = int(window.total_seconds()) * 1_000_000_000
    stored, counted = value_fields(client)
    fields = {
        m: names if value is None else [value]
        for m, names in stored.items()
        if value is None or value in names
    }
    if value is not None:
        require_stored_value(value, stored)
    if not fields:
        return []
    h0 = -(-span.start_ns // HOUR_NS) * HOUR_NS
    h1 = span.end_ns // HOUR_NS * HOUR_NS
    use_rollups = rollups and client.settings.api == "v1" and every_ns % HOUR_NS == 0 and h1 > h0
    if use_rollups and not _ensure_rollup_rp(client, warn):
        use_rollups = False
    if not use_rollups:
        return _direct(client, fields, plantation, span, every_ns, sensor)
    rows: list[HistoryRow] = []
    for measurement, names in fields.items():
        rollup = _Rollup(client, plantation, sensor, measurement, counted[measurement])
        parts: list[Series] = []
        if span.start_ns < h0:
            parts += rollup.from_raw(span.start_ns, h0, names)
        parts += rollup.hours(h0, h1, names, stored[measurement], progress, warn)
        if h1 < span.end_ns:
            parts += rollup.from_raw(h1, span.end_ns, names)
        rows += _windows(measurement, names, parts, every_ns)
    rows.sort(key=_ROW_ORDER)
    return rows


def require_stored_value(value: str, stored: Mapping[str, Iterable[str]]) -> None:
    """Raise QueryInputError, naming the values there are, unless some measurement of
    ``stored`` (:func:`value_fields`) holds ``value``; nothing is stored at all is no error
    (the answer is then simply empty). A manager may give the field, the plot, a reading
    comes from: this says what the values are called."""
    known = sorted({n for names in stored.values() for n in names})
    if known and value not in known:
        raise QueryInputError(
            f"--value {value!r}: no reading holds a value of that name; the values stored "
            f"are {', '.join(known)}"
        )


def value_fields(client: InfluxQuery) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Measurement -> its numeric value fields (not farmtel's own measurements, not the
    bookkeeping fields), from ``SHOW FIELD KEYS`` of the default retention policy; and
    measurement -> the fields whose counts tell whether a rollup is complete: ``seq``
    (one per reading) where there is one, else the value fields."""
    fields: dict[str, list[str]] = {}
    counted: dict[str, list[str]] = {}
    for s in client.query("SHOW FIELD KEYS"):
        if s.name.startswith(INTERNAL_PREFIX):
            continue
        numeric = {str(key) for key, kind, *_ in s.values if kind in ("float", "integer")}
        names = sorted(
            key
            for key in numeric
            if key not in BOOKKEEPING_FIELDS and "\0" not in key and "\r" not in key
        )
        if names:
            fields[s.name] = names
            counted[s.name] = ["seq"] if "seq" in numeric else names
    return fields, counted


def _where(sensor: str | None) -> str:
    where = '"plantation" = $plantation AND time >= $start AND time < $end'
    return where + (' AND "sensor" = $sensor' if sensor is not None else "")


def _params(plantation: str, sensor: str | None, start: int, end: int) -> dict[str, Any]:
    params: dict[str, Any] = {"plantation": plantation, "start": start, "end": end}
    if sensor is not None:
        params["sensor"] = sensor
    return params


def _aggregates(columns: Iterable[tuple[str, str]]) -> str:
    """``a("n") AS "a_n"`` for each (aggregate, field) of ``columns``."""
    return ", ".join(f"{a}({quote_ident(n)}) AS {quote_ident(f'{a}_{n}')}" for a, n in columns)


def _direct(
    client: InfluxQuery,
    fields: dict[str, list[str]],
    plantation: str,
    span: TimeRange,
    every_ns: int,
    sensor: str | None,
) -> list[HistoryRow]:
    """Every window computed by InfluxDB from the raw points, one statement per measurement."""
    params = _params(plantation, sensor, span.start_ns, span.end_ns)
    every_s = every_ns // 1_000_000_000
    rows: list[HistoryRow] = []
    for measurement, names in fields.items():
        series = client.query(
            f"SELECT {_aggregates((a, n) for n in names for a in _AGGS[:3])} "
            f"FROM {quote_ident(measurement)} "
            f'WHERE {_where(sensor)} GROUP BY time({every_s}s), "gateway", "sensor" fill(none)',
            params=params,
        )
        for s in series:
            rows += _series_rows(measurement, names, s)
    rows.sort(key=_ROW_ORDER)
    return rows


def _series_rows(measurement: str, names: list[str], s: Series) -> list[HistoryRow]:
    """A series with ``mean_<v>``, ``min_<v>``, ``max_<v>`` columns as rows, one per window
    and value that has a mean."""
    gateway, sensor = s.tags.get("gateway", ""), s.tags.get("sensor", "")
    col = {c: i for i, c in enumerate(s.columns)}
    rows = []
    for name in names:
        im, imin, imax = col.get(f"mean_{name}"), col.get(f"min_{name}"), col.get(f"max_{name}")
        if im is None or imin is None or imax is None:
            continue
        for raw in s.values:
            mean = raw[im]
            if mean is None:
                continue
            low, high = raw[imin], raw[imax]
            rows.append(
                HistoryRow(
                    measurement,
                    gateway,
                    sensor,
                    raw[0],
                    name,
                    float(mean),
                    _opt(low),
                    _opt(high),
                )
            )
    return rows


def _ensure_rollup_rp(client: InfluxQuery, warn: Progress | None) -> bool:
    """True when :data:`ROLLUP_RP` exists or could be created (never as the default)."""
    db = client.settings.database
    try:
        for s in client.query(f"SHOW RETENTION POLICIES ON {quote_ident(db)}"):
            if any(row and row[0] == ROLLUP_RP for row in s.values):
                return True
        client.query(
            f"CREATE RETENTION POLICY {quote_ident(ROLLUP_RP)} ON {quote_ident(db)} "
            "DURATION INF REPLICATION 1"
        )
        return True
    except InfluxError as err:
        if warn:
            warn(f"hourly rollups not used ({err}); computing from the raw data")
        return False


class _Rollup:
    """Hourly aggregates of one measurement of one plantation: read from :data:`ROLLUP_RP`,
    checked against the raw counts per day, repaired from the raw data where they differ."""

    def __init__(
        self,
        client: InfluxQuery,
        plantation: str,
        sensor: str | None,
        measurement: str,
        counted: list[str],
    ):
        self.client = client
        self.plantation = plantation
        self.sensor = sensor
        self.measurement = measurement
        self.m = quote_ident(measurement)
        self.counted = counted

    def _columns(self, names: list[str]) -> list[tuple[str, str]]:
        """(aggregate, field) of a rollup of ``names``: each aggregate of every name, and the
        count of each ``counted`` field that is not one of them; column ``<aggregate>_<field>``."""
        return [(a, n) for n in names for a in _AGGS] + [
            ("count", n) for n in self.counted if n not in names
        ]

    def from_raw(self, start: int, end: int, names: list[str]) -> list[Series]:
        """Hourly aggregates of ``names`` (and the counts of ``counted``) computed by
        InfluxDB from the raw points in [start, end)."""
        return self.client.query(
            f"SELECT {_aggregates(self._columns(names))} FROM {self.m} WHERE {_where(self.sensor)} "
            f"GROUP BY time(1h), {_GROUP_TAGS} fill(none)",
            params=_params(self.plantation, self.sensor, start, end),
        )

    def hours(
        self,
        h0: int,
        h1: int,
        names: list[str],
        every_value: list[str],
        progress: Progress | None,
        warn: Progress | None,
    ) -> list[Series]:
        """The full hours [h0, h1) of ``names``: rollups for the days whose counts match the
        raw data, the raw data for the others. Those are written back with ``every_value``
        of the measurement, so that a day's rollups never lack a value that a later query
        for all values would need (its counts would match)."""
        params = _params(self.plantation, self.sensor, h0, h1)
        counts = ", ".join(f"count({quote_ident(n)})" for n in self.counted)
        raw_counts: dict[tuple[str, str, str, int], tuple[int, ...]] = {}
        for s in self.client.query(
            f"SELECT {counts} FROM {self.m} WHERE {_where(self.sensor)} "
            f"GROUP BY time(1d), {_GROUP_TAGS} fill(none)",
            params=params,
        ):
            tags = _series_tags(s)
            for row in s.values:
                raw_counts[(*tags, row[0])] = tuple(int(c or 0) for c in row[1:])
        cols = ", ".join(quote_ident(f"{a}_{n}") for a, n in self._columns(names))
        stored = self.client.query(
            f"SELECT {cols} FROM {quote_ident(ROLLUP_RP)}.{self.m} WHERE {_where(self.sensor)} "
            f"GROUP BY {_GROUP_TAGS}",
            params=params,
        )
        rolled: dict[tuple[str, str, str, int], list[int]] = {}
        for s in stored:
            tags = _series_tags(s)
            col = {c: i for i, c in enumerate(s.columns)}
            idx = [col.get(f"count_{n}") for n in self.counted]
            for row in s.values:
                day = row[0] - row[0] % DAY_NS
                sums = rolled.get((*tags, day))
                if sums is None:
                    sums = rolled[(*tags, day)] = [0] * len(idx)
                for k, i in enumerate(idx):
                    if i is not None:
                        sums[k] += row[i] or 0
        stale = {
            key[3]
            for key in raw_counts.keys() | rolled.keys()
            if raw_counts.get(key, ()) != tuple(rolled.get(key, ()))
        }
        if not stale:
            return stored
        out = [
            Series(
                s.name,
                s.tags,
                s.columns,
                [r for r in s.values if r[0] - r[0] % DAY_NS not in stale],
            )
            for s in stored
        ]
        say = progress if progress and len(stale) > 7 else None
        if say:
            say(
                f"history: {self.measurement}: computing {len(stale)} days of hourly rollups "
                "from the raw data (first use, or late data); later queries read them"
            )
        writable = True
        done = 0
        for a, b in _runs(sorted(stale)):
            fresh = self.from_raw(max(a, h0), min(b + DAY_NS, h1), every_value)
            done += (b - a) // DAY_NS + 1
            if say and done < len(stale):
                say(f"history: {self.measurement}: {done} of {len(stale)} days")
            out += fresh
            if writable:
                try:
                    self._store(fresh)
                except InfluxError as err:
                    writable = False
                    if warn:
                        warn(f"hourly rollups not stored ({err}); the answer is still complete")
        return out

    def _store(self, series: list[Series]) -> None:
        lines = []
        for s in series:
            tags = {k: v for k, v in s.tags.items() if v}
            tags["plantation"] = self.plantation
            columns = s.columns
            for row in s.values:
                values: dict[str, float | int] = {}
                for c, v in zip(columns[1:], row[1:], strict=True):
                    if v is not None:
                        values[c] = int(v) if c.startswith("count_") else float(v)
                if values:
                    lines.append(encode_point(self.measurement, tags, values, row[0]))
        for i in range(0, len(lines), ROLLUP_WRITE_LINES):
            self.client.write("\n".join(lines[i : i + ROLLUP_WRITE_LINES]).encode(), ROLLUP_RP)


def _runs(days: list[int]) -> Iterable[tuple[int, int]]:
    """Consecutive days as (first, last) pairs of at most :data:`ROLLUP_DAYS_PER_QUERY` days
    (one statement each: bounded time and memory, and progress between them)."""
    first = last = days[0]
    for day in days[1:]:
        if day != last + DAY_NS or day - first >= ROLLUP_DAYS_PER_QUERY * DAY_NS:
            yield first, last
            first = day
        last = day
    yield first, last


def _series_tags(s: Series) -> tuple[str, str, str]:
    return s.tags.get("field", ""), s.tags.get("gateway", ""), s.tags.get("sensor", "")


def _windows(
    measurement: str, names: list[str], parts: list[Series], every_ns: int
) -> list[HistoryRow]:
    """Hourly aggregates -> one row per gateway, sensor, value and ``every`` window (epoch
    aligned, as InfluxDB's GROUP BY time). A window of one hourly part keeps its mean as
    InfluxDB computed it (``--every 1h``: the rows are InfluxDB's own); parts are merged by
    count, so the mean of a longer window may differ from InfluxDB's in the last digits."""
    sources: dict[tuple[str, str], set[str]] = {}
    for s in parts:
        sources.setdefault((s.tags.get("gateway", ""), s.tags.get("sensor", "")), set()).add(
            s.tags.get("field", "")
        )
    rows: list[HistoryRow] = []
    merged: dict[tuple[str, str, str, int], list[Any]] = {}
    for s in parts:
        gateway, sensor = s.tags.get("gateway", ""), s.tags.get("sensor", "")
        if every_ns == HOUR_NS and len(sources[(gateway, sensor)]) == 1:
            rows += _series_rows(measurement, names, s)
            continue
        col = {c: i for i, c in enumerate(s.columns)}
        for name in names:
            im, imin, imax, ic = (col.get(f"{a}_{name}") for a in _AGGS)
            if im is None or imin is None or imax is None or ic is None:
                continue
            for row in s.values:
                mean, count = row[im], row[ic]
                if mean is None or not count:
                    continue
                key = (gateway, sensor, name, row[0] - row[0] % every_ns)
                low, high = _opt(row[imin]), _opt(row[imax])
                have = merged.get(key)
                if have is None:
                    merged[key] = [float(mean), low, high, int(count)]
                    continue
                total = have[3] + count
                have[0] = (have[0] * have[3] + float(mean) * count) / total
                have[1] = _pick(min, have[1], low)
                have[2] = _pick(max, have[2], high)
                have[3] = total
    rows += [
        HistoryRow(measurement, gateway, sensor, start, name, m[0], m[1], m[2])
        for (gateway, sensor, name, start), m in merged.items()
    ]
    return rows


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def _pick(f: Callable[[float, float], float], a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return f(a, b)
