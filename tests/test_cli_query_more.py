"""`farmtel query summary|gaps` and `query history --plot/--png` on real InfluxDB data."""

from __future__ import annotations

import csv
import io
import json
import struct
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingest.alerts import Alert
from ingest.charts import ChartSeries, braille_chart
from ingest.influx import InfluxSettings, make_writer
from ingest.line_protocol import encode_point
from tests.support.cli_inproc import invoke as run_cli

P = "hlj-qm-001"


def _seed(stack: Any, db: str) -> int:
    """Two sensors, one reading a minute for 2 h; one gap; another plantation's data."""
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=db))
    now = time.time_ns()
    lines = []
    for i in range(120):
        ts = now - (119 - i) * 60_000_000_000
        for sensor, base in (("soil-a", 20.0), ("soil-b", 40.0)):
            lines.append(
                encode_point(
                    "soil",
                    {"plantation": P, "field": "north", "gateway": "gw-1", "sensor": sensor},
                    # A saw tooth, so the chart has slopes both ways.
                    {"moisture_pct": base + (i % 30), "temp_c": 5.0, "seq": i, "clock": "synced"},
                    ts,
                )
            )
    gap_start = now - 50 * 60_000_000_000
    lines.append(
        encode_point(
            "farmtel_gap",
            {"plantation": P, "gateway": "gw-1", "sensor": "soil-b", "reason": "sensor_silent"},
            {
                "end_ns": gap_start + 300_000_000_000,
                "duration_s": 300.0,
                "detail": "no answer",
                "batch": "b1",
            },
            gap_start,
        )
    )
    lines.append(
        Alert("frost", "critical", "firing", P, "gw-1", "soil-a", "temp_c", -1.0, "<", 0.0,
              600.0, now - 600 * 10**9, now).line()
    )  # fmt: skip
    lines.append(
        encode_point(
            "soil",
            {"plantation": "other", "field": "x", "gateway": "gw-9", "sensor": "soil-a"},
            {"moisture_pct": 999.0},
            now,
        )
    )
    writer.write("\n".join(lines).encode())
    return now


@pytest.mark.integration
def test_summary_gaps_and_charts_on_real_data(stack: Any, influx_db: str, tmp_path: Path) -> None:
    seeded_ns = _seed(stack, influx_db)
    db = ["--url", stack.influx_url, "--database", influx_db]

    res = run_cli(["query", "summary", "--plantation", P, "--since", "3h", *db, "-f", "json"])
    assert res.returncode == 0, res.stderr
    rows = {(r["sensor"], r["value"]): r for r in map(json.loads, res.stdout.splitlines())}
    assert set(rows) == {
        ("soil-a", "moisture_pct"),
        ("soil-a", "temp_c"),
        ("soil-b", "moisture_pct"),
        ("soil-b", "temp_c"),
    }
    a = rows[("soil-a", "moisture_pct")]
    assert (a["count"], a["min"], a["max"]) == (120, 20.0, 49.0)
    assert a["mean"] == pytest.approx(34.5)
    assert rows[("soil-b", "temp_c")]["mean"] == 5.0

    res = run_cli(
        [
            "query",
            "summary",
            "--plantation",
            P,
            "--sensor",
            "soil-b",
            "--field",
            "moisture_pct",
            *db,
            "--format",
            "csv",
        ]
    )  # default range: 24h
    assert res.returncode == 0, res.stderr
    [only] = list(csv.DictReader(io.StringIO(res.stdout)))
    assert (only["sensor"], only["value"]) == ("soil-b", "moisture_pct")
    assert (float(only["min"]), float(only["max"])) == (40.0, 69.0)
    table = run_cli(["query", "summary", "--plantation", P, *db, "--since", "1h"])
    assert table.returncode == 0 and "soil-a" in table.stdout and "mean" in table.stdout

    res = run_cli(["query", "gaps", "--plantation", P, "--since", "2h", *db, "-f", "json", "--utc"])
    assert res.returncode == 0, res.stderr
    [gap] = [json.loads(line) for line in res.stdout.splitlines()]
    assert (gap["sensor"], gap["reason"], gap["duration_s"]) == ("soil-b", "sensor_silent", 300.0)
    assert gap["start"].endswith("+00:00")
    none = run_cli(["query", "gaps", "--plantation", P, "--sensor", "soil-a", *db])
    assert none.returncode == 0 and "no gaps" in none.stderr
    start = datetime.fromtimestamp(time.time() - 3 * 3600, UTC).isoformat()
    by_gateway = run_cli(
        ["query", "gaps", "--plantation", P, "--gateway", "gw-1", "--from", start, *db]
    )
    assert by_gateway.returncode == 0 and "sensor_silent" in by_gateway.stdout
    other = run_cli(["query", "gaps", "--plantation", P, "--gateway", "gw-2", "--since", "3h", *db])
    assert other.returncode == 0 and other.stdout == ""

    # --from/--to and --utc on the summary: a window holding only the first 30 minutes.
    t0 = datetime.fromtimestamp(seeded_ns / 1e9 - 119.5 * 60, UTC)
    res = run_cli(
        ["query", "summary", "--plantation", P, "--field", "moisture_pct", "--sensor", "soil-a",
         "--from", t0.isoformat(), "--to", (t0 + timedelta(minutes=30)).isoformat(), "--utc",
         *db, "-f", "json"]
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    [first] = [json.loads(line) for line in res.stdout.splitlines()]
    assert (first["count"], first["min"], first["max"]) == (30, 20.0, 49.0)

    alerts = run_cli(
        ["alerts", "list", "--plantation", P, "--since", "3h", "--utc", *db, "-f", "csv"]
    )
    assert alerts.returncode == 0, alerts.stderr
    [alert] = list(csv.DictReader(io.StringIO(alerts.stdout)))
    assert (alert["rule"], alert["state"], alert["condition"]) == ("frost", "firing", "temp_c < 0")
    assert alert["time"].endswith("+00:00") and alert["since"].endswith("+00:00")

    plot = run_cli(
        [
            "query",
            "history",
            "--plantation",
            P,
            "--field",
            "moisture_pct",
            "--since",
            "2h",
            "--every",
            "5m",
            "--plot",
            *db,
        ]
    )
    assert plot.returncode == 0, plot.stderr
    assert "gw-1/soil-a moisture_pct (mean)" in plot.stdout
    # The field (plot) a manager reads in `query latest` is not a value: say what values are.
    plot_name = run_cli(
        ["query", "history", "--plantation", P, "--value", "north", "--since", "2h", *db]
    )
    assert plot_name.returncode == 2
    assert plot_name.stderr.strip() == (
        "error: --value 'north': no reading holds a value of that name; the values stored "
        "are moisture_pct, temp_c"
    )
    summary_of_plot = run_cli(
        ["query", "summary", "--plantation", P, "--field", "north", "--since", "2h", *db]
    )
    assert summary_of_plot.returncode == 2
    assert "error: --value 'north': no reading holds a value of that name" in (
        summary_of_plot.stderr
    )
    assert "gw-1/soil-b moisture_pct (mean)" in plot.stdout
    assert sum(1 for ch in plot.stdout if 0x2801 <= ord(ch) <= 0x28FF) > 50

    png = tmp_path / "chart.png"
    res = run_cli(
        [
            "query",
            "history",
            "--plantation",
            P,
            "--since",
            "2h",
            "--every",
            "10m",
            "--png",
            str(png),
            *db,
            "-f",
            "csv",
        ]
    )
    assert res.returncode == 0, res.stderr
    assert "window,gateway" in res.stdout  # the table still comes out
    width, height, distinct = _png_facts(png.read_bytes())
    assert (width, height) == (1000, 500)
    assert distinct > 10, "the image is blank"

    bad = run_cli(
        ["query", "history", "--plantation", P, "--since", "2h", "--png", "/nonexistent/x.png", *db]
    )
    assert bad.returncode == 1 and "cannot write the image" in bad.stderr


def _png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, number of distinct pixel rows) of an 8-bit RGB/RGBA PNG.

    Distinct rows of raw scanlines are a cheap, dependency-free measure of "not blank": a
    blank image has one.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height
    rows = {raw[i * stride + 1 : (i + 1) * stride] for i in range(height)}
    return width, height, len(rows)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["summary", "--since", "abc"], "--since 'abc' is not a duration"),
        (["summary", "--since", "1h", "--field", "Bad;"], "--value"),
        (["summary", "--since", "1h", "--sensor", "Bad Id"], "--sensor 'Bad Id' must match"),
        (["gaps", "--from", "2026-05-02", "--to", "2026-05-01"], "must be after --from"),
        (["gaps", "--since", "1h", "--gateway", "GW 1"], "--gateway 'GW 1' must match"),
        (["summary", "--format", "xml"], "xml"),
    ],
)
def test_bad_arguments(args: list[str], needle: str) -> None:
    res = run_cli(["query", args[0], "--plantation", P, "--url", "http://127.0.0.1:9", *args[1:]])
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in res.stderr


def test_braille_chart_shape() -> None:
    chart = braille_chart(
        ChartSeries("x", [(i * 1_000_000_000, float(i % 7)) for i in range(100)]),
        width=40,
        height=6,
        utc=True,
    )
    lines = chart.splitlines()
    assert lines[0] == "x"
    assert len(lines) == 1 + 6 + 2  # title, rows, axis, time labels
    assert lines[1].startswith("6 ┤") and lines[6].startswith("0 ┤")
    assert "1970-01-01 00:00" in lines[-1]
    single = braille_chart(ChartSeries("one", [(5, 1.0)]), width=10, height=2)
    assert any(0x2801 <= ord(c) <= 0x28FF for c in single)
