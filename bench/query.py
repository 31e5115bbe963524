"""Manager queries on a year of data: ``farmtel query latest`` and a 1-year hourly history.

Run: ``.venv/bin/python bench/query.py [--scale 0.1]``. Prints a table and writes
``bench/results/query.json``.

The data: one plantation, 5 gateways x 10 sensors = 50 sensors, a reading (3 values + seq
and clock, like the ingest writes) per sensor per minute for the year up to now: 26.3M
points at ``--scale 1``. ``--scale 0.1`` keeps the year and the 50 sensors but writes one
reading per 10 minutes (2.6M points); the factor is printed and stored. Points are written
with ingest/line_protocol.py (series heads cached) to ``/write`` in 5,000-point batches by 2
clients; the write rate is reported too.

Each query runs ``--repeat`` times as the manager runs it: the CLI as a new process (wall
time, Python start-up included) and, for comparison, the same InfluxQL straight over HTTP.

The year of hourly windows for 50 sensors runs four ways: ``--no-rollups`` (every window
computed by InfluxDB from the raw points; the InfluxQL column shows the statement as it was
before, ``mean(*)``, and as it is now, the value fields only), the first query with rollups
(builds the hourly rollups of retention policy farmtel_1h), the next ones (read them), and
one after a gateway delivered a week of late readings (those days are recomputed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import Influx

from ingest.line_protocol import encode_series

YEAR_S = 365 * 86_400
GATEWAYS = 5
SENSORS_PER_GATEWAY = 10
DB = "farmtel"
BATCH = 5_000


def write_year(influx: Influx, scale: float, clients: int = 2) -> dict[str, Any]:
    step_s = round(60 / scale)
    now_s = int(time.time()) // 60 * 60
    start_s = now_s - YEAR_S
    heads = [
        encode_series(
            "soil",
            {
                "plantation": harness.PLANTATION,
                "field": f"f{g}",
                "gateway": f"gw-{g}",
                "sensor": f"soil-{g * SENSORS_PER_GATEWAY + s}",
            },
        )
        for g in range(GATEWAYS)
        for s in range(SENSORS_PER_GATEWAY)
    ]
    steps = range(start_s, now_s + 1, step_s)
    total = len(steps) * len(heads)
    influx.create(DB)
    lock = threading.Lock()
    chunks = iter(range(0, len(steps), max(1, BATCH // len(heads))))
    errors: list[int] = []

    def worker() -> None:
        mine = Influx(influx.url)
        while True:
            with lock:
                first = next(chunks, None)
            if first is None:
                return
            lines = []
            for n in range(first, min(first + BATCH // len(heads), len(steps))):
                t = steps[n]
                for h, head in enumerate(heads):
                    seq = n
                    lines.append(
                        f"{head} moisture_pct={20 + (t // 3600 + h) % 30 + 0.5!r},"
                        f"temp_c={(t // 600 + h) % 35 - 5 + 0.25!r},ec_us_cm={400.0 + h!r},"
                        f'seq={seq}i,clock="synced" {t * 1_000_000_000}'
                    )
            status = mine.write(DB, "\n".join(lines).encode())
            if status != 204:
                errors.append(status)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    return {
        "scale": scale,
        "step_s": step_s,
        "sensors": len(heads),
        "points": total,
        "points_at_scale_1": len(heads) * (YEAR_S // 60 + 1),
        "write_s": round(elapsed, 1),
        "write_points_per_s": round(total / elapsed),
        "http_errors": errors[:10],
    }


def late_week(influx: Influx, scale: float) -> None:
    """gw-0 comes back after a week offline: a reading per sensor between the stored ones,
    for the days 9 to 2 ago, written now (late for any rollup of those days)."""
    step_s = round(60 / scale)
    now_s = int(time.time()) // 60 * 60
    lines = []
    for s in range(SENSORS_PER_GATEWAY):
        head = encode_series(
            "soil",
            {"plantation": harness.PLANTATION, "field": "f0", "gateway": "gw-0",
             "sensor": f"soil-{s}"},
        )  # fmt: skip
        for t in range(now_s - 9 * 86_400 + step_s // 2, now_s - 2 * 86_400, step_s):
            lines.append(
                f"{head} moisture_pct=99.5,temp_c=-9.75,ec_us_cm=1.0,seq={t}i,"
                f'clock="synced" {t * 1_000_000_000}'
            )
    for i in range(0, len(lines), BATCH):
        status = influx.write(DB, "\n".join(lines[i : i + BATCH]).encode())
        if status != 204:
            raise SystemExit(f"late week: write answered {status}")


def timed(argv: list[str], repeat: int) -> dict[str, Any]:
    """Run the CLI ``repeat`` times; a failed run is recorded with its error, not retried."""
    times = []
    out = b""
    error = ""
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(argv, cwd=harness.ROOT, capture_output=True, timeout=600)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            error = proc.stderr.decode(errors="replace").strip()[-500:]
            break
        out = proc.stdout
    return {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "runs_s": [round(x, 3) for x in times],
        "output_lines": out.count(b"\n"),
        "error": error,
    }


def timed_http(influx: Influx, q: str, repeat: int) -> dict[str, Any]:
    """Bare InfluxQL; a query slower than 20 s is not repeated."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        influx.query(DB, q)
        times.append(time.perf_counter() - t)
        if times[-1] > 20:
            break
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.1, help="readings per sensor-minute (0..1]")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not 0 < args.scale <= 1:
        ap.error(f"--scale {args.scale} must be in (0, 1]: 1 is one reading per sensor per minute")
    if not 1 <= args.repeat <= 20:
        ap.error(f"--repeat {args.repeat} must be 1..20")
    result: dict[str, Any] = {"machine_before": harness.machine(), "args": vars(args)}
    with harness.private_stack() as (info, work):
        influx = Influx(info.influx_url)
        data = write_year(influx, args.scale)
        print(
            f"wrote {data['points']:,} points ({data['sensors']} sensors, "
            f"one per {data['step_s']} s "
            f"for a year; scale factor {args.scale} of {data['points_at_scale_1']:,}) in "
            f"{data['write_s']} s = {data['write_points_per_s']:,} points/s"
        )
        cli = [harness.PYTHON, "-m", "cli", "query"]
        # The CLI's [influxdb] timeout is 10 s by default; 300 s here so that a slow query
        # shows its time instead of failing.
        cfg = work / "query.toml"
        cfg.write_text(
            harness.toml({"influxdb": {"url": info.influx_url, "database": DB, "timeout": 300}})
        )
        common = ["--plantation", harness.PLANTATION, "--config", str(cfg)]
        year_hourly = [*cli, "history", *common, "--since", "365d", "--every", "1h"]
        # What `query latest` asks (ingest/queries.py): the last 7 days first.
        latest_q = (
            f"SELECT * FROM /.*/ WHERE \"plantation\" = '{harness.PLANTATION}'{{span}} "
            'GROUP BY "field", "gateway", "sensor" ORDER BY time DESC LIMIT 1'
        )
        where = f"\"plantation\" = '{harness.PLANTATION}' AND time > now() - 365d"
        group = 'GROUP BY time(3600s), "gateway", "sensor" fill(none)'
        star = f"SELECT mean(*), min(*), max(*) FROM /.*/ WHERE {where} {group}"
        values = ", ".join(
            f'{a}("{v}") AS "{a}_{v}"'
            for v in ("ec_us_cm", "moisture_pct", "temp_c")
            for a in ("mean", "min", "max")
        )
        by_value = f'SELECT {values} FROM "soil" WHERE {where} {group}'
        one = f"{where} AND \"sensor\" = 'soil-13'"
        csv_year = [*year_hourly, "-f", "csv"]
        # name: (argv, InfluxQL for comparison or None, runs, before the run)
        queries: dict[str, tuple[list[str], str | None, int, Any]] = {
            "latest (50 sensors)": (
                [*cli, "latest", *common],
                latest_q.format(span=" AND time > now() - 7d"),
                args.repeat,
                None,
            ),
            "history 1 year hourly, 50 sensors (csv), --no-rollups [InfluxQL: mean(*)]": (
                [*csv_year, "--no-rollups"],
                star,
                1,
                None,
            ),
            "  the same, InfluxQL: value fields only (what --no-rollups sends)": (
                [],
                by_value,
                1,
                None,
            ),
            "history 1 year hourly, 50 sensors (csv), first query: builds the rollups": (
                csv_year,
                None,
                1,
                None,
            ),
            "history 1 year hourly, 50 sensors (csv), rollups read": (
                csv_year,
                None,
                args.repeat,
                None,
            ),
            "history 1 year hourly, 50 sensors (csv), after a late week from gw-0": (
                csv_year,
                None,
                1,
                lambda: late_week(influx, args.scale),
            ),
            "history 1 year hourly, 1 sensor, --no-rollups [InfluxQL: mean(*)]": (
                [*year_hourly, "--sensor", "soil-13", "--no-rollups"],
                f"SELECT mean(*), min(*), max(*) FROM /.*/ WHERE {one} {group}",
                args.repeat,
                None,
            ),
            "history 1 year hourly, 1 sensor, rollups read": (
                [*year_hourly, "--sensor", "soil-13"],
                None,
                args.repeat,
                None,
            ),
        }
        runs = {}
        for name, (argv, influxql, repeat, before) in queries.items():
            if before is not None:
                before()
            run: dict[str, Any] = {"loadavg_before": list(os.getloadavg())}
            if influxql is not None:
                # A statement slower than 20 s runs once (timed_http).
                run["http"] = timed_http(influx, influxql, repeat)
            if argv:
                run["cli"] = timed(argv, repeat)
            run["loadavg_after"] = list(os.getloadavg())
            runs[name] = run
        startup = timed([harness.PYTHON, "-m", "cli", "--help"], args.repeat)
        # The same statement over the whole history, as `query latest` asked before.
        unbounded = timed_http(influx, latest_q.format(span=""), args.repeat)
    harness.table(
        f"Queries on {data['points']:,} points (scale {args.scale}; 1 = 26.3M points)",
        ["query", "CLI median s", "CLI min s", "rows out", "InfluxQL only median s", "load"],
        [
            [
                n,
                r.get("cli", {}).get("median_s", "-"),
                r.get("cli", {}).get("min_s", "-"),
                r.get("cli", {}).get("output_lines", "-"),
                r.get("http", {}).get("median_s", "-"),
                f"{r['loadavg_before'][0]:.1f}-{r['loadavg_after'][0]:.1f}",
            ]
            for n, r in runs.items()
        ],
    )
    for n, r in runs.items():
        if r.get("cli", {}).get("error"):
            print(f"\n{n}: the CLI failed after {r['cli']['runs_s'][-1]} s: {r['cli']['error']}")
    print(f"\n`farmtel --help` alone (Python start-up and imports): {startup['median_s']} s")
    print(f"`query latest` statement over the whole history: {unbounded['median_s']} s (median)")
    result.update(data=data, queries=runs, cli_startup=startup, latest_unbounded_influxql=unbounded)
    print(f"wrote {harness.write_results('query', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
