"""The whole pipeline on the real servers: simulated sensors on ptys -> agent -> Mosquitto
-> ingest -> InfluxDB, checked reading by reading."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from contract import status_topic
from ingest.influx import InfluxQuery, InfluxSettings
from tests.support.mqtt import TestClient
from tests.support.procs import (
    farmtel,
    read_records,
    text_line_simulator,
    wait_until,
    write_toml,
)
from tests.support.v2proxy import V2WriteProxy

pytestmark = pytest.mark.integration

PLANTATION = "hlj-test-001"
COLUMNS = ["counter", "moisture_pct", "temp_c", "ec_us_cm"]
SENSORS = 4
# v1: 10,400 readings in all. v2 (influxdb-client through the test proxy): 4,000.
PER_SENSOR = {"v1": 2_600, "v2": 1_000}


def _count(q: InfluxQuery) -> int:
    series = q.query(
        'SELECT count("counter") FROM "soil" WHERE "plantation" = $p', params={"p": PLANTATION}
    )
    return int(series[0].values[0][1]) if series and series[0].values else 0


def _outbox_rows(path: Path) -> int:
    if not path.exists():
        return -1
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT total(n) FROM readings").fetchone()[0])


def _ports_open(client: TestClient) -> int:
    if not client.messages:
        return 0
    sensors = orjson.loads(client.messages[-1].payload).get("sensors", {})
    return sum(1 for s in sensors.values() if s.get("port_open"))


def _status_outbox(client: TestClient) -> int | None:
    if not client.messages:
        return None
    return int(orjson.loads(client.messages[-1].payload)["outbox"]["readings"])


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_readings_stored_exactly_once(stack: Any, influx_db: str, tmp_path: Path, api: str) -> None:
    """v1 writes with /write to the real 1.6.7. v2 writes with influxdb-client's
    /api/v2/write through a test-only proxy onto the same server's /write (what 1.8's
    compatibility layer does): no 2.x/3.x server can be installed here."""
    per_sensor = PER_SENSOR[api]
    gateway = f"gw-pipe-{api}"  # its own retained status per run
    influx_url = stack.influx_url
    proxy = None
    if api == "v2":
        proxy = V2WriteProxy(stack.influx_url).start()
        influx_url = proxy.url
        # influxdb-client cannot create a bucket through 1.6.7; the v1 writer does it itself.
        InfluxQuery(InfluxSettings(url=stack.influx_url)).create_database(influx_db)
    sims = []
    sensors = []
    for i in range(SENSORS):
        link = tmp_path / f"tty-soil-{i}"
        sims.append(
            text_line_simulator(
                link,
                tmp_path / f"sim{i}.log",
                COLUMNS,
                rate=400,
                count=per_sensor,
                record=tmp_path / f"sent{i}.jsonl",
                seed=100 + i,
                extra=["--start-file", str(tmp_path / "go")],
            )
        )
        sensors.append(
            {
                "id": f"soil-{i}",
                "field": "north" if i % 2 else "south",
                "driver": "text_line",
                "kind": "soil",
                "port": str(link),
                "format": "csv",
                "columns": COLUMNS,
                "timeout": 0.5,
            }
        )
    wait_until(
        lambda: all((tmp_path / f"tty-soil-{i}").exists() for i in range(SENSORS)),
        10,
        "simulator ptys",
    )
    state = tmp_path / "agent"
    gw = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {"plantation": PLANTATION, "id": gateway, "state_dir": str(state)},
            "mqtt": {"host": stack.mqtt_host, "port": stack.mqtt_port},
            "outbox": {"batch_size": 500, "receipt_timeout": 10.0},
            "status": {"interval": 1.0},
            "sensors": sensors,
        },
    )
    ing = write_toml(
        tmp_path / "ingest.toml",
        {
            "ingest": {"state_dir": str(tmp_path / "ingest"), "share_group": f"g-{influx_db}"},
            "mqtt": {
                "host": stack.mqtt_host,
                "port": stack.mqtt_port,
                "client_id": f"ingest-{influx_db}",
            },
            "influxdb": {"url": influx_url, "database": influx_db, "api": api},
        },
    )
    ingest = farmtel("ingest", ["ingest", "run", "--config", str(ing)], tmp_path / "ingest.log")
    agent = farmtel("agent", ["agent", "run", "--config", str(gw)], tmp_path / "agent.log")
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    status = TestClient(stack.mqtt_host, stack.mqtt_port)
    status.subscribe(status_topic(PLANTATION, gateway))
    try:
        # The simulators start once the agent holds every port open, so the test compares
        # against every line the sensors printed.
        wait_until(lambda: _ports_open(status) == SENSORS, 60, "the agent to open every port")
        (tmp_path / "go").touch()
        for sim in sims:
            wait_until(lambda s=sim: not s.alive(), 90, f"{sim.name} to finish")  # type: ignore[misc]
        total = SENSORS * per_sensor
        wait_until(lambda: _count(q) >= total, 60, f"{total} readings in InfluxDB")
        # Every batch receipted: the gateway's status reports an empty outbox.
        wait_until(lambda: _status_outbox(status) == 0, 30, "the status to show an empty outbox")
    finally:
        status.close()
        agent_rc = agent.stop()
        ingest_rc = ingest.stop()
        for sim in sims:
            sim.stop()
        if proxy is not None:
            proxy.stop()
    if proxy is not None:
        # The writes really went through influxdb-client's /api/v2/write.
        assert proxy.requests and all(p.startswith("/api/v2/write") for p, _ in proxy.requests)
        assert {status for _, status in proxy.requests} == {204}
    assert agent_rc == 0, agent.output()[-3000:]
    assert ingest_rc == 0, ingest.output()[-3000:]
    assert _outbox_rows(state / "outbox.sqlite") == 0

    for i in range(SENSORS):
        sent = read_records(tmp_path / f"sent{i}.jsonl")
        assert len(sent) == per_sensor
        series = q.query(
            'SELECT * FROM "soil" WHERE "plantation" = $p AND "sensor" = $s',
            params={"p": PLANTATION, "s": f"soil-{i}"},
        )
        assert len(series) == 1
        cols = series[0].columns
        rows = [dict(zip(cols, v, strict=True)) for v in series[0].values]
        # Exactly once: one stored point per emitted line, matched on the device's counter.
        by_counter: dict[float, dict[str, Any]] = {}
        for row in rows:
            assert row["counter"] not in by_counter, f"counter {row['counter']} stored twice"
            by_counter[row["counter"]] = row
        assert len(rows) == per_sensor
        last_ts = 0
        for rec in sent:
            row = by_counter[float(rec["values"]["counter"])]
            for name in COLUMNS:
                assert row[name] == rec["values"][name], (name, row, rec)
            assert row["plantation"] == PLANTATION
            assert row["gateway"] == gateway
            assert row["sensor"] == f"soil-{i}"
            assert row["field"] == ("north" if i % 2 else "south")
            assert row["clock"] in ("synced", "unsynced")
            # The gateway stamps the time the line arrived: after it was sent, soon after.
            assert rec["sent_ns"] <= row["time"] < rec["sent_ns"] + 5_000_000_000, (rec, row)
            assert row["time"] > last_ts
            last_ts = row["time"]
        seqs = [r["seq"] for r in rows]
        assert len(set(seqs)) == len(seqs)
    # Sequence numbers cover the gateway without holes or repeats.
    all_seq = q.query('SELECT "seq" FROM "soil" WHERE "plantation" = $p', params={"p": PLANTATION})
    seqs = sorted(v[1] for v in all_seq[0].values)
    assert seqs == list(range(seqs[0], seqs[0] + SENSORS * per_sensor))
