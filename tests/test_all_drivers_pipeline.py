"""One gateway with a simulated sensor of every registered driver, through the whole
pipeline: simulators on ptys -> agent -> Mosquitto -> ingest -> InfluxDB.

Each driver's readings must arrive under its own sensor id with the gateway's tags, and
their values must be values its simulator recorded as sent. Two SDI-12 sensors share one
bus (one port), as they do in the field. modbus_soil is included when it is registered.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.influx import InfluxQuery, InfluxSettings
from sensors import registry
from tests.support.procs import (
    Proc,
    farmtel,
    read_records,
    text_line_simulator,
    wait_until,
    write_toml,
)

pytestmark = pytest.mark.integration

PLANTATION = "hlj-all-drivers"
GATEWAY = "gw-all"
MIN_READINGS = 3
"""Readings each sensor must have stored before the test looks at them."""
TAGS = {"plantation", "gateway", "sensor", "field", "clock"}


def _sim(name: str, module: str, link: Path, log: Path, *args: str) -> Proc:
    return Proc(name, [sys.executable, "-m", module, "--link", str(link), *args], log)


def _rows(q: InfluxQuery, kind: str, sensor: str) -> list[dict[str, Any]]:
    series = q.query(
        f'SELECT * FROM "{kind}" WHERE "plantation" = $p AND "sensor" = $s',
        params={"p": PLANTATION, "s": sensor},
    )
    if not series:
        return []
    return [dict(zip(series[0].columns, v, strict=True)) for v in series[0].values]


def _at_address(address: str, record: dict[str, Any]) -> bool:
    return bool(record["address"] == address)


def _values(row: dict[str, Any], names: set[str]) -> dict[str, float]:
    return {k: float(row[k]) for k in names if row.get(k) is not None}


def test_every_driver_reaches_influxdb(stack: Any, influx_db: str, tmp_path: Path) -> None:
    drivers = set(registry.names())
    assert {"text_line", "sdi12", "nmea_weather"} <= drivers
    sims: list[Proc] = []
    sensors: list[dict[str, Any]] = []
    # sensor id -> (measurement, record file, how to pick that sensor's records)
    expect: dict[str, tuple[str, Path, Callable[[dict[str, Any]], bool]]] = {}

    text_record = tmp_path / "text.jsonl"
    sims.append(
        text_line_simulator(
            tmp_path / "tty-text",
            tmp_path / "sim-text.log",
            ["counter", "moisture_pct", "temp_c"],
            rate=5,
            count=0,
            record=text_record,
            seed=7,
            extra=["--start-delay", "1"],
        )
    )
    sensors.append(
        {
            "id": "text-1",
            "field": "east",
            "driver": "text_line",
            "kind": "soil",
            "port": str(tmp_path / "tty-text"),
            "columns": ["counter", "moisture_pct", "temp_c"],
            "timeout": 0.5,
        }
    )
    expect["text-1"] = ("soil", text_record, lambda r: True)

    sdi_record = tmp_path / "sdi12.jsonl"
    sims.append(
        _sim(
            "sim-sdi12",
            "sensors.sdi12.simulator",
            tmp_path / "tty-sdi12",
            tmp_path / "sim-sdi12.log",
            *("--address", "0", "--address", "1", "--profile", "teros12", "--split-values"),
            *("--ttt", "1", "--ready-after", "0.1", "--seed", "3", "--record", str(sdi_record)),
        )
    )
    for address in ("0", "1"):
        sensors.append(
            {
                "id": f"sdi-{address}",
                "field": "north",
                "driver": "sdi12",
                "kind": "soil",
                "port": str(tmp_path / "tty-sdi12"),
                "address": address,
                "profile": "teros12",
                "interval": 1.0,
                "response_timeout": 0.5,
            }
        )
        expect[f"sdi-{address}"] = ("soil", sdi_record, functools.partial(_at_address, address))

    nmea_record = tmp_path / "nmea.jsonl"
    sims.append(
        _sim(
            "sim-nmea",
            "sensors.nmea_weather.simulator",
            tmp_path / "tty-nmea",
            tmp_path / "sim-nmea.log",
            *("--rate", "4", "--seed", "5", "--start-delay", "1", "--record", str(nmea_record)),
        )
    )
    sensors.append(
        {
            "id": "weather-1",
            "field": "north",
            "driver": "nmea_weather",
            "kind": "weather",
            "port": str(tmp_path / "tty-nmea"),
            "timeout": 0.5,
        }
    )
    expect["weather-1"] = ("weather", nmea_record, lambda r: True)

    if "modbus_soil" in drivers:
        modbus_record = tmp_path / "modbus.jsonl"
        sims.append(
            _sim(
                "sim-modbus",
                "sensors.modbus_soil.simulator",
                tmp_path / "tty-modbus",
                tmp_path / "sim-modbus.log",
                *("--profile", "soil_7in1", "--address", "1", "--seed", "9"),
                *("--record", str(modbus_record)),
            )
        )
        sensors.append(
            {
                "id": "probe-1",
                "field": "south",
                "driver": "modbus_soil",
                "kind": "soil",
                "port": str(tmp_path / "tty-modbus"),
                "address": 1,
                "profile": "soil_7in1",
                "interval": 1.0,
            }
        )
        expect["probe-1"] = ("soil", modbus_record, lambda r: True)

    ports = {s["port"] for s in sensors}
    wait_until(lambda: all(Path(p).exists() for p in ports), 15, "simulator ptys")
    gw = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {"plantation": PLANTATION, "id": GATEWAY, "state_dir": str(tmp_path / "gw")},
            "mqtt": {"host": stack.mqtt_host, "port": stack.mqtt_port},
            "outbox": {"batch_size": 100, "receipt_timeout": 10.0},
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
            "influxdb": {"url": stack.influx_url, "database": influx_db},
        },
    )
    ingest = farmtel("ingest", ["ingest", "run", "--config", str(ing)], tmp_path / "ingest.log")
    agent = farmtel("agent", ["agent", "run", "--config", str(gw)], tmp_path / "agent.log")
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    q.create_database(influx_db)  # so that the polling below can query before the first write
    fields = {s["id"]: s["field"] for s in sensors}
    try:

        def all_arrived() -> dict[str, int] | None:
            counts = {sid: len(_rows(q, kind, sid)) for sid, (kind, _, _) in expect.items()}
            return counts if min(counts.values()) >= MIN_READINGS else None

        wait_until(all_arrived, 45, f"{MIN_READINGS} readings of every sensor in InfluxDB")
    finally:
        agent_rc = agent.stop()
        ingest_rc = ingest.stop()
        sim_rcs = {sim.name: sim.stop() for sim in sims}
    assert agent_rc == 0, agent.output()[-3000:]
    assert ingest_rc == 0, ingest.output()[-3000:]
    assert all(rc == 0 for rc in sim_rcs.values()), sim_rcs

    for sensor_id, (kind, record, mine) in expect.items():
        sent = [r["values"] for r in read_records(record) if mine(r)]
        names = {name for values in sent for name in values}
        sent_values = [{k: float(v) for k, v in values.items()} for values in sent]
        rows = _rows(q, kind, sensor_id)
        assert len(rows) >= MIN_READINGS, sensor_id
        for row in rows:
            assert row["plantation"] == PLANTATION and row["gateway"] == GATEWAY, row
            assert row["sensor"] == sensor_id and row["field"] == fields[sensor_id], row
            assert row["clock"] in ("synced", "unsynced"), row
            stored = _values(row, names)
            assert stored, f"{sensor_id}: a row without values: {row}"
            assert stored in sent_values, f"{sensor_id}: stored {stored}, never sent"
        stamps = [row["time"] for row in rows]
        assert len(set(stamps)) == len(stamps), f"{sensor_id}: two readings share a timestamp"
    # The text_line counter shows nothing was stored twice.
    counters = [row["counter"] for row in _rows(q, "soil", "text-1")]
    assert len(set(counters)) == len(counters)
