"""Two Modbus probes on one simulated RS-485 bus, through the agent into the real InfluxDB:
a calibrated probe's readings carry the calibration version as ``cal``; a probe whose
every value is outside its range stores nothing and shows its rejections in the status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from contract import status_topic
from ingest.influx import InfluxQuery, InfluxQueryError, InfluxSettings
from tests.sensors.wire_runner import Simulator, read_records
from tests.support.mqtt import TestClient
from tests.support.procs import farmtel, wait_until, write_toml

pytestmark = pytest.mark.integration

PLANTATION = "hlj-modbus-001"
GATEWAY = "gw-modbus"
CAL_VERSION = "2026-04-01-lab"


def _rows(q: InfluxQuery, sensor: str) -> list[dict[str, Any]]:
    try:
        series = q.query(
            'SELECT * FROM "soil" WHERE "plantation" = $p AND "sensor" = $s',
            params={"p": PLANTATION, "s": sensor},
        )
    except InfluxQueryError as err:
        if "database not found" in str(err):  # ingest creates it with its first write
            return []
        raise
    if not series:
        return []
    return [dict(zip(series[0].columns, v, strict=True)) for v in series[0].values]


def _rejected(client: TestClient, sensor: str) -> int:
    for message in reversed(client.messages):
        sensors = orjson.loads(message.payload).get("sensors", {})
        if sensor in sensors:
            return int(sensors[sensor]["rejected"].get("out_of_range", 0))
    return 0


def test_calibration_version_stored_and_out_of_range_counted(
    stack: Any, influx_db: str, tmp_path: Path
) -> None:
    link = tmp_path / "rs485"
    record = tmp_path / "sent.jsonl"
    args = ["--address", "1", "--address", "2", "--seed", "9", "--record", str(record)]
    common: dict[str, Any] = {
        "field": "north",
        "driver": "modbus_soil",
        "kind": "soil",
        "port": str(link),
    }
    common |= {"profile": "soil_4in1", "interval": 0.2, "timeout": 0.5}
    calibrated = {
        "id": "probe-cal",
        "address": 1,
        "calibration": {
            "version": CAL_VERSION,
            "date": "2026-04-01",
            "by": "J. Wang",
            "values": {"moisture_pct": {"offset": -1.2, "scale": 1.03}},
        },
        **common,
    }
    implausible = {"id": "probe-bad", "address": 2, "ranges": {"temp_c": [100, 200]}, **common}
    gw = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {
                "plantation": PLANTATION,
                "id": GATEWAY,
                "state_dir": str(tmp_path / "agent"),
            },
            "mqtt": {"host": stack.mqtt_host, "port": stack.mqtt_port},
            "outbox": {"batch_size": 50, "receipt_timeout": 10.0},
            "status": {"interval": 1.0},
            "sensors": [calibrated, implausible],
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
            "influxdb": {"url": stack.influx_url, "database": influx_db},
        },
    )
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    status = TestClient(stack.mqtt_host, stack.mqtt_port)
    status.subscribe(status_topic(PLANTATION, GATEWAY))
    with Simulator("sensors.modbus_soil", link, *args) as sim:
        sim.ready()
        ingest = farmtel("ingest", ["ingest", "run", "--config", str(ing)], tmp_path / "i.log")
        agent = farmtel("agent", ["agent", "run", "--config", str(gw)], tmp_path / "a.log")
        try:
            wait_until(lambda: len(_rows(q, "probe-cal")) >= 5, 60, "5 calibrated readings")
            wait_until(lambda: _rejected(status, "probe-bad") >= 3, 30, "rejections in status")
        finally:
            status.close()
            agent_rc = agent.stop()
            ingest_rc = ingest.stop()
            sim.stop()
    assert agent_rc == 0, agent.output()[-3000:]
    assert ingest_rc == 0, ingest.output()[-3000:]
    rows = _rows(q, "probe-cal")
    assert rows and all(row["cal"] == CAL_VERSION for row in rows)
    sent = [r["values"] for r in read_records(record) if r["address"] == 1]
    expected = {round(v["moisture_pct"] * 1.03 - 1.2, 6) for v in sent}
    for row in rows:
        assert round(row["moisture_pct"], 6) in expected
        assert row["temp_c"] in {v["temp_c"] for v in sent}
    assert _rows(q, "probe-bad") == []
    assert "reason=out_of_range" in agent.output()
    assert "temp_c=" in agent.output() and "outside [100.0, 200.0]" in agent.output()
