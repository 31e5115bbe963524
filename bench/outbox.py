"""Outbox throughput on this machine's disk: add() in groups, next_batch() + ack() drain.

Run: ``.venv/bin/python bench/outbox.py [--dir DIR]``. Prints the figures and writes them to
``bench/results/outbox.json``. ``--dir`` should be on the disk the gateway uses (the default
is a temporary folder, usually on the root file system).

- add: readings/s committing groups of 100 and of 1000 with ``synchronous=FULL`` (each group
  is one transaction: sidecar write + fsyncs, then the WAL commit and its fsync).
- drain: readings/s taking batches of 500 with next_batch() and deleting them with ack(),
  with acks committed ``NORMAL`` (the default) and ``FULL`` (``sync_acks=True``).
"""

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.outbox import NewReading, Outbox  # noqa: E402
from contract.wire import ClockQuality  # noqa: E402

T0 = 1_764_400_000_000_000_000


def readings(start: int, n: int) -> list[NewReading]:
    return [
        NewReading(
            sensor=f"soil-{i % 20}",
            field="north",
            kind="soil",
            ts=T0 + i * 10_000_000,
            clock=ClockQuality.SYNCED,
            values={"moisture_pct": 31.2 + i % 7, "temp_c": 14.5 - i % 5, "ec_us_cm": 412.0},
        )
        for i in range(start, start + n)
    ]


def ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "median_ms": round(statistics.median(values) * 1000, 3),
        "p99_ms": round(values[int(len(values) * 0.99) - 1] * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3),
    }


def bench_add(folder: Path, group: int, total: int) -> dict[str, Any]:
    ob = Outbox(Path(tempfile.mkdtemp(dir=folder)) / "outbox.sqlite", "gw-bench")
    groups = [readings(g * group, group) for g in range(total // group)]
    times = []
    t_all = time.perf_counter()
    for g in groups:
        t = time.perf_counter()
        ob.add(g)
        times.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t_all
    ob.close()
    return {
        "group": group,
        "readings": total,
        "seconds": round(elapsed, 3),
        "readings_per_s": round(total / elapsed),
        "per_group": ms(times),
    }


def bench_drain(folder: Path, total: int, sync_acks: bool) -> dict[str, Any]:
    path = Path(tempfile.mkdtemp(dir=folder)) / "outbox.sqlite"
    ob = Outbox(path, "gw-bench", sync_acks=sync_acks)
    for g in range(total // 1000):
        ob.add(readings(g * 1000, 1000))
    take, ack = [], []
    n = 0
    t_all = time.perf_counter()
    b = 0
    while True:
        t = time.perf_counter()
        got, _ = ob.next_batch(f"b{b}", 500)
        take.append(time.perf_counter() - t)
        if not got:
            break
        t = time.perf_counter()
        n += ob.ack(f"b{b}")
        ack.append(time.perf_counter() - t)
        b += 1
    elapsed = time.perf_counter() - t_all
    ob.close()
    return {
        "batch": 500,
        "acks": "FULL" if sync_acks else "NORMAL",
        "readings": n,
        "seconds": round(elapsed, 3),
        "readings_per_s": round(n / elapsed),
        "next_batch": ms(take[:-1]),
        "ack": ms(ack),
    }


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run, with every run's rate: other work on the box only slows a run down."""
    best = max(runs, key=lambda r: int(r["readings_per_s"]))
    return {**best, "runs_readings_per_s": [r["readings_per_s"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, help="folder for the test databases")
    parser.add_argument("--readings", type=int, default=50_000, help="readings per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; best is kept")
    args = parser.parse_args()
    n = max(1, args.repeat)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        results: dict[str, Any] = {
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "folder": str(folder),
                "sqlite": sqlite3.sqlite_version,
                "loadavg_before": os.getloadavg(),
            },
            "add": [
                best_of([bench_add(folder, 100, args.readings // 2) for _ in range(n)]),
                best_of([bench_add(folder, 1000, args.readings) for _ in range(n)]),
            ],
            "drain": [
                best_of([bench_drain(folder, args.readings, sync_acks=False) for _ in range(n)]),
                best_of([bench_drain(folder, args.readings, sync_acks=True) for _ in range(n)]),
            ],
        }
        results["machine"]["loadavg_after"] = os.getloadavg()
    for r in results["add"]:
        print(
            f"add    group={r['group']:>5}  {r['readings_per_s']:>8} readings/s  "
            f"per group {r['per_group']}  (runs: {r['runs_readings_per_s']})"
        )
    for r in results["drain"]:
        print(
            f"drain  batch=500 acks={r['acks']:<6} {r['readings_per_s']:>8} readings/s  "
            f"next_batch {r['next_batch']}  ack {r['ack']}  (runs: {r['runs_readings_per_s']})"
        )
    out = ROOT / "bench" / "results" / "outbox.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
