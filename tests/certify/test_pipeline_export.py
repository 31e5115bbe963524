"""The acceptance round trip through the real pipeline with signing on: simulated sensors ->
agent (signing_key_file) -> Mosquitto -> ingest (registry, require_signatures) -> InfluxDB
-> farmtel export -> farmtel verify."""

from __future__ import annotations

from pathlib import Path

import orjson

from certify.orgkey import new_key_file, public_pem
from contract import signing
from devstack import StackInfo
from ingest.influx import InfluxQuery, InfluxSettings
from ingest.registry import Registry
from tests.support.procs import farmtel, run_cli, text_line_simulator, wait_until, write_toml

PLANTATION = "cert-pipe"
GATEWAY = "gw-sign"
SENSORS = 2
PER_SENSOR = 150


def _count(q: InfluxQuery) -> int:
    series = q.query(
        'SELECT count("counter") FROM "soil" WHERE "plantation" = $p', params={"p": PLANTATION}
    )
    return int(series[0].values[0][1]) if series and series[0].values else 0


def test_signed_pipeline_history_exports_and_verifies(
    stack: StackInfo, influx_db: str, tmp_path: Path
) -> None:
    gateway_key = tmp_path / "gateway-key.pem"
    new_key_file(gateway_key)
    registry = tmp_path / "registry.sqlite"
    with Registry(registry) as reg:
        reg.add_gateway(
            PLANTATION, GATEWAY, signing.load_private_key(gateway_key).public_key(), None, "fp"
        )
    columns = ["counter", "moisture_pct", "temp_c"]
    links = [tmp_path / f"tty-{i}" for i in range(SENSORS)]
    sensors = [
        {
            "id": f"soil-{i}",
            "field": "north",
            "driver": "text_line",
            "kind": "soil",
            "port": str(link),
            "format": "csv",
            "columns": columns,
            "timeout": 0.5,
        }
        for i, link in enumerate(links)
    ]
    gw = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {
                "plantation": PLANTATION,
                "id": GATEWAY,
                "state_dir": str(tmp_path / "agent"),
                "signing_key_file": str(gateway_key),
            },
            "mqtt": {"host": stack.mqtt_host, "port": stack.mqtt_port},
            "outbox": {"batch_size": 40, "receipt_timeout": 10.0},
            "sensors": sensors,
        },
    )
    ing = write_toml(
        tmp_path / "ingest.toml",
        {
            "ingest": {
                "state_dir": str(tmp_path / "ingest"),
                "share_group": f"g-{influx_db}",
                "registry_path": str(registry),
                "require_signatures": True,
            },
            "mqtt": {
                "host": stack.mqtt_host,
                "port": stack.mqtt_port,
                "client_id": f"i-{influx_db}",
            },
            "influxdb": {"url": stack.influx_url, "database": influx_db},
        },
    )
    ingest = farmtel("ingest", ["ingest", "run", "--config", str(ing)], tmp_path / "ingest.log")
    agent = farmtel("agent", ["agent", "run", "--config", str(gw)], tmp_path / "agent.log")
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    total = SENSORS * PER_SENSOR
    sims = []
    try:
        # The agent retries a missing port every second: the sensors appear once it runs,
        # and wait 3 s before the first line so it has opened them (lines before are lost).
        wait_until(lambda: "mqtt connected" in agent.output(), 30, "the agent to connect")
        sims = [
            text_line_simulator(
                link,
                tmp_path / f"sim{i}.log",
                columns,
                rate=100,
                count=PER_SENSOR,
                record=tmp_path / f"sent{i}.jsonl",
                seed=7 + i,
                extra=["--start-delay", "3"],
            )
            for i, link in enumerate(links)
        ]
        for sim in sims:
            wait_until(lambda s=sim: not s.alive(), 60, f"{sim.name} to finish")  # type: ignore[misc]
        wait_until(lambda: _count(q) >= total, 60, f"{total} readings in InfluxDB")
    finally:
        agent_rc = agent.stop()
        ingest_rc = ingest.stop()
        for sim in sims:
            sim.stop()
    assert agent_rc == 0, agent.output()[-2000:]
    assert ingest_rc == 0, ingest.output()[-2000:]

    org = tmp_path / "org.pem"
    pub = tmp_path / "org.pub"
    pub.write_bytes(public_pem(new_key_file(org)))
    out = tmp_path / "bundle"
    res = run_cli(
        [
            "export",
            "--plantation",
            PLANTATION,
            "--from",
            "2020-01-01T00:00:00+00:00",
            "--to",
            "2100-01-01T00:00:00+00:00",
            "--out",
            str(out),
            "--key",
            str(org),
            "--registry",
            str(registry),
            "--url",
            stack.influx_url,
            "--database",
            influx_db,
        ]
    )
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr, res.stderr  # every batch signed and recorded
    batches = [orjson.loads(x) for x in (out / "data/batches.jsonl").read_bytes().splitlines()]
    assert batches and all(b["sig"].startswith("ed25519:") for b in batches)
    assert sum(b["readings"] for b in batches) == total
    verdict = run_cli(["verify", str(out), "--pubkey", str(pub)])
    assert verdict.returncode == 0, verdict.stdout
    first = verdict.stdout.splitlines()[0]
    assert first.startswith(f"VERDICT: VALID. Plantation {PLANTATION}, ")
    assert f"(end excluded): {total} readings in " in first
