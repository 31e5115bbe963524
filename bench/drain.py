"""Time to drain a 24 h backlog from 200 gateways after an outage.

Run: ``.venv/bin/python bench/drain.py [--gateways 200] [--scale 0.1] [--ingests 2]``. Prints
a table and writes ``bench/results/drain.json``.

A day's backlog of one gateway is taken as 5 sensors x 1 reading/min x 24 h = 7,200
readings (the design's "5-50 sensors every 10 s to 10 min": a small gateway; a bigger one
scales linearly). ``--scale`` shrinks it per gateway (0.1: 720 readings each, 144,000 in
all) and the full-size time is extrapolated at the measured rate, with the factor printed.

Every gateway's outbox is pre-filled (not timed); then the ingests start, then all agents
together (``--per-process`` real agents share one interpreter: 200 Python processes would
not fit 2 cores), and the clock runs until receipts cover every reading. The store is then
checked: every gateway's seq 0..n-1 exactly once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import Influx

from agent.config import OutboxSettings

DAY_PER_GATEWAY = 5 * 60 * 24


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gateways", type=int, default=200)
    ap.add_argument("--scale", type=float, default=0.1, help="share of a day's backlog (0..1]")
    ap.add_argument("--ingests", type=int, default=2)
    ap.add_argument("--per-process", type=int, default=20, help="agents per process")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=OutboxSettings().batch_size,
        help="[outbox] batch_size (default: the agent's, %(default)s)",
    )
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    if not 1 <= args.gateways <= 1000:
        ap.error(f"--gateways {args.gateways} must be 1..1000")
    if not 0 < args.scale <= 1:
        ap.error(f"--scale {args.scale} must be in (0, 1]; 1 is a full day per gateway")
    if not 1 <= args.ingests <= 8 or not 1 <= args.per_process <= 200:
        ap.error("--ingests must be 1..8 and --per-process 1..200")
    per_gateway = max(1, round(DAY_PER_GATEWAY * args.scale))
    total = per_gateway * args.gateways
    result: dict[str, Any] = {"machine_before": harness.machine(), "args": vars(args)}
    with harness.private_stack() as (info, work):
        gateways = [f"gw-{g:04d}" for g in range(args.gateways)]
        # 5 sensors a minute: each commit holds one reading, so rows of one.
        fill_s = harness.prefill(work, gateways, per_gateway, row_readings=1)
        print(f"pre-filled {args.gateways} outboxes x {per_gateway:,} readings in {fill_s:.1f} s")
        influx = Influx(info.influx_url)
        db = "drain"
        influx.create(db)
        ingests = [harness.spawn_ingest(work, info, db, "drain", n) for n in range(args.ingests)]
        counter = harness.ReceiptCounter(info)
        time.sleep(2.0)
        busy0 = harness.machine_busy()
        t0 = time.monotonic()
        agents = harness.spawn_agents(
            work, info, gateways, args.per_process, batch_size=args.batch_size
        )
        every = ingests + agents
        complete = counter.wait_for(
            total, args.timeout, alive=lambda: all(p.popen.poll() is None for p in every)
        )
        t1 = time.monotonic()
        busy = harness.busy_fraction(busy0, harness.machine_busy())
        first, last, stored = counter.first, counter.last, counter.stored
        counter.close()
        rss = [harness.memory_kib(p.pid).get("VmHWM", 0) for p in agents if p.popen.poll() is None]
        for p in agents + ingests:
            rc = p.stop(60)
            if rc not in (0, None) or not complete:
                print(f"--- {p.name} rc={rc}\n{p.tail()}")
        check = harness.check_stored(influx, db, dict.fromkeys(gateways, per_gateway))
    seconds = t1 - t0
    rate = stored / seconds
    run = {
        "gateways": args.gateways,
        "readings_per_gateway": per_gateway,
        "scale": args.scale,
        "readings": total,
        "receipted": stored,
        "complete": complete,
        "seconds": round(seconds, 2),
        "readings_per_s": round(rate),
        "sustained_readings_per_s": round(stored / (last - first))
        if first and last and last > first
        else None,
        "first_receipt_after_s": round(first - t0, 2) if first else None,
        "full_day_readings": DAY_PER_GATEWAY * args.gateways,
        "full_day_extrapolated_s": round(DAY_PER_GATEWAY * args.gateways / rate, 1),
        "agent_process_peak_rss_mib": round(max(rss) / 1024, 1) if rss else None,
        "agents_per_process": args.per_process,
        "machine_busy_pct": round(busy * 100, 1),
        "check": check,
    }
    harness.table(
        f"Drain: {args.gateways} gateways x {per_gateway:,} readings (scale {args.scale} of a "
        f"24 h backlog of {DAY_PER_GATEWAY:,}), {args.ingests} ingest(s)",
        [
            "readings",
            "drained in s",
            "readings/s",
            "full 24 h backlog (extrapolated) s",
            "lost/dup",
            "box busy %",
        ],
        [
            [
                total,
                run["seconds"],
                run["readings_per_s"],
                run["full_day_extrapolated_s"],
                "none" if not check["problems"] else "PROBLEMS",
                run["machine_busy_pct"],
            ]
        ],
    )
    if check["problems"]:
        print("\n".join(check["problems"][:10]))
    result["run"] = run
    print(f"wrote {harness.write_results('drain', result)}")
    return 0 if complete and not check["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
