"""`farmtel status` on retained status messages in the real broker and farmtel_agent /
farmtel_ingest points in the real InfluxDB: what needs attention, and the exit codes."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import orjson
import pytest

from contract.topics import status_topic
from devstack.stack import free_port
from ingest.influx import InfluxSettings, make_writer
from ingest.line_protocol import encode_point
from tests.support.cli_inproc import invoke as run_cli
from tests.support.mqtt import TestClient


def _status(
    gateway: str,
    *,
    state: str = "online",
    age_s: float = 1.0,
    clock: str = "synced",
    backlog: int = 0,
    oldest_age_s: float | None = None,
    sensors: dict[str, str] | None = None,
    batch_limit: int = 2000,
) -> bytes:
    """A status payload shaped like agent/service.py ``status_payload``."""
    return orjson.dumps(
        {
            "state": state,
            "gateway": gateway,
            "boot": "b",
            "ts": time.time_ns() - int(age_s * 1e9),
            "clock": clock,
            "outbox": {
                "readings": backlog,
                "gaps": 0,
                "bytes": 4096,
                "oldest_age_s": oldest_age_s,
                "inflight_batches": 2 if backlog else 0,
                "batch_limit": batch_limit,
                "dropped": 0,
            },
            "sensors": {k: {"state": v} for k, v in (sensors or {"s-1": "ok"}).items()},
            "counters": {},
        }
    )


def _publish_retained(stack: Any, plantation: str, statuses: dict[str, bytes]) -> None:
    client = TestClient(stack.mqtt_host, stack.mqtt_port)
    try:
        for gateway, payload in statuses.items():
            info = client.client.publish(
                status_topic(plantation, gateway), payload, qos=1, retain=True
            )
            info.wait_for_publish(timeout=10)
    finally:
        client.close()


def _clear_retained(stack: Any, plantation: str, gateways: list[str]) -> None:
    _publish_retained(stack, plantation, dict.fromkeys(gateways, b""))


def _args(stack: Any, plantation: str, influx_db: str) -> list[str]:
    return [
        "status",
        "--plantation",
        plantation,
        "--broker",
        f"{stack.mqtt_host}:{stack.mqtt_port}",
        "--url",
        stack.influx_url,
        "--database",
        influx_db,
        "--wait",
        "1",
    ]


@pytest.mark.integration
def test_all_well_exits_0(stack: Any, influx_db: str) -> None:
    plantation = f"st-ok-{uuid.uuid4().hex[:6]}"
    _publish_retained(stack, plantation, {"gw-1": _status("gw-1"), "gw-2": _status("gw-2")})
    try:
        res = run_cli([*_args(stack, plantation, influx_db), "--no-influx"])
        assert res.returncode == 0, (res.stdout, res.stderr)
        assert "gw-1" in res.stdout and "gw-2" in res.stdout and "ok" in res.stdout
        as_json = run_cli([*_args(stack, plantation, influx_db), "--format", "json", "--utc"])
        assert as_json.returncode == 0, as_json.stderr
        # The database does not exist yet: no farmtel_agent points, and nothing to warn about.
        assert as_json.stderr == ""
        doc = json.loads(as_json.stdout)
        assert doc["attention"] is False
        assert [g["gateway"] for g in doc["gateways"]] == ["gw-1", "gw-2"]
    finally:
        _clear_retained(stack, plantation, ["gw-1", "gw-2"])


@pytest.mark.integration
def test_every_kind_of_trouble_exits_3(stack: Any, influx_db: str) -> None:
    plantation = f"st-bad-{uuid.uuid4().hex[:6]}"
    statuses = {
        "gw-off": orjson.dumps({"state": "offline", "reason": "connection lost"}),
        "gw-stale": _status("gw-stale", age_s=900),
        "gw-backlog": _status("gw-backlog", backlog=5000, oldest_age_s=3600),
        "gw-clock": _status("gw-clock", clock="unsynced"),
        "gw-sensor": _status("gw-sensor", sensors={"s-1": "ok", "s-2": "failing", "s-3": "silent"}),
        "gw-ok": _status("gw-ok", backlog=10, oldest_age_s=5, batch_limit=250),
    }
    # A gateway that InfluxDB knows (farmtel_agent point) but whose retained status is gone,
    # and an ingest's self-metrics point.
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=influx_db))
    now = time.time_ns()
    writer.write(
        "\n".join(
            [
                encode_point(
                    "farmtel_agent",
                    {"plantation": plantation, "gateway": "gw-gone"},
                    {
                        "state": "online",
                        "outbox_readings": 7,
                        "inflight_batches": 1,
                        "batch_limit": 500,
                    },
                    now - 3_600_000_000_000,
                ),
                encode_point(
                    "farmtel_ingest",
                    {"host": "box", "client_id": "ingest-a"},
                    {"readings_stored": 1234, "inbox": 3},
                    now,
                ),
            ]
        ).encode()
    )
    _publish_retained(stack, plantation, statuses)
    try:
        res = run_cli([*_args(stack, plantation, influx_db), "--format", "json"])
        assert res.returncode == 3, (res.stdout, res.stderr)
        doc = json.loads(res.stdout)
        rows = {g["gateway"]: g for g in doc["gateways"]}
        assert doc["attention"] is True
        assert rows["gw-off"]["state"] == "offline"
        assert rows["gw-stale"]["state"] == "stale"
        assert any("outbox backlog 5000" in p for p in rows["gw-backlog"]["problems"])
        assert rows["gw-clock"]["problems"] == ["clock unsynced"]
        assert rows["gw-sensor"]["failing_sensors"] == ["s-2", "s-3"]
        assert rows["gw-ok"]["problems"] == []
        assert rows["gw-ok"]["inflight_batches"] == 2
        # A gateway whose link dropped shows the smaller batches it sends now.
        assert rows["gw-ok"]["batch_limit"] == 250 and rows["gw-stale"]["batch_limit"] == 2000
        assert rows["gw-gone"]["batch_limit"] == 500
        assert rows["gw-gone"]["source"] == "influxdb"
        assert rows["gw-gone"]["state"] == "unknown" and rows["gw-gone"]["outbox_readings"] == 7
        assert [i["client_id"] for i in doc["ingests"]] == ["ingest-a"]

        table = run_cli(_args(stack, plantation, influx_db))
        assert table.returncode == 3
        assert "failing sensor(s): s-2, s-3" in table.stdout
        header = table.stdout.splitlines()[0].split()
        gw_ok = next(line.split() for line in table.stdout.splitlines() if "gw-ok" in line)
        assert "batch" in header and gw_ok[header.index("batch")] == "250"
        assert "ingest ingest-a on box" in table.stdout and "1234 readings stored" in table.stdout

        # Thresholds are options: relaxed enough, the backlog and the clock are fine.
        relaxed = run_cli(
            [
                *_args(stack, plantation, influx_db),
                "--no-influx",
                "--format",
                "json",
                "--max-backlog-age",
                "7200",
                "--stale-after",
                "3600",
                "--allow-unsynced-clock",
            ]
        )
        rows = {g["gateway"]: g for g in json.loads(relaxed.stdout)["gateways"]}
        assert rows["gw-backlog"]["problems"] == [] and rows["gw-clock"]["problems"] == []
        assert rows["gw-stale"]["state"] == "online"
        assert "gw-gone" not in rows
        assert relaxed.returncode == 3  # gw-off and gw-sensor still need attention
    finally:
        _clear_retained(stack, plantation, list(statuses))


@pytest.mark.integration
def test_no_gateway_at_all_needs_attention(stack: Any, influx_db: str) -> None:
    res = run_cli([*_args(stack, "st-nobody", influx_db), "--no-influx"])
    assert res.returncode == 3
    assert "no gateway status found for plantation st-nobody" in res.stderr


@pytest.mark.integration
def test_influxdb_down_is_a_warning_not_a_failure(stack: Any) -> None:
    plantation = f"st-noinflux-{uuid.uuid4().hex[:6]}"
    _publish_retained(stack, plantation, {"gw-1": _status("gw-1")})
    try:
        res = run_cli(
            [
                "status",
                "--plantation",
                plantation,
                "--broker",
                f"{stack.mqtt_host}:{stack.mqtt_port}",
                "--url",
                f"http://127.0.0.1:{free_port()}",
            ]
        )
        assert res.returncode == 0, res.stderr
        assert "warning: InfluxDB not consulted" in res.stderr
    finally:
        _clear_retained(stack, plantation, ["gw-1"])


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--broker", "nohost"], 2, "--broker 'nohost' must look like host:port"),
        (["--broker", "h:99999"], 2, "must look like host:port"),
        (["--plantation", "Bad Id"], 2, "--plantation 'Bad Id' must match"),
        (["--format", "csv"], 2, "csv"),
        (["--config", "/nonexistent/ingest.toml"], 2, "does not exist"),
    ],
)
def test_bad_options(args: list[str], code: int, needle: str) -> None:
    res = run_cli(["status", *args])
    assert res.returncode == code, (res.stdout, res.stderr)
    assert needle in res.stderr + res.stdout


def test_unreachable_broker_is_a_clear_error() -> None:
    port = free_port()
    res = run_cli(["status", "--broker", f"127.0.0.1:{port}", "--no-influx"])
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert f"127.0.0.1:{port}" in res.stderr and "cannot be reached" in res.stderr
    assert "Traceback" not in res.stderr
