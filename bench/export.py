"""Export and verify throughput: 1,000,000 readings through ``farmtel export`` / ``verify``.

Run: ``.venv/bin/python bench/export.py [--readings N] [--url URL] [--keep DIR]``. Without
``--url`` it starts a private InfluxDB (devstack). With ``--keep DIR`` the bundle stays in DIR,
and a later run with the same DIR times only verify on it. It writes signed batches straight
into InfluxDB with the ingest's mapping and line protocol (tests/certify/synth.py), then
times, each in a fresh process so peak RSS is the phase's own:

- export_fifth: the same for the first fifth of the period (peak RSS must not grow with
  the period: the export streams);
- export: InfluxDB -> sealed BagIt bundle (certify.export.export_bundle);
- verify: checksums, seal, every batch signature, continuity (certify.verify.verify_bundle).

Prints seconds, readings/s, readings per CPU second of the phase's process and its worker
processes (the machine may be shared; InfluxDB's own CPU is not counted) and peak RSS
(ru_maxrss; verify's largest worker's apart) per phase, and the private InfluxDB's CPU
seconds during the export phases, and writes ``bench/results/export.json``.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PLANTATION = "bench-p"
DATABASE = "bench_export"


def _phase(args: argparse.Namespace) -> None:
    """Run one phase in this process and print its figures as JSON."""
    import orjson

    from certify.bag import FolderBundle
    from certify.export import export_bundle
    from certify.orgkey import load_org_key, load_pubkey_file
    from certify.source import Span
    from certify.verify import verify_bundle
    from ingest.influx import InfluxQuery, InfluxSettings

    work = Path(args.work)
    started = time.perf_counter()
    if args.phase in ("export", "export_fifth"):
        client = InfluxQuery(InfluxSettings(url=args.url, database=DATABASE))
        reg = orjson.loads((work / "registry.json").read_bytes())
        summary = export_bundle(
            client,
            PLANTATION,
            Span(args.start_ns, args.end_ns),
            work / ("bundle" if args.phase == "export" else "bundle_fifth"),
            load_org_key(work / "org.pem"),
            reg,
        )
        readings, ok, detail = summary.readings, True, summary.warnings
    else:
        verdict = verify_bundle(
            FolderBundle(work / "bundle"), load_pubkey_file(work / "org.pem.pub")
        )
        readings, ok, detail = verdict.readings, verdict.ok, verdict.failures[:5]
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # worker processes, if any
    rss_kib = usage.ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime + kids.ru_utime + kids.ru_stime,
                "readings": readings,
                "ok": ok,
                "detail": detail,
                "peak_rss_mb": rss_kib / 1024,
                "peak_rss_largest_child_mb": kids.ru_maxrss / 1024,
            }
        )
    )


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux), None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _settle(pid: int, limit_s: float = 180.0) -> float:
    """Wait until process ``pid`` uses under 5 % of a core for a second; return the wait."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        before = _cpu_seconds(pid)
        time.sleep(1.0)
        after = _cpu_seconds(pid)
        if before is None or after is None or after - before < 0.05:
            break
    return time.perf_counter() - started


def _run_phase(
    phase: str, url: str, work: Path, start_ns: int, end_ns: int, influx_pid: int | None = None
) -> dict[str, Any]:
    influx_before = _cpu_seconds(influx_pid) if influx_pid else None
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--phase",
            phase,
            "--url",
            url,
            "--work",
            str(work),
            "--start-ns",
            str(start_ns),
            "--end-ns",
            str(end_ns),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["readings_per_s"] = result["readings"] / result["seconds"]
    # Per CPU second of this process: what it would do with a core to itself (the
    # machine is shared, so wall-clock figures vary with the load; InfluxDB's own CPU
    # time is not in it).
    result["readings_per_cpu_s"] = result["readings"] / result["cpu_seconds"]
    result["load_average_1m"] = os.getloadavg()[0]
    influx_after = _cpu_seconds(influx_pid) if influx_pid else None
    if influx_before is not None and influx_after is not None:
        # The server's own CPU for the phase (the bench's private InfluxDB only).
        result["influxd_cpu_seconds"] = influx_after - influx_before
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--url", help="InfluxDB to use (default: start a private one)")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="work in DIR and keep the bundle there; when DIR/work/bundle exists, time only "
        "verify on it (for repeated verify runs)",
    )
    parser.add_argument(
        "--phase", choices=["export", "export_fifth", "verify"], help=argparse.SUPPRESS
    )
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--start-ns", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--end-ns", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        _phase(args)
        return

    import orjson

    from certify.orgkey import new_key_file, public_pem
    from devstack import Stack
    from ingest.influx import InfluxQuery, InfluxSettings
    from tests.certify.synth import (
        DAY_NS,
        START_NS,
        GatewayPlan,
        make_batches,
        registry_json,
        write_batches,
    )

    if args.keep and (Path(args.keep) / "work" / "bundle").is_dir():
        r = _run_phase("verify", "", Path(args.keep) / "work", 0, 0)
        print(
            f"verify: {r['seconds']:.1f} s, {r['readings_per_s']:,.0f} readings/s "
            f"({r['cpu_seconds']:.1f} CPU s with its workers: "
            f"{r['readings_per_cpu_s']:,.0f} per CPU second, load {r['load_average_1m']:.1f}), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (largest worker "
            f"{r.get('peak_rss_largest_child_mb', 0):.0f} MB), ok={r['ok']} {r['detail'] or ''}"
        )
        return
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="farmtel-bench-export-"))
    tmp.mkdir(parents=True, exist_ok=True)
    stack = None
    url = args.url
    influx_pid: int | None = None
    try:
        if url is None:
            stack = Stack(tmp / "stack")
            info = stack.start()
            url, influx_pid = info.influx_url, info.influxdb_pid
        query = InfluxQuery(InfluxSettings(url=url, database=DATABASE))
        query.drop_database(DATABASE)
        gateways = 4
        per_gw = args.readings // gateways
        plans = [
            GatewayPlan(f"gw-{g:02d}", sensors=10, interval_s=60, lost_seq=(1000, 50_000))
            for g in range(gateways)
        ]
        t = time.perf_counter()
        written = sum(
            write_batches(
                url, DATABASE, PLANTATION, make_batches(PLANTATION, p, per_gw, batch_size=500)
            )
            for p in plans
        )
        write_s = time.perf_counter() - t
        print(f"wrote {written} signed readings in {write_s:.1f} s")
        if influx_pid:
            # InfluxDB compacts what was just written for a while: wait, so that the
            # phases time the export, not the compaction (its CPU would count as influxd's).
            print(f"influxd idle after {_settle(influx_pid):.0f} s (compacting the writes)")
        work = tmp / "work"
        work.mkdir()
        (work / "registry.json").write_bytes(orjson.dumps(registry_json(PLANTATION, plans)))
        pub = new_key_file(work / "org.pem")
        (work / "org.pem.pub").write_bytes(public_pem(pub))
        span_ns = per_gw * 6 * 1_000_000_000  # 10 sensors every 60 s: one reading per 6 s
        start_ns, end_ns = START_NS, START_NS + (span_ns // DAY_NS + 1) * DAY_NS
        # A fifth of the period first: memory must not grow with the period.
        fifth = _run_phase("export_fifth", url, work, start_ns, start_ns + span_ns // 5, influx_pid)
        export = _run_phase("export", url, work, start_ns, end_ns, influx_pid)
        verify = _run_phase("verify", url, work, start_ns, end_ns)
        bundle_mb = sum(f.stat().st_size for f in (work / "bundle").rglob("*") if f.is_file())
        result: dict[str, Any] = {
            "readings": written,
            "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.python_version()}",
            "export_fifth_of_the_period": fifth,
            "export": export,
            "verify": verify,
            "bundle_mb": bundle_mb / 1e6,
            "targets": {
                "export_readings_per_s": 100_000,
                "verify_readings_per_s": 200_000,
                "peak_rss_mb": 200,
            },
        }
        for name in ("export_fifth_of_the_period", "export", "verify"):
            r = result[name]
            print(
                f"{name}: {r['seconds']:.1f} s, {r['readings_per_s']:,.0f} readings/s "
                f"({r['readings_per_cpu_s']:,.0f} per CPU second, "
                f"load {r['load_average_1m']:.1f}), "
                f"peak RSS {r['peak_rss_mb']:.0f} MB, ok={r['ok']} {r['detail'] or ''}"
                + (
                    f", influxd {r['influxd_cpu_seconds']:.1f} CPU s"
                    if "influxd_cpu_seconds" in r
                    else ""
                )
            )
        print(f"bundle: {bundle_mb / 1e6:.0f} MB")
        out = ROOT / "bench" / "results" / "export.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
        query.drop_database(DATABASE)
    finally:
        if stack is not None:
            stack.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
