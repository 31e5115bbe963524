"""`farmtel status` on retained status messages in the real broker and farmtel_agent /
farmtel_ingest points in the real InfluxDB: what needs attention, and the exit codes."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from contract.topics import status_topic
from devstack import Stack
from devstack.stack import free_port
from ingest.config import IngestConfig
from ingest.influx import InfluxSettings, make_writer
from ingest.line_protocol import encode_point
from ingest.selfmetrics import SelfMetrics
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
    dead_lettered: int | None = None,
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
            "counters": {} if dead_lettered is None else {"dead_lettered": dead_lettered},
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
def test_influxdb_unreachable_needs_attention(stack: Any) -> None:
    plantation = f"st-noinflux-{uuid.uuid4().hex[:6]}"
    _publish_retained(stack, plantation, {"gw-1": _status("gw-1")})
    url = f"http://127.0.0.1:{free_port()}"
    args = [
        "status",
        "--plantation",
        plantation,
        "--broker",
        f"{stack.mqtt_host}:{stack.mqtt_port}",
    ]
    try:
        res = run_cli([*args, "--url", url])
        assert res.returncode == 3, (res.stdout, res.stderr)
        assert f"attention: InfluxDB at {url} did not answer query " in res.stdout
        assert "connection refused" in res.stdout and "Traceback" not in res.stderr
        doc = json.loads(run_cli([*args, "--url", url, "--format", "json"]).stdout)
        assert doc["attention"] is True
        assert doc["gateways"][0]["problems"] == []  # the gateway itself is fine
        assert doc["influxdb"]["consulted"] is True
        assert doc["influxdb"]["problem"].startswith(f"InfluxDB at {url} did not answer query ")
        # Without InfluxDB on purpose, the broker's word is all there is to judge.
        res = run_cli([*args, "--url", url, "--no-influx", "--format", "json"])
        assert res.returncode == 0, res.stdout
        assert json.loads(res.stdout)["influxdb"] == {
            "url": url,
            "database": "farmtel",
            "consulted": False,
            "problem": None,
        }
    finally:
        _clear_retained(stack, plantation, ["gw-1"])


def test_influxdb_that_hangs_needs_attention(private_stack: Stack, tmp_path: Path) -> None:
    """The audit's case: influxd stopped (SIGSTOP) took the ingests' lines away, exit 0."""
    info = private_stack.info()
    db = "hung"
    make_writer(InfluxSettings(url=info.influx_url, database=db)).write(
        encode_point(
            "farmtel_ingest",
            {"host": "box", "client_id": "ingest-a"},
            {"messages": 1},
            time.time_ns(),
        ).encode()
    )
    _publish_retained(info, "st-hung", {"gw-1": _status("gw-1")})
    config = tmp_path / "ingest.toml"
    config.write_text(f'[influxdb]\nurl = "{info.influx_url}"\ndatabase = "{db}"\ntimeout = 1\n')
    args = ["status", "--config", str(config), "--broker", f"{info.mqtt_host}:{info.mqtt_port}"]
    well = run_cli([*args, "--format", "json"])
    assert well.returncode == 0, (well.stdout, well.stderr)
    assert [i["client_id"] for i in json.loads(well.stdout)["ingests"]] == ["ingest-a"]
    private_stack.pause("influxdb")
    try:
        res = run_cli([*args, "--format", "json"])
        table = run_cli(args)
    finally:
        private_stack.resume("influxdb")
    assert res.returncode == 3, (res.stdout, res.stderr)
    doc = json.loads(res.stdout)
    assert doc["attention"] is True and doc["ingests"] == []
    problem = doc["influxdb"]["problem"]
    assert problem.startswith(f"InfluxDB at {info.influx_url} did not answer query ")
    assert "timed out" in problem
    assert table.returncode == 3
    assert f"attention: InfluxDB at {info.influx_url} did not answer" in table.stdout


def _ingest_point(client_id: str, age_s: float, **fields: int) -> str:
    return encode_point(
        "farmtel_ingest",
        {"host": "box", "client_id": client_id},
        {"messages": 1, **fields},
        time.time_ns() - int(age_s * 1e9),
    )


@pytest.mark.integration
def test_an_ingest_that_stopped_reporting_needs_attention(stack: Any, influx_db: str) -> None:
    plantation = f"st-ingest-{uuid.uuid4().hex[:6]}"
    make_writer(InfluxSettings(url=stack.influx_url, database=influx_db)).write(
        "\n".join(
            [
                # Killed: reported every 5 s, last 25 s ago (the audit's case).
                _ingest_point("ingest-dead", 30, metrics_interval_ms=5000),
                _ingest_point("ingest-dead", 25, metrics_interval_ms=5000),
                _ingest_point("ingest-live", 1, metrics_interval_ms=5000),
                # An older ingest whose points do not say: the gap between its last two.
                _ingest_point("ingest-older", 160),
                _ingest_point("ingest-older", 100),
                # Stopped cleanly long ago: not missing.
                _ingest_point("ingest-retired", 900, metrics_interval_ms=5000, stopped=1),
            ]
        ).encode()
    )
    _publish_retained(stack, plantation, {"gw-1": _status("gw-1")})
    try:
        res = run_cli([*_args(stack, plantation, influx_db), "--format", "json", "--utc"])
        assert res.returncode == 3, (res.stdout, res.stderr)
        doc = json.loads(res.stdout)
        assert doc["attention"] is True and doc["gateways"][0]["problems"] == []
        ingests = {i["client_id"]: i for i in doc["ingests"]}
        assert ingests["ingest-dead"]["report_interval_s"] == 5
        [problem] = ingests["ingest-dead"]["problems"]
        assert problem.startswith("no report for 25 s, since 20") and "every 5 s" in problem
        assert ingests["ingest-live"]["problems"] == []
        assert ingests["ingest-older"]["report_interval_s"] == 60
        assert ingests["ingest-older"]["problems"] == []
        assert ingests["ingest-retired"]["problems"] == []

        table = run_cli(_args(stack, plantation, influx_db))
        assert table.returncode == 3
        dead = next(x for x in table.stdout.splitlines() if x.startswith("ingest ingest-dead"))
        assert re.search(r"last report 2\d s ago \(every 5 s\).*; attention: no report for", dead)
        live = next(x for x in table.stdout.splitlines() if x.startswith("ingest ingest-live"))
        assert "attention" not in live

        # The threshold is an option: 10 intervals of 5 s are not over yet.
        relaxed = run_cli([*_args(stack, plantation, influx_db), "--ingest-late-after", "10"])
        assert relaxed.returncode == 0, relaxed.stdout
    finally:
        _clear_retained(stack, plantation, ["gw-1"])


@pytest.mark.integration
def test_an_ingest_stopped_cleanly_is_not_missing(stack: Any, influx_db: str) -> None:
    """Scaled down or stopped for an upgrade: its last point says so, and status shows it
    without asking for attention (a killed one, above, has no such point)."""
    config = IngestConfig.model_validate(
        {
            "ingest": {"metrics_interval": 1.0},
            "mqtt": {"client_id": "ingest-retired"},
            "influxdb": {"url": stack.influx_url},
        }
    )
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=influx_db))
    metrics = SelfMetrics(config, writer, {"messages": 0, "dead_letters": 0}, lambda: 0)
    metrics.start()
    metrics.stop()
    plantation = f"st-stopped-{uuid.uuid4().hex[:6]}"
    _publish_retained(stack, plantation, {"gw-1": _status("gw-1")})
    try:
        # The real SelfMetrics marks its last point (status judging it: the test above).
        res = run_cli([*_args(stack, plantation, influx_db), "--format", "json"])
        [ingest] = json.loads(res.stdout)["ingests"]
        assert ingest["fields"]["stopped"] == 1 and ingest["problems"] == []
        table = run_cli([*_args(stack, plantation, influx_db)])
        assert "ingest ingest-retired on" in table.stdout
        assert "stopped cleanly" in table.stdout
    finally:
        _clear_retained(stack, plantation, ["gw-1"])


@pytest.mark.integration
def test_the_ingest_point_says_how_often_it_comes(stack: Any, influx_db: str) -> None:
    config = IngestConfig.model_validate(
        {"ingest": {"metrics_interval": 2.5}, "influxdb": {"url": stack.influx_url}}
    )
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=influx_db))
    SelfMetrics(config, writer, {"messages": 0, "dead_letters": 0}, lambda: 0).flush()
    _publish_retained(stack, "st-interval", {"gw-1": _status("gw-1")})
    try:
        res = run_cli([*_args(stack, "st-interval", influx_db), "--format", "json"])
        assert res.returncode == 0, (res.stdout, res.stderr)
        [ingest] = json.loads(res.stdout)["ingests"]
        assert (
            ingest["report_interval_s"] == 2.5 and ingest["fields"]["metrics_interval_ms"] == 2500
        )
    finally:
        _clear_retained(stack, "st-interval", ["gw-1"])


@pytest.mark.integration
def test_dead_lettered_batches_need_attention_within_the_window(stack: Any, influx_db: str) -> None:
    plantation = f"st-dead-{uuid.uuid4().hex[:6]}"
    two_hours = 7200.0
    # farmtel_agent points the way the ingest writes them: from the agents' status messages.
    earlier = {
        "gw-revoked": _status("gw-revoked", age_s=two_hours, dead_lettered=0),
        "gw-once": _status("gw-once", age_s=two_hours, dead_lettered=3),
        "gw-restarted": _status("gw-restarted", age_s=two_hours, dead_lettered=5),
        "gw-new": _status("gw-new", age_s=60, dead_lettered=2),
    }
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=influx_db))
    metrics = SelfMetrics(IngestConfig(), writer, {"messages": 0, "dead_letters": 0}, lambda: 0)
    for gateway, payload in earlier.items():
        assert metrics.take_status(status_topic(plantation, gateway), payload)
    metrics.flush()
    writer.write(
        "\n".join(
            [
                # Written before the ingest stored the counter: the window cannot be judged.
                encode_point(
                    "farmtel_agent",
                    {"plantation": plantation, "gateway": "gw-upgraded"},
                    {"state": "online"},
                    time.time_ns() - int(two_hours * 1e9),
                ),
                _ingest_point("ingest-a", two_hours, dead_letters=10),
                _ingest_point("ingest-a", 1, dead_letters=16, metrics_interval_ms=10_000),
            ]
        ).encode()
    )
    now = {
        "gw-revoked": _status("gw-revoked", dead_lettered=4),  # 4 refused in the window
        "gw-once": _status("gw-once", dead_lettered=3),  # one bad batch, long ago
        "gw-restarted": _status("gw-restarted", dead_lettered=1),  # restarted, 1 since
        "gw-new": _status("gw-new", dead_lettered=2),  # began within the window
        "gw-upgraded": _status("gw-upgraded", dead_lettered=7),
        "gw-clean": _status("gw-clean", dead_lettered=0),
    }
    _publish_retained(stack, plantation, now)
    try:
        res = run_cli([*_args(stack, plantation, influx_db), "--format", "json"])
        assert res.returncode == 3, (res.stdout, res.stderr)
        rows = {g["gateway"]: g for g in json.loads(res.stdout)["gateways"]}
        recent = {g: (r["dead_lettered_recent"], r["dead_lettered"]) for g, r in rows.items()}
        assert recent == {
            "gw-revoked": (4, 4),
            "gw-once": (0, 3),
            "gw-restarted": (1, 1),
            "gw-new": (2, 2),
            "gw-upgraded": (None, 7),
            "gw-clean": (None, 0),
        }
        assert rows["gw-revoked"]["problems"] == [
            "4 batch(es) dead-lettered by the ingest in the last 3600 s (--dead-letter-window; "
            "4 since the agent started); the ingest's deadletter.sqlite says why"
        ]
        needs = sorted(g for g, r in rows.items() if r["problems"])
        assert needs == ["gw-new", "gw-restarted", "gw-revoked"]
        ingests = {i["client_id"]: i for i in json.loads(res.stdout)["ingests"]}
        ingest = ingests["ingest-a"]  # (the other one is the point SelfMetrics wrote)
        assert ingest["dead_letters_recent"] == 6 and ingest["problems"] == []

        table = run_cli(_args(stack, plantation, influx_db))
        header = table.stdout.splitlines()[0].split()
        cells = {
            x.split()[1]: x.split() for x in table.stdout.splitlines()[2:] if x.startswith("st-")
        }
        column = header.index("dead_lettered")
        assert cells["gw-revoked"][column] == "4/4" and cells["gw-once"][column] == "0/3"
        assert cells["gw-upgraded"][column] == "-/7"
        assert "16 dead letters (6 in the last 3600 s)" in table.stdout

        # A 60 s window starts after gw-new's point: its 2 are old news then.
        short = run_cli(
            [*_args(stack, plantation, influx_db), "-f", "json", "--dead-letter-window", "60"]
        )
        rows = {g["gateway"]: g for g in json.loads(short.stdout)["gateways"]}
        assert rows["gw-new"]["dead_lettered_recent"] == 0 and rows["gw-new"]["problems"] == []
        assert rows["gw-revoked"]["dead_lettered_recent"] == 4 and short.returncode == 3
        # Without InfluxDB nothing tells old from new: the counts, no verdict.
        res = run_cli([*_args(stack, plantation, influx_db), "--no-influx", "--format", "json"])
        assert res.returncode == 0, res.stdout
        assert {g["gateway"]: g["dead_lettered"] for g in json.loads(res.stdout)["gateways"]}[
            "gw-revoked"
        ] == 4
    finally:
        _clear_retained(stack, plantation, list(now))


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


@pytest.mark.integration
def test_a_revoked_gateway_is_shown_as_revoked_not_stale(
    stack: Any, influx_db: str, tmp_path: Path
) -> None:
    """Its Last Will is refused by the ACL, so its last "online" status stays retained: without
    the registry it would read as stale for ever (operator audit)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ingest.registry import Registry
    from tests.support.procs import write_toml

    plantation = f"st-revoked-{uuid.uuid4().hex[:6]}"
    registry_path = tmp_path / "registry.sqlite"
    with Registry(registry_path) as registry:
        for gw in ("gw-old", "gw-live"):
            registry.add_gateway(
                plantation, gw, Ed25519PrivateKey.generate().public_key(), None, f"fp-{gw}"
            )
        registry.revoke(plantation, "gw-old")
    conf = write_toml(
        tmp_path / "ingest.toml",
        {"ingest": {"state_dir": str(tmp_path), "registry_path": str(registry_path)}},
    )
    _publish_retained(
        stack,
        plantation,
        {"gw-old": _status("gw-old", age_s=3600), "gw-live": _status("gw-live")},
    )
    try:
        res = run_cli([*_args(stack, plantation, influx_db), "--config", str(conf), "-f", "json"])
        assert res.returncode == 0, (res.stdout, res.stderr)
        rows = {r["gateway"]: r for r in json.loads(res.stdout)["gateways"]}
        assert (rows["gw-old"]["state"], rows["gw-old"]["problems"]) == ("revoked", [])
        assert (rows["gw-live"]["state"], rows["gw-live"]["problems"]) == ("online", [])
        # Without the registry (status run on another host) it is stale, as before.
        bare = run_cli([*_args(stack, plantation, influx_db), "-f", "json"])
        assert bare.returncode == 3
        [old] = [r for r in json.loads(bare.stdout)["gateways"] if r["gateway"] == "gw-old"]
        assert old["state"] == "stale"
    finally:
        _clear_retained(stack, plantation, ["gw-old", "gw-live"])


def test_a_revoked_gateway_that_still_sends_keeps_its_problem() -> None:
    from ingest.status import GatewayStatus, Thresholds, judge_dead_letters, mark_revoked

    limits = Thresholds()
    row = GatewayStatus(
        plantation="p", gateway="g", state="stale", dead_lettered=5, dead_lettered_recent=2
    )
    row.problems = ["last status 900 s ago"]
    judge_dead_letters(row, limits)
    quiet = GatewayStatus(plantation="p", gateway="q", state="offline", dead_lettered=3)
    quiet.problems = ["offline"]
    mark_revoked([row, quiet], {("p", "g"): 0, ("p", "q"): 0}, limits)
    assert row.state == "revoked" and row.problems == [
        "revoked at 1970-01-01T00:00:00Z but still sending: 2 batch(es) dead-lettered by the "
        "ingest in the last 3600 s (--dead-letter-window; 5 since the agent started); the "
        "ingest's deadletter.sqlite says why"
    ]
    assert (quiet.state, quiet.problems) == ("revoked", [])
