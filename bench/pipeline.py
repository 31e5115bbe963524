"""End-to-end throughput: agent outbox -> Mosquitto -> ingest -> InfluxDB, against the ceilings.

Run: ``.venv/bin/python bench/pipeline.py [--ingests 1,2,3] [--gateways 4] [--per-gateway 50000]``.
Prints tables and writes ``bench/results/pipeline.json``. One run, one private stack, so the
ratios compare figures measured minutes apart on the same (possibly shared) machine:

1. InfluxDB ceiling: pre-built line protocol of the same shape as farmtel's readings, posted
   to ``/write`` in 5,000- and in 10,000-point batches (InfluxDB's advice; the ingest's
   default write) by 1 and by 2 concurrent clients; measured again (2 clients, either size in
   turn) just before each pipeline run. The headline ratio ("÷ ceiling") is to the best
   of them; "÷ just before" is to the one measured just before that pipeline run. The
   "targets" column says whether a run met issue 8's two targets (TARGET_READINGS_PER_S,
   TARGET_RATIO), checked on the unrounded figures.
2. Mosquitto ceiling: paho -> paho, QoS 1, 500 B messages and batch-sized messages.
3. Pipeline, once per ingest count and per ``--gateways-as`` mode: ``--gateways`` outboxes are
   pre-filled with ``--per-gateway`` readings each (not timed; in outbox rows of 20, as an
   agent reading 100 readings/s stores them: harness.ROWS_AT_100_PER_S), the ingests start,
   then
   - ``agents``: one real agent process per outbox starts; its CPU is on this box too;
   - ``replay``: bench/replay_gateways.py has built every batch from the same outboxes with
     the agent's code before the clock starts and publishes them as the agents would (QoS 1,
     ``--max-inflight`` unreceipted batches per gateway): the load the server sees when the
     agents run on the gateways, as in production.
   The clock runs from the start until receipts cover every reading. ``sustained`` counts
   from the first receipt to the last (start-up excluded). Afterwards every gateway's seq
   0..n-1 is checked in InfluxDB: exactly once each.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import Influx

from agent.config import OutboxSettings
from devstack import StackInfo
from ingest.line_protocol import encode_point

TARGET_READINGS_PER_S = 100_000
TARGET_RATIO = 0.5
"""Issue 8's targets on the 2-core box: sustained readings/s, and that ÷ the best ceiling.
Checked on the unrounded figures (``targets_met``): a ratio of 0.49973 is a miss, though it
prints as 0.4997."""

CEILING_BATCHES = (5_000, 10_000)
"""Points per ceiling write: InfluxDB's advice (5,000), and the ingest's default write
(``[ingest] write_max_readings`` = 10,000 lines). The ratio is to the best of them."""


# --- InfluxDB ceiling --------------------------------------------------------------------
def prebuilt_batches(points: int, offset_ns: int, batch: int) -> list[bytes]:
    lines = []
    for i in range(points):
        lines.append(
            encode_point(
                "soil",
                {
                    "plantation": harness.PLANTATION,
                    "field": "north",
                    "gateway": f"gw-{i % 8}",
                    "sensor": f"soil-{i % 20}",
                },
                {
                    "moisture_pct": 31.2 + i % 7,
                    "temp_c": 14.5 - i % 5,
                    "ec_us_cm": 412.0,
                    "seq": i,
                    "clock": "synced",
                },
                harness.T0 + offset_ns + i * 1_000_000,
            )
        )
    return ["\n".join(lines[i : i + batch]).encode() for i in range(0, len(lines), batch)]


def influx_ceiling(
    info: StackInfo, clients: int, points: int, run: int, batch: int
) -> dict[str, Any]:
    influx = Influx(info.influx_url)
    db = f"ceiling_{clients}_{run}"
    influx.create(db)
    batches = prebuilt_batches(points, offset_ns=run * 10**15, batch=batch)
    errors: list[int] = []

    def post(part: list[bytes]) -> None:
        mine = Influx(info.influx_url)
        for body in part:
            status = mine.write(db, body)
            if status != 204:
                errors.append(status)

    threads = [threading.Thread(target=post, args=(batches[c::clients],)) for c in range(clients)]
    cpu0 = harness.cpu_seconds(info.influxdb_pid) if info.influxdb_pid else None
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    # InfluxDB's CPU per point here, to set beside its CPU per reading in the pipeline.
    influxd_us = (
        round((harness.cpu_seconds(info.influxdb_pid) - cpu0) * 1e6 / points, 2)
        if info.influxdb_pid and cpu0 is not None
        else None
    )
    return {
        "clients": clients,
        "points": points,
        "batch": batch,
        "seconds": round(elapsed, 3),
        "points_per_s": round(points / elapsed),
        "influxd_cpu_us_per_point": influxd_us,
        "http_errors": errors,
    }


# --- Mosquitto ceiling -------------------------------------------------------------------
def _publisher(host: str, port: int, topic: str, size: int, count: int) -> None:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{size}", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    payload = b"x" * size
    info = None
    for _ in range(count):
        info = client.publish(topic, payload, qos=1)
    if info is not None:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()


def mosquitto_ceiling(info: StackInfo, size: int, count: int) -> dict[str, Any]:
    topic = f"bench/raw/{size}"
    got = 0
    first = last = 0.0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        nonlocal got, first, last
        got += 1
        last = time.perf_counter()
        if got == 1:
            first = last
        if got >= count:
            done.set()

    sub = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{size}", protocol=mqtt.MQTTv5
    )
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect(info.mqtt_host, info.mqtt_port)
    sub.loop_start()
    sub.subscribe(topic, qos=1)
    subscribed.wait(10)
    proc = get_context("fork").Process(
        target=_publisher, args=(info.mqtt_host, info.mqtt_port, topic, size, count)
    )
    t = time.perf_counter()
    proc.start()
    done.wait(300)
    elapsed_all = time.perf_counter() - t
    proc.join(60)
    sub.disconnect()
    sub.loop_stop()
    span = max(last - first, 1e-9)
    return {
        "payload_bytes": size,
        "messages": count,
        "received": got,
        "seconds": round(elapsed_all, 3),
        "msgs_per_s": round(got / elapsed_all),
        "msgs_per_s_first_to_last": round((got - 1) / span),
        "mbytes_per_s": round(got * size / elapsed_all / 1e6, 1),
    }


# --- pipeline ------------------------------------------------------------------------------
def pipeline(
    info: StackInfo, work: Path, ingests: int, args: argparse.Namespace, run: int, mode: str
) -> dict[str, Any]:
    folder = work / f"run{run}-{ingests}-{mode}"
    folder.mkdir()
    gateways = [f"gw-{run}-{g:03d}" for g in range(args.gateways)]
    fill_s = harness.prefill(folder, gateways, args.per_gateway, harness.ROWS_AT_100_PER_S)
    total = args.gateways * args.per_gateway
    db = f"pipeline_{run}_{ingests}"
    group = f"bench{run}x{ingests}"
    influx = Influx(info.influx_url)
    influx.create(db)
    ingest_opts: dict[str, Any] = {}
    if args.write_max_readings:
        ingest_opts["write_max_readings"] = args.write_max_readings
    procs = [
        harness.spawn_ingest(folder, info, db, group, n, **ingest_opts) for n in range(ingests)
    ]
    counter = harness.ReceiptCounter(info, client_id=f"bench-receipts-{run}-{ingests}")
    time.sleep(2.0)  # ingests connect and subscribe; nothing is timed yet
    outbox_opts = {"batch_size": args.batch_size, "max_inflight": args.max_inflight}
    servers = {"influxd": info.influxdb_pid, "mosquitto": info.mosquitto_pid}
    replay = None
    if mode == "replay":  # batches built before the clock starts (bench/replay_gateways.py)
        replay = harness.spawn_replay(folder, info, gateways, args.batch_size, args.max_inflight)
    server_cpu0 = {k: harness.cpu_seconds(v) for k, v in servers.items() if v}
    busy0 = harness.machine_busy()
    t_start = time.monotonic()
    if replay is not None:
        assert replay.popen.stdin is not None
        replay.popen.stdin.write(b"go\n")
        replay.popen.stdin.flush()
        agents = [replay]
        replay_cpu0 = replay.cpu_s()
    else:
        agents = [
            harness.spawn_agent(folder, info, gw, folder / gw, **outbox_opts) for gw in gateways
        ]
    every = procs + agents
    at_first: dict[str, Any] = {}
    spies: list[harness.Proc] = []

    def sample_first(stored: int) -> None:
        # CPU per reading is measured from the first receipt on: start-up excluded; so are
        # the profiles (py-spy --gil: only threads holding the GIL, i.e. Python at work).
        if args.profile:
            for p in (procs[0], agents[0]):
                out = Path(args.profile) / f"{p.name}.txt"
                spies.append(
                    harness.spawn(
                        f"py-spy {p.name}",
                        [
                            str(Path(harness.PYTHON).parent / "py-spy"),
                            *("record", "--gil", "-r", "250", "-f", "raw", "-o", str(out)),
                            *("--pid", str(p.pid)),
                        ],
                        folder / f"py-spy-{p.name}.log",
                    )
                )
        at_first["stored"] = stored
        at_first["cpu"] = {p.name: p.cpu_s() for p in every}
        at_first["cpu"].update({k: harness.cpu_seconds(v) for k, v in servers.items() if v})

    complete = counter.wait_for(
        total,
        args.timeout,
        alive=lambda: all(p.popen.poll() is None for p in every),
        on_first=sample_first,
    )
    t_end = time.monotonic()
    cpu_end = {p.name: p.cpu_s() for p in every if p.popen.poll() is None}
    user_sys = {
        p.name: [round(x, 2) for x in harness.cpu_split(p.pid)]
        for p in every
        if p.popen.poll() is None
    }
    cpu_end.update({k: harness.cpu_seconds(v) for k, v in servers.items() if v})
    # Peak RSS of each ingest: its groups in memory ((write_concurrency + 2) writes at most).
    ingest_peak_kib = [
        harness.memory_kib(p.pid).get("VmHWM", 0) for p in procs if p.popen.poll() is None
    ]
    busy = harness.busy_fraction(busy0, harness.machine_busy())
    cpu = {p.name: round(p.cpu_s(), 2) for p in every if p.popen.poll() is None}
    if replay is not None and "replay" in cpu:  # building the batches is not timed
        cpu["replay"] = round(cpu_end["replay"] - replay_cpu0, 2)
    for k, v in server_cpu0.items():
        pid = servers[k]
        assert pid is not None
        cpu[k] = round(harness.cpu_seconds(pid) - v, 2)
    first, last, stored = counter.first, counter.last, counter.stored
    counter.close()
    for spy in spies:
        spy.popen.send_signal(2)
        spy.popen.wait(30)
    if replay is not None and replay.popen.stdin is not None:
        replay.popen.stdin.close()  # it disconnects and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            replay.popen.wait(10)
    for p in agents + procs:
        rc = p.stop()
        if rc not in (0, None) or not complete:
            print(f"--- {p.name} rc={rc}\n{p.tail()}")
    check = harness.check_stored(influx, db, {gw: args.per_gateway for gw in gateways})
    wall = t_end - t_start
    sustained = (
        (stored / (last - first)) if first is not None and last is not None and last > first else 0
    )
    per_reading: dict[str, float] = {}
    if at_first and stored > at_first["stored"]:
        n: int = stored - at_first["stored"]

        def us(names: list[str]) -> float:
            spent: float = sum(cpu_end[k] - at_first["cpu"][k] for k in names if k in cpu_end)
            return round(spent / n * 1e6, 2)

        per_reading = {
            "ingest": us([p.name for p in procs]),
            "agent": us([p.name for p in agents]),
            "influxd": us(["influxd"]),
            "mosquitto": us(["mosquitto"]),
        }
    return {
        "gateways_as": mode,
        "ingests": ingests,
        "cpu_us_per_reading_after_first_receipt": per_reading,
        "cpu_user_system_s": user_sys,
        "gateways": args.gateways,
        "readings": total,
        "prefill_s": round(fill_s, 2),
        "complete": complete,
        "receipted": stored,
        "seconds": round(wall, 3),
        "readings_per_s": round(stored / wall),
        "sustained_readings_per_s": round(sustained),
        "first_receipt_after_s": round((first or t_end) - t_start, 3),
        "cpu_s": cpu,
        "cpu_s_ingests": round(sum(v for k, v in cpu.items() if "ingest" in k), 2),
        "cpu_s_agents": round(
            sum(v for k, v in cpu.items() if k.startswith("gw-") or k == "replay"), 2
        ),
        "machine_busy_pct": round(busy * 100, 1),
        "ingest_peak_rss_mib": round(max(ingest_peak_kib) / 1024, 1) if ingest_peak_kib else None,
        "check": check,
    }


def _ratio(value: float | None) -> str:
    """A ratio as the table prints it: 4 decimals, so 0.4997 does not read as 0.50."""
    return "-" if value is None else f"{value:.4f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ingests", default="1", help="ingest counts to run, e.g. 1,2,3")
    ap.add_argument("--gateways", type=int, default=4, help="agent processes (default 4)")
    ap.add_argument(
        "--per-gateway",
        type=int,
        default=150_000,
        help="readings per outbox (default 150,000: 600,000 per run, ~5 s sustained)",
    )
    ap.add_argument(
        "--gateways-as",
        default="agents,replay",
        help="agents: real agent processes send their outboxes (their CPU on this box); "
        "replay: the batches the agent code built from the same outboxes before the clock "
        "starts, published by one paho process per run (the server's load: in production the "
        "agents run on the gateways). Default: both",
    )
    ap.add_argument(
        "--batch-size",
        type=int,
        default=OutboxSettings().batch_size,
        help="[outbox] batch_size (default: the agent's, %(default)s)",
    )
    ap.add_argument("--max-inflight", type=int, default=16, help="[outbox] max_inflight")
    ap.add_argument("--write-max-readings", type=int, default=0, help="[ingest] override")
    ap.add_argument(
        "--ceiling-points",
        type=int,
        default=0,
        help="points per InfluxDB ceiling run (default: as many as a pipeline run carries, "
        "so that both last as long and meet the same background work in InfluxDB)",
    )
    ap.add_argument("--timeout", type=float, default=300, help="seconds per pipeline run")
    ap.add_argument("--profile", default="", help="folder for py-spy profiles of 1 ingest, 1 agent")
    ap.add_argument("--skip-ceilings", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    args = ap.parse_args()
    try:
        counts = [int(x) for x in args.ingests.split(",")]
    except ValueError:
        ap.error(f"--ingests {args.ingests!r} must be numbers separated by commas, e.g. 1,2,3")
    if not counts or any(not 1 <= n <= 8 for n in counts):
        ap.error(f"--ingests {args.ingests!r}: each count must be 1..8")
    modes = [m.strip() for m in args.gateways_as.split(",") if m.strip()]
    if not modes or any(m not in ("agents", "replay") for m in modes):
        ap.error(f"--gateways-as {args.gateways_as!r}: give agents, replay or agents,replay")
    if not 1 <= args.batch_size <= 5000:
        ap.error(f"--batch-size {args.batch_size} must be 1..5000")

    if args.ceiling_points <= 0:
        args.ceiling_points = args.gateways * args.per_gateway
    result: dict[str, Any] = {"machine_before": harness.machine(), "args": vars(args)}
    with harness.private_stack(keep=args.keep) as (info, work):
        ceilings: list[dict[str, Any]] = []
        mqtt_raw: list[dict[str, Any]] = []
        if not args.skip_ceilings:
            plan_c = [(c, b) for b in CEILING_BATCHES for c in (1, 2)]
            for run, (clients, batch) in enumerate(plan_c):
                ceilings.append(influx_ceiling(info, clients, args.ceiling_points, run, batch))
            harness.table(
                "InfluxDB /write ceiling (pre-built line protocol)",
                [
                    "clients",
                    "batch",
                    "points",
                    "seconds",
                    "points/s",
                    "influxd µs/point",
                    "http errors",
                ],
                [
                    [
                        c["clients"],
                        c["batch"],
                        c["points"],
                        c["seconds"],
                        c["points_per_s"],
                        c["influxd_cpu_us_per_point"],
                        len(c["http_errors"]),
                    ]
                    for c in ceilings
                ],
            )
            batch_bytes = 150 * args.batch_size
            mqtt_raw.append(mosquitto_ceiling(info, 500, 20_000))
            mqtt_raw.append(
                mosquitto_ceiling(info, batch_bytes, max(200, 4_000_000 // batch_bytes * 10))
            )
            harness.table(
                "Mosquitto QoS 1, paho -> paho",
                ["payload B", "messages", "msgs/s", "MB/s"],
                [
                    [m["payload_bytes"], m["received"], m["msgs_per_s"], m["mbytes_per_s"]]
                    for m in mqtt_raw
                ],
            )
        runs = []
        plan = [(mode, n) for mode in modes for n in counts]
        for run, (mode, n) in enumerate(plan):
            if not args.skip_ceilings:
                # The ceiling again just before each run: on a shared box the load moves, and
                # the ratio is taken to the best ceiling seen (the conservative choice).
                # Alternately at either batch size.
                batch = CEILING_BATCHES[run % len(CEILING_BATCHES)]
                ceilings.append(influx_ceiling(info, 2, args.ceiling_points, 10 + run, batch))
            runs.append(pipeline(info, work, n, args, run, mode))
            r = runs[-1]
            print(
                f"\npipeline gateways as {mode}, ingests={n}: "
                f"{r['receipted']:,}/{r['readings']:,} readings in "
                f"{r['seconds']} s = {r['readings_per_s']:,}/s (sustained "
                f"{r['sustained_readings_per_s']:,}/s); check: "
                f"{'OK' if not r['check']['problems'] else r['check']['problems'][:3]}"
            )
    if ceilings[4:]:
        harness.table(
            "InfluxDB /write ceiling again, just before each pipeline run (2 clients)",
            ["before run", "batch", "points/s", "influxd µs/point"],
            [
                [
                    f"{r['gateways_as']} x{r['ingests']}",
                    c["batch"],
                    c["points_per_s"],
                    c["influxd_cpu_us_per_point"],
                ]
                for r, c in zip(runs, ceilings[4:], strict=True)
            ],
        )
    best_ceiling = max((c["points_per_s"] for c in ceilings), default=0)
    for r in runs:
        rate = r["sustained_readings_per_s"]
        r["ratio_to_influx_ceiling"] = round(rate / best_ceiling, 4) if best_ceiling else None
        r["targets_met"] = (
            rate >= TARGET_READINGS_PER_S and rate >= TARGET_RATIO * best_ceiling
            if best_ceiling
            else None  # no ceiling measured (--skip-ceilings)
        )
    # Also to the ceiling measured minutes before the same pipeline run: the box as it was
    # then. Shown beside the headline ratio (to the best ceiling), not instead of it.
    for r, c in zip(runs, ceilings[4:], strict=False):
        r["ratio_to_ceiling_just_before"] = (
            round(r["sustained_readings_per_s"] / c["points_per_s"], 4)
            if c["points_per_s"]
            else None
        )
    harness.table(
        "Pipeline: agent outbox -> Mosquitto -> ingest -> InfluxDB (zero-loss checked)",
        [
            "gateways as",
            "ingests",
            "readings",
            "s",
            "readings/s",
            "sustained/s",
            "÷ ceiling",
            "÷ just before",
            "ingest cpu s",
            "agent cpu s",
            "influxd cpu s",
            "mosq cpu s",
            "box busy %",
            "ingest peak MiB",
            "lost/dup",
            "targets",
        ],
        [
            [
                r["gateways_as"],
                r["ingests"],
                r["readings"],
                r["seconds"],
                r["readings_per_s"],
                r["sustained_readings_per_s"],
                _ratio(r["ratio_to_influx_ceiling"]),
                _ratio(r.get("ratio_to_ceiling_just_before")),
                r["cpu_s_ingests"],
                r["cpu_s_agents"],
                r["cpu_s"].get("influxd"),
                r["cpu_s"].get("mosquitto"),
                r["machine_busy_pct"],
                r["ingest_peak_rss_mib"],
                "none" if not r["check"]["problems"] else "PROBLEMS",
                {True: "met", False: "missed", None: "-"}[r["targets_met"]],
            ]
            for r in runs
        ],
    )
    keys = ("ingest", "agent", "influxd", "mosquitto")
    harness.table(
        "CPU per reading (µs, from the first receipt on: start-up excluded; "
        "agent = the agents or the replay process)",
        ["gateways as", "ingests", *keys, "sum"],
        [
            [
                r["gateways_as"],
                r["ingests"],
                *(r["cpu_us_per_reading_after_first_receipt"].get(k, 0.0) for k in keys),
                round(sum(r["cpu_us_per_reading_after_first_receipt"].values()), 2),
            ]
            for r in runs
        ],
    )
    print(
        f"\nInfluxDB ceiling used for the ratio: {best_ceiling:,} points/s (best of the runs above;"
        " '÷ just before' is to the ceiling measured just before that pipeline run)"
    )
    if best_ceiling:
        print(
            f"targets: ≥ {TARGET_READINGS_PER_S:,} readings/s sustained and ≥ {TARGET_RATIO} of"
            f" that ceiling; met in {sum(bool(r['targets_met']) for r in runs)} of {len(runs)}"
            " pipeline runs"
        )
    result.update(influx_ceiling=ceilings, mosquitto_ceiling=mqtt_raw, pipeline=runs)
    print(f"wrote {harness.write_results('pipeline', result)}")
    return 0 if all(not r["check"]["problems"] and r["complete"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
