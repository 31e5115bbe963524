"""`farmtel query ...` on the real InfluxDB, and its answers to arguments that make no sense."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pytest

from devstack.stack import free_port
from ingest.influx import InfluxSettings, make_writer
from ingest.line_protocol import encode_point
from tests.support.procs import run_cli

P = "hlj-q-001"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--since", "abc"], "--since 'abc' is not a duration"),
        (["--since", "0h"], "is not a duration"),
        (["--from", "2026-05-02", "--to", "2026-05-01"], "must be after --from"),
        (["--from", "yesterday"], "--from 'yesterday' is not a date or time"),
        (["--since", "24h", "--from", "2026-05-01"], "either --since or --from/--to"),
        ([], "give a time range"),
        (["--since", "10w", "--every", "1s"], "windows"),
        (["--since", "1h", "--every", "hourly"], "--every 'hourly' is not a duration"),
        (["--since", "1h", "--sensor", "Soil 1"], "--sensor 'Soil 1' must match"),
        (["--since", "1h", "--field", "Temp;DROP"], "--value"),
    ],
)
def test_history_arguments_that_make_no_sense(args: list[str], needle: str) -> None:
    res = run_cli(["query", "history", "--plantation", P, "--url", "http://127.0.0.1:9", *args])
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in res.stderr


def test_bad_plantation_id_is_refused() -> None:
    res = run_cli(["query", "latest", "--plantation", "HLJ 1", "--url", "http://127.0.0.1:9"])
    assert res.returncode == 2
    assert "--plantation 'HLJ 1' must match" in res.stderr


def test_unreachable_influxdb_is_a_clear_error() -> None:
    port = free_port()
    res = run_cli(["query", "latest", "--plantation", P, "--url", f"http://127.0.0.1:{port}"])
    assert res.returncode == 1
    assert f"127.0.0.1:{port}" in res.stderr and "error:" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.integration
def test_latest_and_history_on_real_data(stack: Any, influx_db: str) -> None:
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=influx_db))
    now = time.time_ns()
    lines = []
    for i in range(60):  # one reading a minute for an hour, two sensors
        ts = now - (59 - i) * 60_000_000_000
        for sensor, base in (("soil-a", 20.0), ("soil-b", 40.0)):
            lines.append(
                encode_point(
                    "soil",
                    {"plantation": P, "field": "north", "gateway": "gw-1", "sensor": sensor},
                    {"moisture_pct": base + i, "temp_c": -2.5, "seq": i, "clock": "synced"},
                    ts,
                )
            )
    # Another plantation's data must never show up.
    lines.append(
        encode_point(
            "soil",
            {"plantation": "other", "field": "x", "gateway": "gw-9", "sensor": "soil-a"},
            {"moisture_pct": 99.0},
            now,
        )
    )
    writer.write("\n".join(lines).encode())
    env_args = ["--url", stack.influx_url, "--database", influx_db]

    res = run_cli(["query", "latest", "--plantation", P, *env_args, "--format", "json"])
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["sensor"] for r in rows] == ["soil-a", "soil-b"]
    assert rows[0]["values"] == {"moisture_pct": 79.0, "temp_c": -2.5}
    assert rows[1]["values"]["moisture_pct"] == 99.0
    assert rows[0]["clock"] == "synced" and rows[0]["gateway"] == "gw-1"

    table = run_cli(["query", "latest", "--plantation", P, *env_args])
    assert table.returncode == 0
    assert "soil-a" in table.stdout and "moisture_pct=79" in table.stdout

    res = run_cli(
        [
            "query",
            "history",
            "--plantation",
            P,
            "--sensor",
            "soil-a",
            "--field",
            "moisture_pct",
            "--since",
            "3h",
            "--every",
            "1h",
            *env_args,
            "--format",
            "csv",
            "--utc",
        ]
    )
    assert res.returncode == 0, res.stderr
    hist = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {h["sensor"] for h in hist} == {"soil-a"}
    assert {h["value"] for h in hist} == {"moisture_pct"}
    assert min(float(h["min"]) for h in hist) == 20.0
    assert max(float(h["max"]) for h in hist) == 79.0
    # Means are weighted by the windows' counts: together they give the overall mean.
    assert sum(1 for _ in hist) in (1, 2)

    res = run_cli(
        [
            "query",
            "history",
            "--plantation",
            P,
            "--since",
            "2h",
            "--every",
            "2h",
            *env_args,
            "--format",
            "json",
        ]
    )
    assert res.returncode == 0, res.stderr
    hist_all = [json.loads(line) for line in res.stdout.splitlines()]
    values = {(h["sensor"], h["value"]) for h in hist_all}
    assert values == {
        ("soil-a", "moisture_pct"),
        ("soil-a", "temp_c"),
        ("soil-b", "moisture_pct"),
        ("soil-b", "temp_c"),
    }
    assert all(h["min"] == -2.5 for h in hist_all if h["value"] == "temp_c")


@pytest.mark.integration
def test_latest_merges_values_sent_in_separate_messages(stack: Any, influx_db: str) -> None:
    """A weather station sends MDA (temperature) and MWV (wind) as separate readings: the
    latest row shows the last value of each, not only those of the newest message."""
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=influx_db))
    now = time.time_ns()
    tags = {"plantation": P, "field": "north", "gateway": "gw-1", "sensor": "wx"}
    writer.write(
        "\n".join(
            [
                encode_point("weather", tags, {"air_temp_c": 3.5, "seq": 1}, now - 20_000_000_000),
                encode_point("weather", tags, {"air_temp_c": 4.5, "seq": 2}, now - 10_000_000_000),
                encode_point("weather", tags, {"wind_ms": 2.25, "seq": 3}, now - 5_000_000_000),
            ]
        ).encode()
    )
    res = run_cli(
        [
            "query",
            "latest",
            "--plantation",
            P,
            "--url",
            stack.influx_url,
            "--database",
            influx_db,
            "--format",
            "json",
            "--utc",
        ]
    )
    assert res.returncode == 0, res.stderr
    (row,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert row["sensor"] == "wx"
    assert row["values"] == {"air_temp_c": 4.5, "wind_ms": 2.25}
