"""`query history` reads hourly rollups (retention policy farmtel_1h) checked against the raw
counts of each day, recomputes days that late data changed, and gives the same rows as the
computation from the raw data (ingest/queries.py history)."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.influx import InfluxQuery, InfluxRejected, InfluxSettings, make_writer
from ingest.line_protocol import encode_point
from ingest.queries import ROLLUP_RP, HistoryRow, QueryInputError, TimeRange, history
from tests.support.procs import run_cli

P = "hlj-roll-001"
HOUR_NS = 3_600 * 10**9
DAY_NS = 24 * HOUR_NS


def _line(sensor: str, ts: int, seq: int, field: str = "north", **values: float) -> str:
    return encode_point(
        "soil",
        {"plantation": P, "field": field, "gateway": "gw-1", "sensor": sensor},
        {**values, "seq": seq, "clock": "synced"},
        ts,
    )


def _write(stack: Any, db: str, lines: list[str]) -> None:
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=db))
    writer.write("\n".join(lines).encode())
    writer.close()


def _rows(rows: list[HistoryRow]) -> list[tuple[Any, ...]]:
    return [
        (r.measurement, r.gateway, r.sensor, r.window_start_ns, r.value, r.mean, r.min, r.max)
        for r in rows
    ]


def _data(now: int) -> list[str]:
    """Ten days, a reading every 20 min (odd values: means are not round), two sensors;
    soil-b moved from field north to south mid-way through an hour, and sends ec only on
    some readings."""
    lines = []
    start = now - 10 * DAY_NS
    for n, ts in enumerate(range(start, now, 20 * 60 * 10**9)):
        lines.append(_line("soil-a", ts, n, moisture_pct=20 + (n * 7 % 13) / 3, temp_c=n % 5))
        b = {"moisture_pct": 40 + (n * 3 % 11) / 7}
        if n % 4 == 0:
            b["ec_us_cm"] = 400.0 + n % 9
        field = "north" if ts < start + 5 * DAY_NS + 30 * 60 * 10**9 else "south"
        lines.append(_line("soil-b", ts + 1, n, field=field, **b))
    return lines


def _span(now: int, days: int = 9) -> TimeRange:
    end = datetime.fromtimestamp(now / 1e9, UTC) - timedelta(minutes=13, seconds=7)
    return TimeRange(end - timedelta(days=days, minutes=41), end)


def _rollup_points(q: InfluxQuery) -> int:
    series = q.query(f'SELECT count("count_seq") FROM "{ROLLUP_RP}"."soil" WHERE "plantation" = $p',
                     params={"p": P})  # fmt: skip
    return sum(int(s.values[0][1]) for s in series)


@pytest.mark.integration
def test_rollups_give_the_raw_answer_and_follow_late_data(stack: Any, influx_db: str) -> None:
    now = time.time_ns() // 60_000_000_000 * 60_000_000_000
    _write(stack, influx_db, _data(now))
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    span = _span(now)
    direct = _rows(history(q, P, span, "1h", rollups=False))
    assert direct and {r[4] for r in direct} == {"moisture_pct", "temp_c", "ec_us_cm"}
    said: list[str] = []
    first = _rows(history(q, P, span, "1h", progress=said.append, warn=said.append))
    assert first == direct
    assert any("computing" in s and "days of hourly rollups" in s for s in said), said
    assert _rollup_points(q) > 0
    said.clear()
    again = _rows(history(q, P, span, "1h", progress=said.append, warn=said.append))
    assert again == direct
    assert not any("days of hourly rollups" in s for s in said)  # read, not recomputed

    # A gateway that was offline delivers a reading into a day the rollups already hold.
    late_ts = now - 6 * DAY_NS + 17 * 60 * 10**9
    _write(stack, influx_db, [_line("soil-a", late_ts, 99_999, moisture_pct=1000.0, temp_c=-40)])
    after = _rows(history(q, P, span, "1h"))
    assert after == _rows(history(q, P, span, "1h", rollups=False))
    assert after != direct
    assert any(r[2] == "soil-a" and r[4] == "moisture_pct" and r[7] == 1000.0 for r in after)


@pytest.mark.integration
def test_rollups_built_for_one_value_serve_all_values(stack: Any, influx_db: str) -> None:
    now = time.time_ns() // 60_000_000_000 * 60_000_000_000
    _write(stack, influx_db, _data(now))
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    span = _span(now)
    one = _rows(history(q, P, span, "1h", value="temp_c"))
    assert one == _rows(history(q, P, span, "1h", value="temp_c", rollups=False))
    assert {r[4] for r in one} == {"temp_c"}
    everything = _rows(history(q, P, span, "1h"))
    assert everything == _rows(history(q, P, span, "1h", rollups=False))
    assert _rows(history(q, P, span, "1h", sensor="soil-b", value="ec_us_cm")) == _rows(
        history(q, P, span, "1h", sensor="soil-b", value="ec_us_cm", rollups=False)
    )
    with pytest.raises(QueryInputError, match="the values stored are ec_us_cm, moisture_pct"):
        history(q, P, span, "1h", value="no_such_value")


@pytest.mark.integration
@pytest.mark.parametrize("every", ["1d", "3h"])
def test_longer_windows_merge_hours_by_count(stack: Any, influx_db: str, every: str) -> None:
    now = time.time_ns() // 60_000_000_000 * 60_000_000_000
    _write(stack, influx_db, _data(now))
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    span = _span(now)
    direct = _rows(history(q, P, span, every, rollups=False))
    for _ in range(2):  # built, then read
        rolled = _rows(history(q, P, span, every))
        assert [r[:5] for r in rolled] == [r[:5] for r in direct]
        for a, b in zip(rolled, direct, strict=True):
            assert math.isclose(a[5], b[5], rel_tol=1e-12), (a, b)
            assert a[6:] == b[6:]


@pytest.mark.integration
def test_raw_data_and_its_field_keys_stay_as_they_were(stack: Any, influx_db: str) -> None:
    now = time.time_ns() // 60_000_000_000 * 60_000_000_000
    _write(stack, influx_db, _data(now))
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    count = 'SELECT count("seq") FROM "soil" WHERE "plantation" = $p'
    before = q.query(count, params={"p": P})[0].values
    keys = q.query('SHOW FIELD KEYS FROM "soil"')[0].values
    series = q.query("SHOW SERIES")[0].values
    history(q, P, _span(now), "1h")
    assert _rollup_points(q) > 0
    assert q.query(count, params={"p": P})[0].values == before
    assert q.query('SHOW FIELD KEYS FROM "soil"')[0].values == keys  # no mean_... here
    assert q.query("SHOW SERIES")[0].values == series  # the raw series' keys, no new ones
    policies = q.query(f'SHOW RETENTION POLICIES ON "{influx_db}"')[0]
    default = {row[0]: row[-1] for row in policies.values}
    assert default[ROLLUP_RP] is False and True in default.values()


class _ReadOnly(InfluxQuery):
    """A user allowed to read only (fault injection): every rollup write is refused."""

    def write(self, lines: bytes, rp: str) -> None:
        raise InfluxRejected("InfluxDB answered 403 to a write: not authorized", 403)


@pytest.mark.integration
def test_refused_rollup_writes_still_give_the_whole_answer(stack: Any, influx_db: str) -> None:
    now = time.time_ns() // 60_000_000_000 * 60_000_000_000
    _write(stack, influx_db, _data(now))
    settings = InfluxSettings(url=stack.influx_url, database=influx_db)
    span = _span(now)
    direct = _rows(history(InfluxQuery(settings), P, span, "1h", rollups=False))
    warned: list[str] = []
    got = _rows(history(_ReadOnly(settings), P, span, "1h", warn=warned.append))
    assert got == direct
    assert len(warned) == 1 and "rollups not stored" in warned[0] and "403" in warned[0]


@pytest.mark.integration
def test_v2_api_and_odd_windows_compute_from_the_raw_data(stack: Any, influx_db: str) -> None:
    now = time.time_ns() // 60_000_000_000 * 60_000_000_000
    _write(stack, influx_db, _data(now))
    span = _span(now, days=2)
    v2 = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db, api="v2"))
    v1 = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    assert _rows(history(v2, P, span, "1h")) == _rows(history(v1, P, span, "1h", rollups=False))
    history(v1, P, span, "90m")  # not whole hours: no rollups either
    history(v1, P, TimeRange(span.end - timedelta(minutes=50), span.end), "1h")  # < 1 full hour
    names = [
        row[0] for s in v1.query(f'SHOW RETENTION POLICIES ON "{influx_db}"') for row in s.values
    ]
    assert ROLLUP_RP not in names


@pytest.mark.integration
def test_cli_csv_and_json_stream_the_same_rows(stack: Any, influx_db: str) -> None:
    now = time.time_ns() // HOUR_NS * HOUR_NS
    # 7,000 hours x 3 values = 21,000 rows: more than one slice of the CLI's output.
    lines = [
        _line("soil-a", now - k * HOUR_NS - 60 * 10**9, k, moisture_pct=k / 7, temp_c=1.5, ph=6.0)
        for k in range(7000)
    ]
    _write(stack, influx_db, lines)
    args = ["query", "history", "--plantation", P, "--since", "300d", "--every", "1h", "--utc",
            "--url", stack.influx_url, "--database", influx_db]  # fmt: skip
    res = run_cli([*args, "-f", "csv"], timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("window,gateway") == 1
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(table) == 21_000
    js = run_cli([*args, "-f", "json", "--no-rollups"], timeout=120)
    assert js.returncode == 0, js.stderr
    lines_out = [json.loads(x) for x in js.stdout.splitlines()]
    assert [
        (r["window"], r["sensor"], r["value"], r["mean"], r["min"], r["max"]) for r in lines_out
    ] == [
        (r["window"], r["sensor"], r["value"], float(r["mean"]), float(r["min"]), float(r["max"]))
        for r in table
    ]


@pytest.mark.integration
def test_cli_csv_quotes_a_value_name_that_needs_it(stack: Any, influx_db: str) -> None:
    now = time.time_ns()
    point = encode_point(
        "soil",
        {"plantation": P, "field": "north", "gateway": "gw-1", "sensor": "soil-a"},
        {"odd,name": 1.5, "seq": 1},
        now - 60 * 10**9,
    )
    _write(stack, influx_db, [point])
    res = run_cli(["query", "history", "--plantation", P, "--since", "2h", "-f", "csv",
                   "--url", stack.influx_url, "--database", influx_db])  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [(r["value"], r["mean"]) for r in rows] == [("odd,name", "1.5")]


def test_rollup_option_is_a_switch() -> None:
    res = run_cli(["query", "history", "--plantation", P, "--since", "1h", "--rollups=maybe",
                   "--url", "http://127.0.0.1:9"])  # fmt: skip
    assert res.returncode == 2
    assert "--rollups" in res.stderr


def test_stale_days_are_recomputed_in_bounded_runs() -> None:
    from ingest.queries import DAY_NS as DAY
    from ingest.queries import ROLLUP_DAYS_PER_QUERY, _runs

    wanted = [*range(70), 72, 73, 80]
    runs = [(a // DAY, b // DAY) for a, b in _runs([d * DAY for d in wanted])]
    assert [d for a, b in runs for d in range(a, b + 1)] == wanted
    assert all(b - a < ROLLUP_DAYS_PER_QUERY for a, b in runs)
    assert runs[-2:] == [(72, 73), (80, 80)] and len(runs) == -(-70 // ROLLUP_DAYS_PER_QUERY) + 2
