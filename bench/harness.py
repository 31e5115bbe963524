"""What the bench scripts share: a private stack, pre-filled outboxes, farmtel processes,
a receipt counter, /proc figures and the JSON results.

Every script starts its own :class:`devstack.Stack` in a temporary folder (loopback only)
and removes it at the end. Figures are written to ``bench/results/<name>.json`` with the
machine's load average before and after, because this 2-core box is often shared.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import urllib3
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
# The repository first: bench/agent.py must not shadow the agent package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if p != str(ROOT)]

from agent.outbox import NewReading, Outbox  # noqa: E402
from contract.wire import ClockQuality  # noqa: E402
from devstack import Stack, StackInfo  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
T0 = 1_764_400_000_000_000_000
"""First reading timestamp (ns): 2025-11-29, inside every retention policy's reach."""
SENSORS_PER_GATEWAY = 20
PLANTATION = "bench-001"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- results -------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` (plus the machine and its load after the run) to bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"machine_after": machine(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under a header, columns aligned."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# --- the stack ---------------------------------------------------------------------------
@contextmanager
def private_stack(keep: bool = False) -> Iterator[tuple[StackInfo, Path]]:
    """A fresh Mosquitto + InfluxDB in a temp folder; the folder is removed unless ``keep``."""
    work = Path(tempfile.mkdtemp(prefix="farmtel-bench-"))
    stack = Stack(work / "stack")
    info = stack.start()
    try:
        yield info, work
    finally:
        # A run that failed half-way leaves no agent, ingest or simulator behind.
        for proc in _spawned:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(10)
        stack.stop()
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# --- InfluxDB --------------------------------------------------------------------------------
class Influx:
    """Plain /query and /write calls for the bench (no farmtel code in the way)."""

    def __init__(self, url: str):
        self.url = url
        self.http = urllib3.PoolManager(maxsize=8)

    def query(self, db: str, q: str) -> list[dict[str, Any]]:
        resp = self.http.request(
            "POST", f"{self.url}/query", fields={"db": db, "q": q, "epoch": "ns"}, timeout=300
        )
        if resp.status != 200:
            raise RuntimeError(f"query {q!r}: HTTP {resp.status} {resp.data[:300]!r}")
        body = orjson.loads(resp.data)
        results = body.get("results", [{}])
        if "error" in results[0]:
            raise RuntimeError(f"query {q!r}: {results[0]['error']}")
        series: list[dict[str, Any]] = results[0].get("series", [])
        return series

    def create(self, db: str) -> None:
        self.query(db, f'CREATE DATABASE "{db}"')

    def write(self, db: str, body: bytes, precision: str = "n") -> int:
        resp = self.http.request(
            "POST",
            f"{self.url}/write?db={db}&precision={precision}",
            body=body,
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=60,
        )
        return resp.status


def check_stored(influx: Influx, db: str, per_gateway: dict[str, int]) -> dict[str, Any]:
    """Count stored readings per gateway and check every seq 0..n-1 is there exactly once.

    A point is keyed by series + time, so a duplicate delivery overwrites itself; what can go
    wrong is a missing seq (loss) or a seq stored twice under another time (a double). So:
    count(seq) == n, count(distinct(seq)) == n, min == 0, max == n-1.
    """
    rows = influx.query(
        db,
        'SELECT count("seq"), count(distinct("seq")), min("seq"), max("seq") FROM "soil" '
        'GROUP BY "gateway"',
    )
    seen: dict[str, tuple[int, int, int, int]] = {}
    for s in rows:
        _, count, distinct, lo, hi = s["values"][0]
        seen[s["tags"]["gateway"]] = (count, distinct, lo, hi)
    problems = []
    stored = 0
    for gw, n in per_gateway.items():
        count, distinct, lo, hi = seen.get(gw, (0, 0, -1, -1))
        stored += count
        if (count, distinct, lo, hi) != (n, n, 0, n - 1):
            problems.append(
                f"{gw}: count={count} distinct={distinct} min={lo} max={hi}, expected {n} "
                f"readings with seq 0..{n - 1}"
            )
    return {"expected": sum(per_gateway.values()), "stored": stored, "problems": problems}


# --- outboxes --------------------------------------------------------------------------------
def reading_group(gateway_no: int, start: int, n: int) -> list[NewReading]:
    """``n`` soil readings; sensor and time unique per reading (20 sensors, 1 ms apart)."""
    base = T0 + gateway_no * 1_000_000
    return [
        NewReading(
            sensor=f"soil-{i % SENSORS_PER_GATEWAY}",
            field="north",
            kind="soil",
            ts=base + i * 1_000_000_000,
            clock=ClockQuality.SYNCED,
            values={"moisture_pct": 31.2 + i % 7, "temp_c": 14.5 - i % 5, "ec_us_cm": 412.0},
        )
        for i in range(start, start + n)
    ]


ROWS_AT_100_PER_S = 20
"""Readings per outbox row that an agent reading 100 readings/s stores (a commit every
``commit_interval`` = 0.2 s, its readings in one row): the layout of such an agent's backlog
(the 1,000-plantation case: 100,000 readings/s from 1,000 gateways). A gateway reading a
few sensors a minute stores rows of one."""


def _fill_one(args: tuple[str, str, int, int, int]) -> int:
    path, gateway, gateway_no, count, row_readings = args
    # One add() per 2,000 readings keeps the untimed fill short; rows as the agent's commits.
    ob = Outbox(Path(path), gateway, row_readings=row_readings)
    try:
        for start in range(0, count, 2000):
            ob.add(reading_group(gateway_no, start, min(2000, count - start)))
    finally:
        ob.close()
    return count


def prefill(
    folder: Path, gateways: Sequence[str], per_gateway: int, row_readings: int, workers: int = 2
) -> float:
    """Fill ``folder/<gateway>/outbox.sqlite`` with ``per_gateway`` readings each, in rows of
    ``row_readings`` (see :data:`ROWS_AT_100_PER_S`); seconds."""
    jobs = []
    for n, gw in enumerate(gateways):
        (folder / gw).mkdir(parents=True, exist_ok=True)
        jobs.append((str(folder / gw / "outbox.sqlite"), gw, n, per_gateway, row_readings))
    t = time.perf_counter()
    with get_context("fork").Pool(workers) as pool:
        pool.map(_fill_one, jobs)
    return time.perf_counter() - t


# --- configs and processes ---------------------------------------------------------------
def toml(tables: dict[str, dict[str, Any]]) -> str:
    out = []
    for name, body in tables.items():
        out.append(f"[{name}]")
        out += [f"{k} = {json.dumps(v)}" for k, v in body.items()]
        out.append("")
    return "\n".join(out)


def gateway_toml(info: StackInfo, state: Path, gateway: str, **outbox: Any) -> str:
    # The agent needs one [[sensors]] to load its config; bench/agent_runner.py drops it so
    # that only the pre-filled outbox feeds the agent.
    return toml(
        {
            "gateway": {"plantation": PLANTATION, "id": gateway, "state_dir": str(state)},
            "mqtt": {"host": info.mqtt_host, "port": info.mqtt_port},
            "outbox": {"receipt_timeout": 30.0, **outbox},
            "status": {"interval": 60.0},
            "log": {"level": "warning"},
        }
    ) + (
        '[[sensors]]\nid = "unused"\nfield = "north"\ndriver = "text_line"\nkind = "soil"\n'
        'port = "/dev/null"\nformat = "csv"\ncolumns = ["moisture_pct"]\n'
    )


def ingest_toml(
    info: StackInfo, state: Path, db: str, group: str, client_id: str, **ingest: Any
) -> str:
    return toml(
        {
            "ingest": {"state_dir": str(state), "share_group": group, **ingest},
            "mqtt": {"host": info.mqtt_host, "port": info.mqtt_port, "client_id": client_id},
            "influxdb": {"url": info.influx_url, "database": db},
            "log": {"level": "warning"},
        }
    )


_spawned: list[Proc] = []
"""Every process started by :func:`spawn`, killed when :func:`private_stack` ends."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 20) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            return None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    env_extra: dict[str, str] | None = None,
    stdin_pipe: bool = False,
) -> Proc:
    """Start ``argv`` with its output in ``log``; ``stdin_pipe`` gives it a pipe to write to."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARMTEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(env_extra or {})
    fh = open(log, "ab")  # noqa: SIM115 - handed to the child
    popen = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdin=subprocess.PIPE if stdin_pipe else None,
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
    )
    fh.close()
    proc = Proc(name, popen, log)
    _spawned.append(proc)
    return proc


def spawn_ingest(work: Path, info: StackInfo, db: str, group: str, n: int, **ingest: Any) -> Proc:
    cid = f"bench-ingest-{group}-{n}"
    cfg = work / f"{cid}.toml"
    cfg.write_text(ingest_toml(info, work / cid, db, group, cid, **ingest))
    return spawn(
        cid, [PYTHON, "-m", "cli", "ingest", "run", "--config", str(cfg)], work / f"{cid}.log"
    )


def spawn_replay(
    work: Path, info: StackInfo, gateways: Sequence[str], batch_size: int, max_inflight: int
) -> Proc:
    """bench/replay_gateways.py for ``gateways`` (outboxes in ``work/<gateway>/``), once it
    has built their batches and printed ``ready``; write ``go`` to its stdin to start."""
    log = work / "replay-gateways.log"
    proc = spawn(
        "replay",
        [
            PYTHON,
            str(ROOT / "bench" / "replay_gateways.py"),
            info.mqtt_host,
            str(info.mqtt_port),
            PLANTATION,
            str(batch_size),
            str(max_inflight),
            str(work),
            *gateways,
        ],
        log,
        stdin_pipe=True,
    )
    deadline = time.monotonic() + 300
    while "ready " not in log.read_text(errors="replace"):
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"replay gateways did not get ready:\n{proc.tail()}")
        time.sleep(0.1)
    return proc


def spawn_agent(work: Path, info: StackInfo, gateway: str, state: Path, **outbox: Any) -> Proc:
    """One agent process on the pre-filled outbox in ``state``."""
    return spawn_agents(work, info, [gateway], **outbox)[0]


def spawn_agents(
    work: Path, info: StackInfo, gateways: Sequence[str], per_process: int = 1, **outbox: Any
) -> list[Proc]:
    """Agents for ``gateways`` (outboxes in ``work/<gateway>/``), ``per_process`` per process."""
    runner = str(ROOT / "bench" / "agent_runner.py")
    procs = []
    for first in range(0, len(gateways), per_process):
        group = gateways[first : first + per_process]
        configs = []
        for gw in group:
            cfg = work / f"{gw}.toml"
            cfg.write_text(gateway_toml(info, work / gw, gw, **outbox))
            configs.append(str(cfg))
        procs.append(spawn(group[0], [PYTHON, runner, *configs], work / f"{group[0]}.log"))
    return procs


# --- /proc ---------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK_TCK


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``: system time is the kernel's share (syscalls)."""
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return int(parts[11]) / CLK_TCK, int(parts[12]) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat; diff two of them."""
    with open("/proc/stat") as fh:
        cols = [int(x) for x in fh.readline().split()[1:]]
    idle = cols[3] + cols[4]
    return sum(cols) - idle, sum(cols)


def busy_fraction(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all CPUs busy between two :func:`machine_busy` samples (0..1)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


# --- receipts ------------------------------------------------------------------------------
class ReceiptCounter:
    """Counts readings receipted as stored, over all gateways, with their arrival times."""

    def __init__(self, info: StackInfo, client_id: str = "bench-receipts"):
        self.lock = threading.Lock()
        self.batches: set[str] = set()
        self.stored = 0
        self.first: float | None = None
        self.last: float | None = None
        self.timeline: list[tuple[float, int]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.client.connect(info.mqtt_host, info.mqtt_port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("receipt counter could not subscribe")

    def _connected(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe("farmtel/v1/+/+/receipt", qos=0)
        time.sleep(0.2)
        self.ready.set()

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        receipt = orjson.loads(msg.payload)
        now = time.monotonic()
        with self.lock:
            if receipt["batch"] in self.batches or receipt["status"] != "stored":
                return
            self.batches.add(receipt["batch"])
            self.stored += receipt["stored"]
            self.first = self.first or now
            self.last = now
            self.timeline.append((now, self.stored))

    def wait_for(
        self,
        total: int,
        timeout: float,
        alive: Callable[[], bool] = lambda: True,
        on_first: Callable[[int], None] | None = None,
    ) -> bool:
        """Wait until ``total`` readings are receipted; False on timeout or when not ``alive``.

        ``on_first(stored)`` is called once, soon after the first receipt (to sample CPU).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            with self.lock:
                stored = self.stored
            if on_first is not None and stored > 0:
                on_first(stored)
                on_first = None
            if stored >= total:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
