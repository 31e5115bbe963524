"""Running it for real, on the real servers: a simulated sensor -> agent -> ingest with an
alert rule and both /metrics endpoints on. Checks ``farmtel status`` (online, then offline
after the agent stops), the alert on the alerts topic and in ``farmtel alerts list``, and
real HTTP GETs of /metrics. Agent and ingest are real processes; the CLI runs in-process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from contract.topics import alerts_topic, status_topic
from devstack.stack import free_port
from ingest.influx import InfluxQuery, InfluxSettings
from tests.support.cli_inproc import invoke as run_cli
from tests.support.mqtt import TestClient
from tests.support.procs import (
    farmtel,
    started_text_line_simulator,
    wait_until,
    write_toml,
)

pytestmark = pytest.mark.integration

P, G = "hlj-ops-live", "gw-ops"
COLUMNS = ["counter", "moisture_pct", "temp_c"]


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return str(response.read().decode())
    except (urllib.error.URLError, ConnectionError):
        return ""


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _count(q: InfluxQuery) -> int:
    series = q.query(
        'SELECT count("moisture_pct") FROM "soil" WHERE "plantation" = $p', params={"p": P}
    )
    return int(series[0].values[0][1]) if series and series[0].values else 0


def test_status_alerts_and_metrics_on_a_running_pipeline(
    stack: Any, influx_db: str, tmp_path: Path
) -> None:
    sim, link = started_text_line_simulator(tmp_path, COLUMNS, rate=20, count=2000, start_delay=1)
    agent_port, ingest_port = free_port(), free_port()
    gw = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {"plantation": P, "id": G, "state_dir": str(tmp_path / "agent")},
            "mqtt": {"host": stack.mqtt_host, "port": stack.mqtt_port},
            "status": {"interval": 1.0},
            "metrics": {"listen": f"127.0.0.1:{agent_port}"},
            "sensors": [
                {
                    "id": "soil-a",
                    "field": "north",
                    "driver": "text_line",
                    "kind": "soil",
                    "port": str(link),
                    "format": "csv",
                    "columns": COLUMNS,
                    "timeout": 0.5,
                }
            ],
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
            "metrics": {"listen": f"127.0.0.1:{ingest_port}"},
            # The simulator's moisture is always far below 1000: fires on the first reading.
            "alerts": [
                {
                    "name": "dry",
                    "plantation": P,
                    "sensor": "soil-*",
                    "value": "moisture_pct",
                    "op": "<",
                    "threshold": 1000.0,
                    "severity": "critical",
                },
                {"name": "never", "value": "moisture_pct", "op": ">", "threshold": 1e9},
            ],
        },
    )
    watcher = TestClient(stack.mqtt_host, stack.mqtt_port)
    watcher.subscribe(alerts_topic(P, G))
    ingest = farmtel("ingest", ["ingest", "run", "--config", str(ing)], tmp_path / "ingest.log")
    agent = farmtel("agent", ["agent", "run", "--config", str(gw)], tmp_path / "agent.log")
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    q.create_database(influx_db)
    db_args = ["--config", str(ing)]
    try:
        wait_until(lambda: _count(q) >= 20, 30, "readings in InfluxDB")

        # Prometheus endpoints: real GETs against the running processes.
        agent_text = wait_until(
            lambda: (
                (t := _get(f"http://127.0.0.1:{agent_port}/metrics"))
                and (_metric(t, "farmtel_agent_readings_in_total") or 0) > 0
                and t
            ),
            15,
            "agent /metrics with readings",
        )
        assert f'gateway="{G}"' in agent_text
        assert _metric(agent_text, "farmtel_agent_outbox_readings") is not None
        ingest_text = wait_until(
            lambda: (
                (t := _get(f"http://127.0.0.1:{ingest_port}/metrics"))
                and (_metric(t, "farmtel_ingest_readings_stored_total") or 0) > 0
                and t
            ),
            15,
            "ingest /metrics with stored readings",
        )
        assert "# TYPE farmtel_ingest_readings_stored_total counter" in ingest_text
        assert (_metric(ingest_text, "farmtel_ingest_alerts_fired_total") or 0) >= 1
        with pytest.raises(urllib.error.HTTPError) as not_found:
            urllib.request.urlopen(f"http://127.0.0.1:{ingest_port}/other", timeout=5)
        assert not_found.value.code == 404

        # The alert: once on MQTT (fired once, not once per reading), and in InfluxDB.
        msgs = watcher.wait_for(1, timeout=15)
        alert = orjson.loads(msgs[0].payload)
        assert alert["rule"] == "dry" and alert["state"] == "firing"
        assert alert["sensor"] == "soil-a" and alert["severity"] == "critical"
        res = run_cli(["alerts", "list", "--plantation", P, *db_args, "--format", "json"])
        assert res.returncode == 0, res.stderr
        listed = [json.loads(line) for line in res.stdout.splitlines()]
        assert [(a["rule"], a["state"]) for a in listed] == [("dry", "firing")]
        assert listed[0]["condition"] == "moisture_pct < 1000"
        table = run_cli(["alerts", "list", *db_args, "--state", "firing", "--since", "1h"])
        assert table.returncode == 0 and "dry" in table.stdout and "critical" in table.stdout
        none = run_cli(["alerts", "list", *db_args, "--state", "resolved"])
        assert none.returncode == 0 and "no alerts" in none.stderr

        # Status from the retained message: online, with its outbox and sensors.
        args = ["status", "--plantation", P, *db_args, "--allow-unsynced-clock"]
        res = wait_until(
            lambda: (r := run_cli([*args, "--format", "json"])).returncode == 0 and r,
            20,
            "farmtel status to say all is well",
        )
        doc = json.loads(res.stdout)
        assert doc["attention"] is False
        [row] = doc["gateways"]
        assert (row["plantation"], row["gateway"], row["state"]) == (P, G, "online")
        assert row["failing_sensors"] == [] and row["outbox_readings"] is not None
        table = run_cli(args)
        assert table.returncode == 0 and G in table.stdout and "online" in table.stdout
    finally:
        watcher.close()
        agent_rc = agent.stop()
        sim.stop()
    try:
        # Stopped: the final retained status says offline, and that needs attention.
        res = run_cli(["status", "--plantation", P, *db_args, "--format", "json"])
        assert res.returncode == 3, (res.stdout, res.stderr)
        [row] = json.loads(res.stdout)["gateways"]
        assert row["state"] == "offline" and "offline" in row["problems"]
    finally:
        ingest_rc = ingest.stop()
        # Leave no retained status behind for other tests' subscriptions to pick up.
        cleaner = TestClient(stack.mqtt_host, stack.mqtt_port)
        cleaner.client.publish(status_topic(P, G), b"", qos=1, retain=True).wait_for_publish(10)
        cleaner.close()
    assert agent_rc == 0, agent.output()[-2000:]
    assert ingest_rc == 0, ingest.output()[-2000:]
    assert "alert state=firing rule=dry" in ingest.output()
