"""One gateway with several fast simulated text_line boards, an agent and an ingest, on a
given broker and database, with the knobs the fault scenarios turn."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from contract import status_topic
from ingest.influx import InfluxQuery, InfluxQueryError, InfluxSettings
from tests.faults.reconcile import Reconciled, reconcile
from tests.support.mqtt import TestClient
from tests.support.procs import (
    Proc,
    farmtel,
    release_when_open,
    text_line_simulator,
    wait_until,
    write_toml,
)

PLANTATION = "hlj-fault-001"
COLUMNS = ["counter", "moisture_pct", "temp_c"]


def log_time_ns(line: str) -> int:
    """The ``ts=`` stamp of one of our key=value log lines, as ns since the epoch."""
    stamp = line.split(" ", 1)[0].removeprefix("ts=").removesuffix("Z")
    return int(datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp() * 1e9)


class Rig:
    def __init__(
        self,
        tmp: Path,
        mqtt_host: str,
        mqtt_port: int,
        influx_url: str,
        db: str,
        *,
        gateway: str = "gw-fault",
        sensors: int = 4,
        rate: float = 500,
        per_sensor: int = 2000,
        outbox: dict[str, Any] | None = None,
        mqtt: dict[str, Any] | None = None,
        ingest: dict[str, Any] | None = None,
        sensor_options: dict[str, Any] | None = None,
    ):
        self.tmp = tmp
        self.gateway = gateway
        self.db = db
        self.n_sensors = sensors
        self.rate = rate
        self.per_sensor = per_sensor
        self.state = tmp / "agent"
        self.records = {f"soil-{i}": tmp / f"sent{i}.jsonl" for i in range(sensors)}
        self.go = tmp / "go"
        """The boards' start file: created once the first agent run has opened their ports."""
        self.sims: list[Proc] = []
        self.agent: Proc | None = None
        self.ingest: Proc | None = None
        self.agent_runs = 0
        self.ingest_runs = 0
        mq = {"host": mqtt_host, "port": mqtt_port}
        self.gateway_toml = write_toml(
            tmp / "gateway.toml",
            {
                "gateway": {"plantation": PLANTATION, "id": gateway, "state_dir": str(self.state)},
                "mqtt": {**mq, **(mqtt or {})},
                "outbox": {"batch_size": 500, "receipt_timeout": 3.0, **(outbox or {})},
                "status": {"interval": 1.0},
                "sensors": [
                    {
                        "id": f"soil-{i}",
                        "field": "north",
                        "driver": "text_line",
                        "kind": "soil",
                        "port": str(tmp / f"tty-{i}"),
                        "format": "csv",
                        "columns": COLUMNS,
                        "timeout": 0.5,
                        **(sensor_options or {}),
                    }
                    for i in range(sensors)
                ],
            },
        )
        self.ingest_toml = write_toml(
            tmp / "ingest.toml",
            {
                "ingest": {
                    "state_dir": str(tmp / "ingest"),
                    "share_group": f"g-{db}",
                    "retry_max_backoff": 1.0,
                    "metrics_interval": 1.0,
                    **(ingest or {}),
                },
                "mqtt": {**mq, "client_id": f"ingest-{db}"},
                "influxdb": {"url": influx_url, "database": db},
            },
        )
        self.query = InfluxQuery(InfluxSettings(url=influx_url, database=db))
        self.status = TestClient(mqtt_host, mqtt_port)
        topic = status_topic(PLANTATION, gateway)
        self.status.subscribe(topic)
        # A crashed broker forgets the subscription: subscribe again on every reconnect.
        self.status.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)

    @classmethod
    def on(cls, stack: Any, db: str, tmp: Path, **options: Any) -> Rig:
        """A rig against ``stack`` (anything with ``mqtt_host``, ``mqtt_port`` and
        ``influx_url``: the shared stack or a private one) and database ``db``."""
        return cls(tmp, stack.mqtt_host, stack.mqtt_port, stack.influx_url, db, **options)

    # processes ---------------------------------------------------------------------------
    def start_sims(self, extra: list[str] | None = None) -> None:
        for i in range(self.n_sensors):
            self.sims.append(
                text_line_simulator(
                    self.tmp / f"tty-{i}",
                    self.tmp / f"sim{i}.log",
                    COLUMNS,
                    rate=self.rate,
                    count=self.per_sensor,
                    record=self.records[f"soil-{i}"],
                    seed=10 + i,
                    # Lines sent before the driver opens a port are discarded by the open
                    # and would look lost: the boards wait for the agent (start_agent).
                    extra=[
                        "--start-file",
                        str(self.go),
                        "--drain-timeout",
                        "120",
                        *(extra or []),
                    ],
                )
            )
        wait_until(
            lambda: all((self.tmp / f"tty-{i}").exists() for i in range(self.n_sensors)),
            10,
            "simulator ptys",
        )

    def start_agent(self) -> Proc:
        self.agent_runs += 1
        self.agent = farmtel(
            "agent", ["agent", "run", "--config", str(self.gateway_toml)], self.tmp / "agent.log"
        )
        if self.sims and not self.go.exists():
            # The first run: let the boards talk once it has opened every port. (A timeout
            # here leaves them silent, and wait_sims names it.)
            threading.Thread(
                target=release_when_open,
                args=(self.agent, list(self.records), self.go),
                daemon=True,
            ).start()
        return self.agent

    def agent_up(self) -> Proc:
        """Start an agent run and wait until it has connected."""
        proc = self.start_agent()
        self.wait_up("agent")
        return proc

    def start_ingest(self) -> Proc:
        self.ingest_runs += 1
        self.ingest = farmtel(
            "ingest", ["ingest", "run", "--config", str(self.ingest_toml)], self.tmp / "ingest.log"
        )
        return self.ingest

    def wait_up(self, name: str, timeout: float = 60) -> None:
        """Until every agent/ingest run so far has connected to the broker, so that a kill
        which follows hits a working process, not one still importing on a loaded CI box.
        (Counts "mqtt connected" lines: for tests without broker restarts.)"""
        runs = self.agent_runs if name == "agent" else self.ingest_runs
        log = self.tmp / f"{name}.log"
        needle = f"logger={name}.{'publisher' if name == 'agent' else 'service'} msg=mqtt connected"

        def up() -> bool:
            return log.exists() and log.read_text(errors="replace").count(needle) >= runs

        wait_until(up, timeout, f"{name} run {runs} to connect", 0.1)

    def wait_done(self, drain_s: float) -> None:
        """Until the simulators have sent every line (120 s at most) and the agent's outbox
        is empty (``drain_s`` at most)."""
        self.wait_sims(120)
        self.wait_drained(drain_s)

    def sims_done(self) -> bool:
        return all(not s.alive() for s in self.sims)

    def wait_sims(self, timeout: float) -> None:
        wait_until(self.sims_done, timeout, "the simulators to send every line", interval=0.5)

    # observation -------------------------------------------------------------------------
    def last_status(self) -> dict[str, Any] | None:
        for msg in reversed(self.status.messages):
            raw = orjson.loads(msg.payload)
            if "outbox" in raw:
                return dict(raw)
        return None

    def outbox_empty_since(self, after_ns: int) -> bool:
        s = self.last_status()
        return bool(
            s and s["ts"] > after_ns and s["outbox"]["readings"] == 0 and s["outbox"]["gaps"] == 0
        )

    def wait_drained(self, timeout: float) -> None:
        """Until the agent's status (published after now) shows an empty outbox."""
        now = time.time_ns()
        wait_until(
            lambda: self.outbox_empty_since(now), timeout, "the agent's outbox to empty", 0.3
        )

    def stored(self) -> int:
        """Readings of this gateway in InfluxDB (0 while the database does not exist yet)."""
        try:
            series = self.query.query(
                'SELECT count("counter") FROM "soil" WHERE "plantation" = $p AND "gateway" = $g',
                params={"p": PLANTATION, "g": self.gateway},
            )
        except InfluxQueryError:
            return 0
        return int(series[0].values[0][1]) if series and series[0].values else 0

    def reconcile(self) -> Reconciled:
        return reconcile(self.query, PLANTATION, self.gateway, self.records)

    def close(self) -> dict[str, int]:
        """Stop everything; return the exit codes of the last agent and ingest."""
        self.status.close()
        rcs: dict[str, int] = {}
        for name, proc in (("agent", self.agent), ("ingest", self.ingest)):
            if proc is not None:
                try:
                    rcs[name] = proc.stop()
                except AssertionError:
                    rcs[name] = -999
        for sim in self.sims:
            if sim.alive():
                sim.stop()
        return rcs
