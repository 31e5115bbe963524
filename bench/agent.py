"""The agent's cost on a gateway: CPU and RSS at 10, 100 and 1,000 readings/s, and start-up.

Run: ``.venv/bin/python bench/agent.py [--rates 10,100,1000] [--window 20]``. Prints a table
and writes ``bench/results/agent.json``.

For each rate, text_line simulators on ptys (the real serial path: pty, pyserial, the
driver, the scheduler) send CSV lines at that aggregate rate to one real agent, which
commits them to its outbox and publishes them through a private Mosquitto to a real ingest
and InfluxDB, whose receipts prune the outbox. The agent is started as
deploy/systemd/farmtel-agent.service starts it (its ``ExecStart=`` command and
``Environment=`` settings, with this checkout's interpreter and code and the bench's
config); ``--command cli`` starts ``farmtel agent run`` instead. After a
warm-up the agent's CPU is read from ``/proc/<pid>/stat`` (utime + stime, all threads) over
``--window`` seconds; RSS is VmRSS at the end and VmHWM (the peak) from ``/proc/<pid>/status``.

Start-up: wall time from spawning the process to its ``agent starting`` log line (imports,
config, outbox open) and to the first batch seen on the broker.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

from devstack import StackInfo

COLUMNS = ["counter", "moisture_pct", "temp_c"]
UNIT = harness.ROOT / "deploy" / "systemd" / "farmtel-agent.service"
INSTALLED_BIN = "/opt/farmtel/venv/bin/"
INSTALLED_CONFIG = "/etc/farmtel/gateway.toml"


def agent_command(config: Path, how: str) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment for the agent on ``config``.

    ``how == "unit"``: the ``ExecStart=`` line and ``Environment=`` settings of the systemd
    unit, with this checkout's interpreter for /opt/farmtel/venv/bin and its code first on
    the import path; ``"cli"``: ``farmtel agent run``.
    """
    if how == "cli":
        return [harness.PYTHON, "-m", "cli", "agent", "run", "--config", str(config)], {}
    argv: list[str] = []
    env = {"PYTHONPATH": str(harness.ROOT)}
    for line in UNIT.read_text().splitlines():
        if line.startswith("ExecStart="):
            argv = shlex.split(line.removeprefix("ExecStart="))
        elif line.startswith("Environment="):
            for item in shlex.split(line.removeprefix("Environment=")):
                key, _, value = item.partition("=")
                env[key] = value
    if not argv or not argv[0].startswith(INSTALLED_BIN) or INSTALLED_CONFIG not in argv:
        raise RuntimeError(
            f"{UNIT}: ExecStart= is not {INSTALLED_BIN}... --config {INSTALLED_CONFIG}"
        )
    program = argv[0].removeprefix(INSTALLED_BIN)
    if program == "python":
        head = [harness.PYTHON]
    elif program == "farmtel":
        head = [harness.PYTHON, "-m", "cli"]
    else:
        raise RuntimeError(f"{UNIT}: ExecStart= runs {argv[0]}, which this bench does not know")
    return head + [str(config) if a == INSTALLED_CONFIG else a for a in argv[1:]], env


class FirstTelemetry:
    """Notes the wall time of the first telemetry message on the broker."""

    def __init__(self, info: StackInfo, name: str):
        self.at: float | None = None
        self.count = 0
        self.readings = 0
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-watch-{name}", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, *_: c.subscribe("farmtel/v1/+/+/telemetry", qos=0)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._message
        self.client.connect(info.mqtt_host, info.mqtt_port)
        self.client.loop_start()
        self.ready.wait(10)

    def _message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.count += 1
        self.readings += len(orjson.loads(msg.payload)["readings"])
        if self.at is None:
            self.at = time.time()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _log_time(log: Path, needle: str) -> float | None:
    """Wall time (s since the epoch) of the first log line containing ``needle``."""
    for line in log.read_text(errors="replace").splitlines():
        if needle in line:
            m = re.match(r"ts=(\S+)Z", line)
            if m:
                return datetime.fromisoformat(m.group(1) + "+00:00").timestamp()
    return None


def one_rate(info: StackInfo, work: Path, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    folder = work / f"rate{rate}"
    folder.mkdir()
    sensors = 2 if rate <= 10 else 4
    per_sensor = rate / sensors
    duration = args.warmup + args.window + 15
    sims = []
    sensor_cfg = []
    for i in range(sensors):
        link = folder / f"tty-{i}"
        sims.append(
            harness.spawn(
                f"sim{i}",
                [
                    harness.PYTHON,
                    "-m",
                    "sensors.text_line.simulator",
                    "--link",
                    str(link),
                    "--format",
                    "csv",
                    "--columns",
                    ",".join(COLUMNS),
                    "--rate",
                    str(per_sensor),
                    "--count",
                    str(int(per_sensor * duration)),
                    "--seed",
                    str(i + 1),
                ],
                folder / f"sim{i}.log",
            )
        )
        sensor_cfg.append(
            f'[[sensors]]\nid = "soil-{i}"\nfield = "north"\ndriver = "text_line"\n'
            f'kind = "soil"\nport = "{link}"\nformat = "csv"\ncolumns = {COLUMNS!r}\n'
            "timeout = 1.0\n".replace("'", '"')
            + (f"read_window = {args.read_window}\n" if args.read_window is not None else "")
        )
    deadline = time.monotonic() + 10
    while not all((folder / f"tty-{i}").exists() for i in range(sensors)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"simulator ptys did not appear in {folder}")
        time.sleep(0.05)
    db = f"agent_{rate}"
    ingest = harness.spawn_ingest(folder, info, db, f"agentbench{rate}", 0)
    cfg = folder / "gateway.toml"
    cfg.write_text(
        harness.toml(
            {
                "gateway": {
                    "plantation": harness.PLANTATION,
                    "id": "gw-agent",
                    "state_dir": str(folder / "gw"),
                },
                "mqtt": {"host": info.mqtt_host, "port": info.mqtt_port},
                "status": {"interval": 30.0},
            }
        )
        + "\n".join(sensor_cfg)
    )
    watch = FirstTelemetry(info, str(rate))
    time.sleep(1.0)  # the ingest connects
    spawned = time.time()
    argv, env = agent_command(cfg, args.command)
    agent = harness.spawn("agent", argv, folder / "agent.log", env)
    time.sleep(args.warmup)
    cpu0, t0, msgs0, sent0 = agent.cpu_s(), time.monotonic(), watch.count, watch.readings
    time.sleep(args.window)
    cpu1, t1, msgs1, sent1 = agent.cpu_s(), time.monotonic(), watch.count, watch.readings
    mem = harness.memory_kib(agent.pid)
    alive = agent.popen.poll() is None
    watch.close()
    agent.stop()
    ingest.stop()
    for s in sims:
        s.stop()
    started = _log_time(agent.log, "agent starting")
    return {
        "rate_readings_per_s": rate,
        "sensors": sensors,
        "window_s": round(t1 - t0, 2),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_pct_of_one_core": round((cpu1 - cpu0) / (t1 - t0) * 100, 2),
        "rss_mib": round(mem.get("VmRSS", 0) / 1024, 1),
        "peak_rss_mib": round(mem.get("VmHWM", 0) / 1024, 1),
        "batches_in_window": msgs1 - msgs0,
        "readings_per_s_published": round((sent1 - sent0) / (t1 - t0), 1),
        "startup_to_log_s": round(started - spawned, 3) if started else None,
        "startup_to_first_batch_s": round(watch.at - spawned, 3) if watch.at else None,
        "command": " ".join(argv).replace(str(cfg), "gateway.toml"),
        "agent_alive": alive,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rates", default="10,100,1000", help="aggregate readings/s, e.g. 10,100")
    ap.add_argument("--window", type=float, default=20.0, help="seconds measured per rate")
    ap.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring")
    ap.add_argument(
        "--command",
        choices=["unit", "cli"],
        default="unit",
        help="start the agent as deploy/systemd/farmtel-agent.service does (default), or as "
        "`farmtel agent run`",
    )
    ap.add_argument(
        "--read-window",
        type=float,
        default=None,
        help="read_window of every sensor (seconds; default: the config default)",
    )
    args = ap.parse_args()
    if args.read_window is not None and not 0 <= args.read_window <= 1:
        ap.error(f"--read-window {args.read_window}: must be between 0 and 1 seconds")
    try:
        rates = [int(x) for x in args.rates.split(",")]
    except ValueError:
        ap.error(f"--rates {args.rates!r} must be whole numbers separated by commas")
    if any(not 1 <= r <= 5000 for r in rates):
        ap.error(f"--rates {args.rates!r}: each rate must be 1..5000 readings/s")
    result: dict[str, Any] = {"machine_before": harness.machine(), "args": vars(args)}
    runs = []
    with harness.private_stack() as (info, work):
        for rate in rates:
            runs.append(one_rate(info, work, rate, args))
    harness.table(
        f"Agent ({runs[0]['command'] if runs else ''}; text_line sensors on ptys, "
        "real broker + ingest)",
        [
            "readings/s",
            "published/s",
            "sensors",
            "CPU % of 1 core",
            "RSS MiB",
            "peak RSS MiB",
            "start->log s",
            "start->1st batch s",
        ],
        [
            [
                r["rate_readings_per_s"],
                r["readings_per_s_published"],
                r["sensors"],
                r["cpu_pct_of_one_core"],
                r["rss_mib"],
                r["peak_rss_mib"],
                r["startup_to_log_s"],
                r["startup_to_first_batch_s"],
            ]
            for r in runs
        ],
    )
    result["runs"] = runs
    print(f"wrote {harness.write_results('agent', result)}")
    return 0 if all(r["agent_alive"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
