"""What an export learns while it streams: completeness, calibrations, charts; and report.html.

Completeness rule (documented in docs/certification.md): for each sensor, the expected
interval is the median gap between its consecutive readings in the export
(intervals counted to the millisecond). For each UTC day, expected readings = the seconds
of that day inside the period / the median interval, rounded; completeness = readings
stored that day / expected, as a percentage (it can pass 100 when a sensor was read faster
than usual). A sensor with fewer than two readings has no median: its cells stay empty.

Charts are drawn in Python as inline SVG (one per sensor, one line per value, min-max band)
from 240 time windows per sensor that InfluxDB aggregates (mean, min, max), like the per-day
counts; memory does not grow with the period.
"""

import bisect
import dataclasses
import html
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce
from itertools import repeat
from operator import add, floordiv, sub

from certify.columns import SeriesRun
from certify.rows import GapRow, ReadingRow, csv_line, rfc3339_ns

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
CHART_BUCKETS = 240
MAX_HTML_GAPS = 500
MAX_HTML_DAYS = 400


@dataclass
class _Series:
    lo: list[float]
    hi: list[float]
    total: list[float]
    count: list[int]


@dataclass
class SensorStats:
    gateway: str
    sensor: str
    field: str
    kind: str
    readings: int = 0
    last_ts: int | None = None
    intervals_ms: dict[int, int] = dataclasses.field(default_factory=dict)
    per_day: Counter[int] = dataclasses.field(default_factory=Counter)
    series: dict[str, _Series] = dataclasses.field(default_factory=dict)

    def median_interval_s(self) -> float | None:
        total = sum(self.intervals_ms.values())
        if total == 0:
            return None
        middle = (total - 1) // 2
        seen = 0
        for ms in sorted(self.intervals_ms):
            seen += self.intervals_ms[ms]
            if seen > middle:
                return ms / 1000
        return None  # pragma: no cover - the loop always returns


@dataclass
class CalibrationUse:
    first_ts: int
    last_ts: int
    readings: int = 0


class ExportStats:
    """Per-sensor statistics of an export; memory is per sensor, per day and per window.

    The reading stream feeds :meth:`add` (intervals for the median, calibration versions);
    per-day counts and chart windows come from InfluxDB's own aggregates
    (:meth:`add_day_count`, :meth:`add_window`), which cost the stream nothing.
    """

    def __init__(self, start_ns: int, end_ns: int) -> None:
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.bucket_s = max(1, -(-(end_ns - start_ns) // (CHART_BUCKETS * NS_PER_S)))
        self.sensors: dict[tuple[str, str], SensorStats] = {}
        self.calibrations: dict[tuple[str, str, str], CalibrationUse] = {}
        self.readings = 0
        self._windows: dict[tuple[str, str, str], dict[int, dict[str, list[float]]]] = {}
        """(kind, gateway, sensor) -> window -> value -> [sum, count, min, max]."""

    def add(self, r: ReadingRow) -> None:
        """Feed one reading (in time order per sensor)."""
        self.readings += 1
        key = (r.gateway, r.sensor)
        s = self.sensors.get(key)
        if s is None:
            s = self.sensors[key] = SensorStats(r.gateway, r.sensor, r.field, r.kind)
        s.readings += 1
        ts = r.ts
        last = s.last_ts
        if last is not None and ts > last:
            ms = (ts - last) // 1_000_000
            iv = s.intervals_ms
            iv[ms] = iv.get(ms, 0) + 1
        s.last_ts = ts
        if r.cal:
            self._use_cal(r.gateway, r.sensor, r.cal, ts)

    def add_runs(self, runs: Iterable[SeriesRun]) -> None:
        """Feed one time slice's readings a series at a time (``runs`` in time order of
        their first reading): the same figures as :meth:`add` row by row in time order."""
        by_sensor: dict[tuple[str, str], list[SeriesRun]] = {}
        for run in runs:
            by_sensor.setdefault((run.gateway, run.sensor), []).append(run)
        for key, mine in by_sensor.items():
            s = self.sensors.get(key)
            if s is None:
                one = mine[0]
                s = SensorStats(one.gateway, one.sensor, one.field, one.kind)
                self.sensors[key] = s
            n = sum(len(r.ts) for r in mine)
            self.readings += n
            s.readings += n
            if len(mine) == 1:
                ts: Sequence[int] = mine[0].ts  # strictly increasing
            else:
                # One sensor in several series (it moved to another field): merged times,
                # each once (add() skips an interval of zero).
                ts = sorted({t for r in mine for t in r.ts})
            last = s.last_ts
            iv = s.intervals_ms
            if last is not None and ts[0] > last:
                ms = (ts[0] - last) // 1_000_000
                iv[ms] = iv.get(ms, 0) + 1
            if len(ts) > 1:
                steps = Counter(map(floordiv, map(sub, ts[1:], ts[:-1]), repeat(1_000_000)))
                for ms, count in steps.items():
                    iv[ms] = iv.get(ms, 0) + count
            s.last_ts = ts[-1] if last is None else max(last, ts[-1])
            for r in mine:
                if r.cals is not None:
                    self._add_cals(r.gateway, r.sensor, r.ts, r.cals)
                self._add_days_and_windows(s, r)

    def _add_days_and_windows(self, s: SensorStats, r: SeriesRun) -> None:
        """Per-day counts and chart windows of a run of the period's readings, what
        :meth:`add_day_count` and :meth:`add_window` take from InfluxDB's aggregates
        (``count`` per day; ``mean``, ``min``, ``max`` per window, both aligned to the
        epoch as InfluxDB's ``GROUP BY time()``)."""
        ts = r.ts
        n = len(ts)
        i = 0
        day = ts[0] // NS_PER_DAY
        while i < n:
            j = bisect.bisect_left(ts, (day + 1) * NS_PER_DAY, i)
            if j > i:
                s.per_day[day] += j - i
            i, day = j, day + 1
        if not r.values:
            return
        width = self.bucket_s * NS_PER_S
        windows = self._windows.setdefault((r.kind, r.gateway, r.sensor), {})
        i = 0
        w = ts[0] // width
        while i < n:
            j = bisect.bisect_left(ts, (w + 1) * width, i)
            if j > i:
                acc = windows.setdefault(w, {})
                for name, col in r.values:
                    part = col[i:j]
                    if not r.clean:
                        part = [
                            float(x)
                            for x in part
                            if x is not None and not isinstance(x, str | bool)
                        ]
                        if not part:
                            continue
                    a = acc.get(name)
                    if a is None:
                        acc[name] = [reduce(add, part, 0.0), len(part), min(part), max(part)]
                    else:
                        # One addition after the other, as InfluxDB's mean does (sum()
                        # may compensate, and a partial sum rounds differently).
                        a[0] = reduce(add, part, a[0])
                        a[1] += len(part)
                        a[2] = min(a[2], min(part))
                        a[3] = max(a[3], max(part))
            i, w = j, w + 1

    def add_stream_windows(self, kinds: Sequence[str]) -> None:
        """Feed :meth:`add_window` the chart windows gathered by :meth:`add_runs`, in the
        order InfluxDB would answer them (kind, gateway, sensor, time)."""
        width = self.bucket_s * NS_PER_S
        for kind in kinds:
            for (k, gw, sensor), windows in sorted(self._windows.items()):
                if k != kind:
                    continue
                for w in sorted(windows):
                    values = {
                        name: (total / count, lo, hi)
                        for name, (total, count, lo, hi) in sorted(windows[w].items())
                    }
                    self.add_window(gw, sensor, w * width, values)

    def _add_cals(
        self, gateway: str, sensor: str, ts: Sequence[int], cals: Sequence[object]
    ) -> None:
        for t, cal in zip(ts, cals, strict=True):
            if cal:
                self._use_cal(gateway, sensor, str(cal), t)

    def _use_cal(self, gateway: str, sensor: str, cal: str, ts: int) -> None:
        """Count a reading of ``sensor`` taken at ``ts`` under calibration ``cal``."""
        ck = (gateway, sensor, cal)
        use = self.calibrations.get(ck)
        if use is None:
            use = self.calibrations[ck] = CalibrationUse(ts, ts)
        use.first_ts = min(use.first_ts, ts)
        use.last_ts = max(use.last_ts, ts)
        use.readings += 1

    def _sensor(self, gateway: str, sensor: str) -> SensorStats | None:
        return self.sensors.get((gateway, sensor))

    def add_day_count(self, gateway: str, sensor: str, day: int, count: int) -> None:
        s = self._sensor(gateway, sensor)
        if s is not None:
            s.per_day[day] += count

    def add_window(
        self, gateway: str, sensor: str, start_ns: int, stats: dict[str, tuple[float, float, float]]
    ) -> None:
        """One chart window from InfluxDB: ``{value: (mean, min, max)}``."""
        s = self._sensor(gateway, sensor)
        if s is None:
            return
        b = min(CHART_BUCKETS - 1, max(0, (start_ns - self.start_ns) // (self.bucket_s * NS_PER_S)))
        for name, (mean, lo, hi) in stats.items():
            ser = s.series.get(name)
            if ser is None:
                ser = s.series[name] = _Series(
                    [0.0] * CHART_BUCKETS,
                    [0.0] * CHART_BUCKETS,
                    [0.0] * CHART_BUCKETS,
                    [0] * CHART_BUCKETS,
                )
            if ser.count[b] == 0:
                ser.lo[b], ser.hi[b] = lo, hi
            else:
                ser.lo[b], ser.hi[b] = min(ser.lo[b], lo), max(ser.hi[b], hi)
            ser.total[b] += mean
            ser.count[b] += 1

    def days(self) -> list[int]:
        """UTC day numbers (days since the epoch) that the period touches."""
        first = self.start_ns // NS_PER_DAY
        last = (self.end_ns - 1) // NS_PER_DAY
        return list(range(first, last + 1))

    def completeness(self) -> list[tuple[SensorStats, int, int, int | None, float | None]]:
        """``(sensor, day, readings, expected, percent)`` for every sensor and day."""
        out: list[tuple[SensorStats, int, int, int | None, float | None]] = []
        for key in sorted(self.sensors):
            s = self.sensors[key]
            median = s.median_interval_s()
            for day in self.days():
                lo = max(self.start_ns, day * NS_PER_DAY)
                hi = min(self.end_ns, (day + 1) * NS_PER_DAY)
                count = s.per_day.get(day, 0)
                if median is None or median <= 0:
                    out.append((s, day, count, None, None))
                    continue
                expected = max(1, round((hi - lo) / NS_PER_S / median))
                out.append((s, day, count, expected, round(100 * count / expected, 1)))
        return out

    def completeness_csv(self) -> bytes:
        lines = [
            csv_line(
                [
                    "gateway",
                    "sensor",
                    "field",
                    "kind",
                    "day_utc",
                    "readings",
                    "expected",
                    "median_interval_s",
                    "percent",
                ]
            )
        ]
        for s, day, count, expected, pct in self.completeness():
            median = s.median_interval_s()
            lines.append(
                csv_line(
                    [
                        s.gateway,
                        s.sensor,
                        s.field,
                        s.kind,
                        _day(day),
                        str(count),
                        "" if expected is None else str(expected),
                        "" if median is None else repr(median),
                        "" if pct is None else repr(pct),
                    ]
                )
            )
        return "".join(lines).encode()

    def calibration_history(self) -> list[dict[str, object]]:
        return [
            {
                "gateway": gw,
                "sensor": sensor,
                "cal": cal,
                "first_use_utc": rfc3339_ns(u.first_ts),
                "first_use_ns": u.first_ts,
                "last_use_utc": rfc3339_ns(u.last_ts),
                "last_use_ns": u.last_ts,
                "readings": u.readings,
            }
            for (gw, sensor, cal), u in sorted(
                self.calibrations.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[1].first_ts)
            )
        ]


def _day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _chart(stats: ExportStats, s: SensorStats) -> str:
    """One inline SVG chart: each value scaled to its own range (its range is in the legend)."""
    width, height, pad = 1000, 180, 30
    parts = [
        f'<svg viewBox="0 0 {width} {height + 2 * pad}" width="100%" role="img" '
        f'aria-label="{_esc(s.sensor)}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height}" '
        'fill="#fafafa" stroke="#ccc"/>',
    ]
    legend = []
    step = (width - 2 * pad) / CHART_BUCKETS
    for n, (name, ser) in enumerate(sorted(s.series.items())):
        color = _PALETTE[n % len(_PALETTE)]
        filled = [b for b in range(CHART_BUCKETS) if ser.count[b]]
        if not filled:
            continue
        vmin = min(ser.lo[b] for b in filled)
        vmax = max(ser.hi[b] for b in filled)
        span = (vmax - vmin) or 1.0

        def y(v: float, vmin: float = vmin, span: float = span) -> float:
            return pad + height - (v - vmin) / span * height

        # A break in the line where a bucket is empty: missing data stays visible.
        runs: list[list[int]] = []
        for b in filled:
            if runs and runs[-1][-1] == b - 1:
                runs[-1].append(b)
            else:
                runs.append([b])
        for run in runs:
            xs = [pad + (b + 0.5) * step for b in run]
            band = " ".join(f"{x:.1f},{y(ser.hi[b]):.1f}" for x, b in zip(xs, run, strict=True))
            band += " " + " ".join(
                f"{x:.1f},{y(ser.lo[b]):.1f}" for x, b in reversed(list(zip(xs, run, strict=True)))
            )
            parts.append(f'<polygon points="{band}" fill="{color}" fill-opacity="0.15"/>')
            line = " ".join(
                f"{x:.1f},{y(ser.total[b] / ser.count[b]):.1f}"
                for x, b in zip(xs, run, strict=True)
            )
            if len(run) == 1:
                parts.append(
                    f'<circle cx="{xs[0]:.1f}" cy="{line.split(",")[1]}" r="2" fill="{color}"/>'
                )
            else:
                parts.append(
                    f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.5"/>'
                )
        legend.append(
            f'<span style="color:{color}">&#9632; {_esc(name)} ({vmin:.4g} … {vmax:.4g})</span>'
        )
    parts.append(
        f'<text x="{pad}" y="{height + 2 * pad - 8}" font-size="12">'
        f"{_esc(rfc3339_ns(stats.start_ns)[:19])}Z</text>"
        f'<text x="{width - pad}" y="{height + 2 * pad - 8}" font-size="12" '
        f'text-anchor="end">{_esc(rfc3339_ns(stats.end_ns)[:19])}Z</text>'
    )
    parts.append("</svg>")
    return "".join(parts) + '<p class="legend">' + " ".join(legend) + "</p>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:2px 6px}
th{background:#f0f0f0}.ok{background:#dff0d8}.warn{background:#fcf8e3}.bad{background:#f2dede}
.legend span{margin-right:1.5em}
.note{background:#f7f7f7;padding:.6em 1em;border-left:4px solid #888}
code{background:#f3f3f3;padding:0 3px}
"""


def render_html(
    plantation: str,
    stats: ExportStats,
    gaps: list[GapRow],
    batch_summary: list[tuple[str, int, int, int, int]],
    org_key_id: str,
    exported_at: str,
    quarantined: Sequence[tuple[ReadingRow, str]] = (),
) -> bytes:
    """report.html: one self-contained page (inline CSS and SVG, no script, no network).

    ``quarantined`` are ``(row, reason)`` of the readings in data/quarantined.jsonl: listed
    (the first MAX_HTML_GAPS) as not data, counted nowhere else.
    """
    p: list[str] = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>farmtel export: {_esc(plantation)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Sensor history of plantation {_esc(plantation)}</h1>",
        f"<p>Period {_esc(rfc3339_ns(stats.start_ns))} to {_esc(rfc3339_ns(stats.end_ns))} "
        f"(end excluded). Exported {_esc(exported_at)}, sealed with organisation key "
        f"<code>{_esc(org_key_id)}</code>. {stats.readings} readings from "
        f"{len(stats.sensors)} sensors, {len(gaps)} declared gaps.</p>",
        '<h2>What this bundle proves, and what it does not</h2><div class="note">',
        "<p><b>Proves</b> (when <code>farmtel verify</code> passes with the organisation's "
        "pinned key): every reading is exactly what the gateway signed when it sent it, "
        "nothing was added, changed or removed since; every hole in a gateway's sequence "
        "numbers is a declared gap, with its reason; the organisation vouches for the files.</p>"
        "<p><b>Does not prove</b>: that a sensor was accurate, calibrated or placed where "
        "it says; that a gateway's clock was right (see the clock column); that the gateway "
        "itself was not tampered with before it signed; anything about the time outside the "
        "exported sequence range. Nutrient (NPK) values from soil probes are estimates "
        "derived from conductivity, not laboratory analyses.</p></div>",
        "<h2>Sequence ranges and batches per gateway</h2><table><tr><th>gateway</th>"
        "<th>first seq</th><th>last seq</th><th>batches</th><th>signed</th></tr>",
    ]
    for gw, first, last, nb, signed in batch_summary:
        cls = "ok" if signed == nb else "bad"
        p.append(
            f"<tr><td>{_esc(gw)}</td><td>{first}</td><td>{last}</td><td>{nb}</td>"
            f'<td class="{cls}">{signed}</td></tr>'
        )
    p.append("</table><h2>Charts per sensor</h2>")
    for key in sorted(stats.sensors):
        s = stats.sensors[key]
        median = s.median_interval_s()
        p.append(
            f"<h3>{_esc(s.gateway)} / {_esc(s.sensor)} <small>({_esc(s.kind)}, field "
            f"{_esc(s.field)}, {s.readings} readings, every "
            f"{'?' if median is None else f'{median:g}'} s)</small></h3>"
        )
        p.append(_chart(stats, s))
    p.append("<h2>Completeness (% of expected readings per UTC day)</h2>")
    p.append(
        "<p>Expected per day = seconds of the day inside the period / the sensor's median "
        "interval between readings in the period.</p>"
    )
    keys = sorted(stats.sensors)
    table: dict[tuple[tuple[str, str], int], float | None] = {}
    for s, day, _count, _exp, pct in stats.completeness():
        table[((s.gateway, s.sensor), day)] = pct
    days = stats.days()
    p.append("<table><tr><th>day (UTC)</th>")
    p.extend(f"<th>{_esc(gw)}/{_esc(sn)}</th>" for gw, sn in keys)
    p.append("</tr>")
    for day in days[:MAX_HTML_DAYS]:
        p.append(f"<tr><td>{_day(day)}</td>")
        for k in keys:
            pct = table.get((k, day))
            if pct is None:
                p.append("<td></td>")
            else:
                cls = "ok" if pct >= 95 else "warn" if pct >= 50 else "bad"
                p.append(f'<td class="{cls}">{pct:.1f}</td>')
        p.append("</tr>")
    p.append("</table>")
    if len(days) > MAX_HTML_DAYS:
        p.append(f"<p>First {MAX_HTML_DAYS} days shown; all are in completeness.csv.</p>")
    p.append("<h2>Declared gaps</h2>")
    if not gaps:
        p.append("<p>No gaps were declared in this period.</p>")
    else:
        p.append(
            "<table><tr><th>gateway</th><th>sensor</th><th>start (UTC)</th><th>end (UTC)"
            "</th><th>duration s</th><th>reason</th><th>seq skipped</th><th>detail</th></tr>"
        )
        for g in gaps[:MAX_HTML_GAPS]:
            skipped = "" if g.seq is None else f"{g.seq} (+{g.count})"
            p.append(
                f"<tr><td>{_esc(g.gateway)}</td><td>{_esc(g.sensor)}</td>"
                f"<td>{_esc(rfc3339_ns(g.start))}</td><td>{_esc(rfc3339_ns(g.end))}</td>"
                f"<td>{max(0, g.end - g.start) / 1e9:g}</td><td>{_esc(g.reason)}</td>"
                f"<td>{_esc(skipped)}</td><td>{_esc(g.detail)}</td></tr>"
            )
        p.append("</table>")
        if len(gaps) > MAX_HTML_GAPS:
            p.append(f"<p>First {MAX_HTML_GAPS} of {len(gaps)} gaps shown; all in gaps.csv.</p>")
    p.append(_quarantine_section(quarantined))
    p.append("<h2>Calibration versions in use</h2>")
    cal = stats.calibration_history()
    if not cal:
        p.append("<p>No reading carries a calibration version.</p>")
    else:
        p.append(
            "<table><tr><th>gateway</th><th>sensor</th><th>version</th><th>first use</th>"
            "<th>last use</th><th>readings</th></tr>"
        )
        for c in cal:
            p.append(
                f"<tr><td>{_esc(c['gateway'])}</td><td>{_esc(c['sensor'])}</td>"
                f"<td>{_esc(c['cal'])}</td><td>{_esc(c['first_use_utc'])}</td>"
                f"<td>{_esc(c['last_use_utc'])}</td><td>{_esc(c['readings'])}</td></tr>"
            )
        p.append("</table>")
    p.append(
        "<h2>How to check this bundle</h2><p>Run <code>farmtel verify DIR --pubkey "
        "ORG_KEY.pem</code> with the organisation's public key obtained from the "
        "organisation, or follow docs/certification.md to check it without farmtel.</p>"
        "</body></html>\n"
    )
    return "".join(p).encode()


_QUARANTINE_REASONS = {
    "future": "dated ahead of the ingest's clock by more than its allowed skew",
    "before_registration": "dated before the gateway was registered",
}


def _quarantine_section(quarantined: Sequence[tuple[ReadingRow, str]]) -> str:
    """The "Quarantined readings" part of report.html."""
    if not quarantined:
        return ""
    counts: dict[str, int] = {}
    for _, reason in quarantined:
        counts[reason] = counts.get(reason, 0) + 1
    why = "; ".join(
        f"{n} {_esc(_QUARANTINE_REASONS.get(reason, reason))} (<code>{_esc(reason)}</code>)"
        for reason, n in sorted(counts.items())
    )
    p = [
        "<h2>Quarantined readings (not data)</h2>",
        f"<p>{len(quarantined)} reading(s) of these batches are not data: the ingest "
        f"quarantined them because their timestamp cannot be true: {why}. They are in "
        "data/quarantined.jsonl only so that their batch signatures can be checked; they "
        "are not in the readings files, the charts or the completeness figures.</p>",
        "<table><tr><th>gateway</th><th>sensor</th><th>seq</th><th>claimed time (UTC)</th>"
        "<th>reason</th><th>batch</th></tr>",
    ]
    for r, reason in quarantined[:MAX_HTML_GAPS]:
        p.append(
            f"<tr><td>{_esc(r.gateway)}</td><td>{_esc(r.sensor)}</td><td>{r.seq}</td>"
            f"<td>{_esc(rfc3339_ns(r.ts))}</td><td>{_esc(reason)}</td>"
            f"<td>{_esc(r.batch)}</td></tr>"
        )
    p.append("</table>")
    if len(quarantined) > MAX_HTML_GAPS:
        p.append(
            f"<p>First {MAX_HTML_GAPS} of {len(quarantined)} shown; all in "
            "data/quarantined.jsonl.</p>"
        )
    return "".join(p)
