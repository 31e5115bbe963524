"""modbus_soil on a simulated bus: poll round trips, several probes on one port, a full scan.

Run: ``.venv/bin/python bench/modbus_soil.py [--polls 500] [--probes 4]``. Prints a table and
writes ``bench/results/modbus_soil.json``. The simulator runs in a thread of this process on
a pty, so the figures are the driver's own cost plus the pty, not a real RS-485 line (at
4800 baud a 7-register answer alone takes 40 ms on the wire).

1. ``--polls`` reads of one soil_7in1 probe: reads/s and the median and p99 round trip.
2. ``--probes`` probes at different slave ids on one port, read from one thread each
   (the driver serializes them on the shared port): total reads/s.
3. A scan of slave ids 1-247 with the default per-id timeout, two probes present.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensors.modbus_soil import simulator
from sensors.modbus_soil.driver import Driver
from sensors.modbus_soil.profiles import builtin_profile
from sensors.pty_link import PtyLink
from sensors.registry import load_sensor_config, make_driver

RESULTS = Path(__file__).resolve().parent / "results" / "modbus_soil.json"


def _probe(port: str, address: int) -> Any:
    raw = {"id": f"p{address}", "field": "bench", "driver": "modbus_soil", "port": port}
    return make_driver(load_sensor_config({**raw, "address": address}, "bench", 0))


def _bus(addresses: list[int]) -> simulator.Bus:
    profile = builtin_profile("soil_7in1")
    probes = {a: simulator.Probe(a, profile, random.Random(a)) for a in addresses}
    return simulator.Bus(probes, rng=random.Random(0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--polls", type=int, default=500)
    parser.add_argument("--probes", type=int, default=4)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    stop = threading.Event()
    with PtyLink() as pty:
        addresses = list(range(1, args.probes + 1))
        server = threading.Thread(
            target=_bus([*addresses, 200]).serve, args=(pty.master_fd, stop), daemon=True
        )
        server.start()

        one = _probe(pty.slave_path, 1)
        one.open()
        times = []
        started = time.perf_counter()
        for _ in range(args.polls):
            t0 = time.perf_counter()
            one.read()
            times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        one.close()
        times.sort()
        results["one_probe"] = {
            "polls": args.polls,
            "reads_per_s": round(args.polls / elapsed, 1),
            "median_ms": round(statistics.median(times) * 1000, 3),
            "p99_ms": round(times[int(len(times) * 0.99) - 1] * 1000, 3),
        }

        probes = [_probe(pty.slave_path, a) for a in addresses]
        for probe in probes:
            probe.open()
        per_thread = max(1, args.polls // len(probes))

        def hammer(probe: Any) -> None:
            for _ in range(per_thread):
                probe.read()

        threads = [threading.Thread(target=hammer, args=(p,)) for p in probes]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        for probe in probes:
            probe.close()
        results["shared_bus"] = {
            "probes": len(probes),
            "reads": per_thread * len(probes),
            "reads_per_s": round(per_thread * len(probes) / elapsed, 1),
        }

        started = time.perf_counter()
        found = list(Driver.scan(pty.slave_path, {}, lambda _message: None))
        elapsed = time.perf_counter() - started
        results["scan_1_247"] = {
            "found": [int(d["address"]) for d in found],
            "seconds": round(elapsed, 2),
        }
        stop.set()
        server.join(5)

    print(f"{'measure':<28} value")
    print(f"{'one probe reads/s':<28} {results['one_probe']['reads_per_s']}")
    print(f"{'one probe median ms':<28} {results['one_probe']['median_ms']}")
    print(f"{'one probe p99 ms':<28} {results['one_probe']['p99_ms']}")
    print(f"{'shared bus reads/s':<28} {results['shared_bus']['reads_per_s']}")
    print(f"{'scan 1-247 seconds':<28} {results['scan_1_247']['seconds']}")
    print(f"{'scan found':<28} {results['scan_1_247']['found']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
