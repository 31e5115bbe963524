"""The column-wise export path (certify.columns, certify.source slices, ExportStats.add_runs)
gives what the row-by-row functions give.

The unit tests feed hand-made InfluxDB series (shared timestamps, missing values, integral
floats, exponent-form floats, calibration text that needs CSV quoting, seqs outside every
batch, a clock that stepped back) to both paths; the last tests compare a real export with
the row functions over the same InfluxDB points.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from certify import source
from certify.columns import BatchSteps, ColumnError, SliceFormatter
from certify.export import _BatchIndex, export_bundle
from certify.orgkey import load_org_key
from certify.report import ExportStats
from certify.rows import BatchRow, ReadingRow, reading_csv_line, reading_json_line
from certify.source import Span
from ingest.influx import InfluxQuery, RawAnswer, Series
from tests.certify.bundles import PERIOD, PLANTATION, Built

NAMES = ["moisture_pct", "temp_c", "wind_ms"]
COLUMNS = ["time", "cal", "clock", "moisture_pct", "seq", "temp_c", "wind_ms"]
T0 = 1_780_000_000 * 10**9


def _batch(gw: str, first: int, last: int, name: str = "") -> BatchRow:
    return BatchRow(name or f"{gw}-b{first}", gw, "boot", 0, first, last, last - first + 1, 0, "")


BATCHES = [
    _batch("gw-a", 0, 9),
    _batch("gw-a", 10, 19),
    # 20..24 in no batch
    _batch("gw-a", 25, 200),
    _batch("gw-b", 0, 3),
    _batch("gw-b", 4, 1000),
]


def _series(kind: str, field: str, gw: str, sensor: str, rows: list[list[Any]]) -> Series:
    tags = {"field": field, "gateway": gw, "plantation": PLANTATION, "sensor": sensor}
    return Series(kind, tags, list(COLUMNS), rows)


def _slice() -> list[Series]:
    """Series that share timestamps, with every case the fast path must get right."""
    odd = [1e-05, -3.5e-07, 1.5e16, 1e22, 0.0, -0.0, 9999999999999998.0, 0.0001, 123.456]
    return [
        # Plain floats, several batches and seqs outside every batch.
        _series(
            "soil",
            "north",
            "gw-a",
            "s-1",
            [[T0 + i * 10**9, None, "synced", 30.0 + i / 7, i, 12.5, None] for i in range(30)],
        ),
        # Same timestamps, another gateway; integral floats come back from JSON as ints.
        _series(
            "soil",
            "north",
            "gw-b",
            "s-1",
            [[T0 + i * 10**9, "v1", "unsynced", 31, i, 11, None] for i in range(0, 30, 3)],
        ),
        # Exponent-form floats (repr and orjson write them differently), odd calibrations.
        _series(
            "weather",
            "south",
            "gw-a",
            "s-2",
            [
                [T0 + i * 10**9 + 5, cal, "synced", None, 100 + i, x, 2.0 + i]
                for i, (x, cal) in enumerate(
                    zip(
                        odd,
                        ["a,b", 'q"x', "", None, "v2", "v2", "line\nbreak", "v3", "v3"],
                        strict=True,
                    )
                )
            ],
        ),
        # A clock that stepped back: seqs not rising with time.
        _series(
            "weather",
            "south",
            "gw-b",
            "s-3",
            [[T0 + i * 10**9, None, "synced", None, 50 - i, 1.25, 3.5] for i in range(20)],
        ),
        # A missing value in one row: row by row.
        _series(
            "soil",
            "south",
            "gw-b",
            "s-4",
            [
                [T0 + i * 10**9, None, "synced", None if i == 3 else 40.5, 60 + i, 8.25, None]
                for i in range(6)
            ],
        ),
        # A text value where a number belongs: row by row, the text left out.
        _series(
            "soil",
            "west",
            "gw-a",
            "s-5",
            [
                [T0 + i * 10**9, None, "synced", "n/a" if i == 2 else 1.5, 150 + i, 2.0, None]
                for i in range(5)
            ],
        ),
        _series("soil", "west", "gw-a", "s-6", []),
    ]


def _expected(series: list[Series]) -> tuple[list[str], list[str], Counter[str], int]:
    """Lines and batch counts from the row functions, as the row-by-row export made them."""
    index = _BatchIndex(BATCHES)
    csv: list[str] = []
    jsonl: list[str] = []
    per_batch: Counter[str] = Counter()
    unbatched = 0
    for s in series:
        ix = {c: i for i, c in enumerate(s.columns)}
        for v in s.values:
            home = index.find(s.tags["gateway"], v[ix["seq"]])
            if home is None:
                unbatched += 1
            else:
                per_batch[home.batch] += 1
            row = ReadingRow(
                PLANTATION,
                s.tags["field"],
                s.tags["gateway"],
                s.tags["sensor"],
                s.name,
                v[0],
                v[ix["clock"]] or "",
                v[ix["seq"]],
                v[ix["cal"]] or None,
                "" if home is None else home.batch,
                {
                    n: float(v[ix[n]])
                    for n in NAMES
                    if v[ix[n]] is not None and not isinstance(v[ix[n]], str | bool)
                },
            )
            csv.append(reading_csv_line(row, NAMES))
            jsonl.append(reading_json_line(row).decode())
    return csv, jsonl, per_batch, unbatched


def _steps() -> dict[str, BatchSteps]:
    return _BatchIndex(BATCHES).steps()


def test_slice_lines_are_the_row_functions_lines() -> None:
    series = _slice()
    got = SliceFormatter(PLANTATION, NAMES, _steps()).format_slice(series)
    csv = b"".join(got.csv).decode().splitlines(keepends=True)
    jsonl = b"".join(got.jsonl).decode().splitlines(keepends=True)
    want_csv, want_json, per_batch, unbatched = _expected(series)
    # "line\nbreak" is one quoted CSV cell over two text lines: compare the whole texts.
    assert sorted(b"".join(got.csv).decode().split("\r\n")) == sorted(
        "".join(want_csv).split("\r\n")
    )
    assert sorted(jsonl) == sorted(want_json)
    assert got.rows == len(want_json) == len(jsonl)
    assert got.per_batch == per_batch
    assert got.unbatched == unbatched
    # Time order; the CSV line and the JSON line of a row are the same reading.
    rows = [orjson.loads(line) for line in jsonl]
    assert [r["ts_ns"] for r in rows] == sorted(r["ts_ns"] for r in rows)
    assert len(csv) >= len(rows)


def test_slice_order_does_not_depend_on_the_order_of_the_series() -> None:
    series = _slice()
    formatter = SliceFormatter(PLANTATION, NAMES, _steps())
    first = formatter.format_slice(series)
    shuffled = list(series)
    random.Random(7).shuffle(shuffled)
    again = SliceFormatter(PLANTATION, NAMES, _steps()).format_slice(shuffled)
    assert first.jsonl == again.jsonl
    assert first.csv == again.csv


def test_a_series_without_integer_seq_or_clock_is_refused() -> None:
    bad = _series("soil", "north", "gw-a", "s-1", [[T0, None, "synced", 1.0, 2.5, 1.0, None]])
    with pytest.raises(ColumnError, match="no integer seq"):
        SliceFormatter(PLANTATION, NAMES, _steps()).format_slice([bad])
    no_clock = Series("soil", bad.tags, ["time", "seq", "temp_c"], [[T0, 1, 2.0]])
    with pytest.raises(ColumnError, match="clock"):
        SliceFormatter(PLANTATION, NAMES, _steps()).format_slice([no_clock])


def test_batch_steps_find_what_the_batch_index_finds() -> None:
    rnd = random.Random(3)
    for _ in range(200):
        rows: list[BatchRow] = []
        seq = rnd.randint(0, 5)
        for _ in range(rnd.randint(0, 8)):
            first = seq + rnd.choice((0, 0, 1, 3)) - rnd.choice((0, 0, 0, 2))  # overlaps too
            last = first + rnd.randint(-1, 6)
            rows.append(_batch("gw", max(0, first), last, f"b{len(rows)}"))
            seq = max(seq, last + 1)
        index = _BatchIndex(rows)
        steps = index.steps().get("gw", BatchSteps([], [None]))
        for q in range(-2, seq + 4):
            assert steps.find(q) is index.find("gw", q), (rows, q)


def test_stats_from_runs_are_the_stats_from_rows() -> None:
    series = _slice()[:4]  # the fast-path series
    half = T0 + 15 * 10**9
    # Two slices cut inside the data, as the export cuts them.
    parts = [
        [Series(s.name, s.tags, s.columns, [v for v in s.values if v[0] < half]) for s in series],
        [Series(s.name, s.tags, s.columns, [v for v in s.values if v[0] >= half]) for s in series],
    ]
    start, end = T0 - 10**9, T0 + 3600 * 10**9
    by_runs = ExportStats(start, end)
    formatter = SliceFormatter(PLANTATION, NAMES, _steps())
    for part in parts:
        by_runs.add_runs(formatter.format_slice(part).runs)
    by_runs.add_stream_windows(["soil", "weather"])

    by_rows = ExportStats(start, end)
    rows = []
    for s in series:
        ix = {c: i for i, c in enumerate(s.columns)}
        for v in s.values:
            vals = {n: float(v[ix[n]]) for n in NAMES if v[ix[n]] is not None}
            row = ReadingRow(
                PLANTATION,
                s.tags["field"],
                s.tags["gateway"],
                s.tags["sensor"],
                s.name,
                v[0],
                v[ix["clock"]],
                v[ix["seq"]],
                v[ix["cal"]] or None,
                "",
                vals,
            )
            rows.append(row)
    rows.sort(key=lambda r: r.ts)
    for r in rows:
        by_rows.add(r)
    # What InfluxDB's count per day and mean/min/max per window give.
    width = by_rows.bucket_s * 10**9
    for kind in ("soil", "weather"):
        days: Counter[tuple[str, str, int]] = Counter()
        windows: dict[tuple[str, str, int], dict[str, list[float]]] = {}
        for r in rows:
            if r.kind != kind:
                continue
            days[(r.gateway, r.sensor, r.ts // 86_400_000_000_000)] += 1
            acc = windows.setdefault((r.gateway, r.sensor, r.ts // width), {})
            for n, x in r.values.items():
                acc.setdefault(n, []).append(x)
        for (gw, sensor, day), count in sorted(days.items()):
            by_rows.add_day_count(gw, sensor, day, count)
        for (gw, sensor, w), acc in sorted(windows.items()):
            stats = {}
            for name, xs in acc.items():
                total = 0.0
                for x in xs:
                    total += x
                stats[name] = (total / len(xs), min(xs), max(xs))
            by_rows.add_window(gw, sensor, w * width, stats)

    assert by_runs.readings == by_rows.readings
    assert by_runs.completeness_csv() == by_rows.completeness_csv()
    assert by_runs.calibration_history() == by_rows.calibration_history()
    assert set(by_runs.sensors) == set(by_rows.sensors)
    for key, want in by_rows.sensors.items():
        mine = by_runs.sensors[key]
        assert (mine.readings, mine.last_ts, mine.intervals_ms, mine.per_day) == (
            want.readings,
            want.last_ts,
            want.intervals_ms,
            want.per_day,
        )
        assert (mine.field, mine.kind) == (want.field, want.kind)
        assert mine.series == want.series


# -- against the real InfluxDB ----------------------------------------------------------


def test_slices_cover_the_period_and_hold_at_most_their_rows(history: dict[str, object]) -> None:
    query = history["query"]
    assert isinstance(query, InfluxQuery)
    kinds = source.reading_kinds(query)
    span = Span(*PERIOD)
    plans = [source.plan_slices(query, PLANTATION, kinds, span, rows) for rows in (1, 7, 10**6)]
    counted = [p.readings for p in plans]
    total = counted[0]
    assert total > 0 and counted == [total] * 3
    assert all(sum(p.counts) == total and len(p.counts) == len(p.slices) for p in plans)
    for rows in (1, 7, 40):
        slices = source.plan_slices(query, PLANTATION, kinds, span, rows).slices
        assert slices[0].start_ns == span.start_ns and slices[-1].end_ns == span.end_ns
        assert all(a.end_ns == b.start_ns for a, b in itertools.pairwise(slices))
        sizes = []
        for series in source.reading_slices(query, PLANTATION, kinds, slices):
            n = sum(len(s.values) for s in series)
            stamps = {v[0] for s in series for v in s.values}
            assert n <= rows or len(stamps) == 1
            sizes.append(n)
        assert sum(sizes) == total


def test_exported_readings_are_the_row_functions_rows(
    history: dict[str, object], built: Built
) -> None:
    """Every stored reading of the period, read point by point and written with the row
    functions, is in the bundle, in the same form, once; and the files are in time order."""
    query = history["query"]
    assert isinstance(query, InfluxQuery)
    kinds = source.reading_kinds(query)
    names = source.value_names(query, kinds)
    index = _BatchIndex(
        source.batches(query, PLANTATION, Span(PERIOD[0] - 10**15, PERIOD[1] + 10**15))
    )
    want_csv: list[str] = []
    want_json: list[str] = []
    for kind in kinds:
        for r in source.readings(query, PLANTATION, kind, Span(*PERIOD)):
            home = index.find(r.gateway, r.seq)
            r.batch = "" if home is None else home.batch
            want_csv.append(reading_csv_line(r, names))
            want_json.append(reading_json_line(r).decode())
    data = Path(built.root) / "data"
    jsonl = data.joinpath("readings.jsonl").read_bytes().decode().splitlines(keepends=True)
    csv = data.joinpath("readings.csv").read_bytes().decode().split("\r\n")[1:-1]
    in_period = [line for line in jsonl if PERIOD[0] <= orjson.loads(line)["ts_ns"] < PERIOD[1]]
    assert sorted(in_period) == sorted(want_json)
    csv_in_period = [line for line in csv if PERIOD[0] <= int(line.split(",")[6]) < PERIOD[1]]
    assert sorted(csv_in_period) == sorted(line.removesuffix("\r\n") for line in want_csv)
    stamps = [orjson.loads(line)["ts_ns"] for line in in_period]
    assert stamps == sorted(stamps)


class _RowLimited(InfluxQuery):
    """An InfluxDB with ``[http] max-row-limit = 5``: non-chunked answers are cut short
    (it marks such a series ``partial``; the rows are simply missing)."""

    def parse(self, raw: RawAnswer) -> list[Series]:
        series = super().parse(raw)
        if any("plantation" in s.tags for s in series):  # a slice: SELECT * ... GROUP BY *
            left = 5
            for s in series:
                s.values = s.values[:left]
                left -= len(s.values)
        return series


def test_an_answer_cut_short_by_the_server_fails_the_export(
    history: dict[str, object], tmp_path: Path
) -> None:
    query = history["query"]
    assert isinstance(query, InfluxQuery)
    limited = _RowLimited(query.settings)
    reg = {"organisation": "test", "gateways": []}
    org = load_org_key(Path(str(history["org"])))
    with pytest.raises(source.SourceError, match="max-row-limit"):
        export_bundle(limited, PLANTATION, Span(*PERIOD), tmp_path / "b", org, reg)
    assert not (tmp_path / "b").exists()
