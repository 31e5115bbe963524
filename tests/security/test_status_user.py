"""`farmtel broker config --status-user`: a broker user for `farmtel status` that may only
read the retained status topics, so status neither shares the ingest's user (the broker
would throw the ingest off, use_username_as_clientid) nor gets the ingest's rights.

The first tests need no servers; the others run on the real Mosquitto of conftest.py.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from cli import app
from contract.topics import (
    alerts_topic,
    receipt_topic,
    seq_share_topic,
    status_topic,
    telemetry_topic,
)
from ingest.broker_auth import check_password, write_private
from ingest.devices import add_gateway
from ingest.registry import Registry
from tests.security.conftest import SecureBroker, Session
from tests.support.procs import run_cli, wait_until, write_toml

STATUS_USER = "farmtel-status"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _acl_blocks(acl: str) -> dict[str, list[str]]:
    """``user`` -> its topic lines, from a rendered ACL."""
    blocks: dict[str, list[str]] = {}
    user = None
    for line in acl.splitlines():
        if line.startswith("user "):
            user = line.split(None, 1)[1]
            blocks[user] = []
        elif line.startswith("topic ") and user is not None:
            blocks[user].append(line)
    return blocks


def _passwd(broker: Path) -> dict[str, str]:
    lines = (broker / "passwd").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines)


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.sqlite"
    with Registry(path) as reg:
        add_gateway(reg, "p1", "g1", tmp_path / "bundle")
    return path


def _config(registry: Path, broker: Path, *extra: str) -> tuple[int, str]:
    return _run("broker", "config", "--out", str(broker), "--registry", str(registry), *extra)


def test_status_user_is_made_once_and_may_only_read_status(registry: Path, tmp_path: Path) -> None:
    broker = tmp_path / "broker"
    code, out = _config(registry, broker, "--status-user", STATUS_USER)
    assert code == 0, out
    pw_file = broker / f"{STATUS_USER}.password"
    assert f"created broker user {STATUS_USER}" in out and str(pw_file) in out
    assert f"FARMTEL_MQTT__USERNAME={STATUS_USER}" in out
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    password = pw_file.read_text().strip()
    assert check_password(password, _passwd(broker)[STATUS_USER])
    blocks = _acl_blocks((broker / "acl").read_text())
    assert blocks[STATUS_USER] == ["topic read farmtel/v1/+/+/status"]
    assert len(blocks["farmtel-ingest"]) > 1  # the ingest keeps its own block
    with Registry(registry) as reg:
        assert reg.service_role(STATUS_USER) == "status"
        assert reg.service_users("ingest") == ["farmtel-ingest"]
    # Later renders, with the option or without, keep the user and never touch its file.
    for extra in ((), ("--status-user", STATUS_USER)):
        code, out = _config(registry, broker, *extra)
        assert code == 0, out
        assert "created" not in out and "warning" not in out, out
        assert pw_file.read_text().strip() == password
        assert check_password(password, _passwd(broker)[STATUS_USER])
        assert _acl_blocks((broker / "acl").read_text())[STATUS_USER] == blocks[STATUS_USER]


def test_an_existing_status_password_is_never_overwritten(registry: Path, tmp_path: Path) -> None:
    broker = tmp_path / "broker"
    broker.mkdir()
    pw_file = broker / f"{STATUS_USER}.password"
    write_private(pw_file, "the-monitoring-hosts-password\n")
    code, out = _config(registry, broker, "--status-user", STATUS_USER)
    assert code == 0, out
    assert "already in" in out and f"created broker user {STATUS_USER}" not in out
    assert pw_file.read_text() == "the-monitoring-hosts-password\n"
    assert check_password("the-monitoring-hosts-password", _passwd(broker)[STATUS_USER])
    # The registry has the user now and the file holds another password: warn, keep both.
    write_private(pw_file, "another\n")
    code, out = _config(registry, broker, "--status-user", STATUS_USER)
    assert code == 0 and "warning:" in out and "farmtel status using that file" in out, out
    assert pw_file.read_text() == "another\n"
    assert check_password("the-monitoring-hosts-password", _passwd(broker)[STATUS_USER])
    # An unusable file is refused before anything is registered or rendered.
    other = broker / "farmtel-monitor.password"
    write_private(other, "two words\n")
    code, out = _config(registry, broker, "--status-user", "farmtel-monitor")
    assert code == 2 and "does not hold one password" in out, out
    assert "farmtel-monitor" not in (broker / "acl").read_text()


def test_status_user_refusals_name_the_option(registry: Path, tmp_path: Path) -> None:
    broker = tmp_path / "broker"
    code, out = _config(registry, broker, "--status-user", "farmtel-ingest")
    assert code == 2, out
    assert "--status-user 'farmtel-ingest' is the --ingest-user too" in out
    assert not broker.exists()
    code, out = _config(registry, broker, "--status-user", "farmtel.status")
    assert code == 2 and "--status-user 'farmtel.status' must not" in out, out
    assert not (broker / "farmtel.status.password").exists()
    # A status user never becomes an ingest user: that would give it the ingest's rights.
    assert _config(registry, broker, "--status-user", STATUS_USER)[0] == 0
    code, out = _config(registry, broker, "--ingest-user", STATUS_USER)
    assert code == 2 and f"--ingest-user '{STATUS_USER}' is the read-only" in out, out
    with Registry(registry) as reg:
        assert reg.service_role(STATUS_USER) == "status"
    assert _acl_blocks((broker / "acl").read_text())[STATUS_USER] == [
        "topic read farmtel/v1/+/+/status"
    ]


def test_an_ingest_user_is_not_made_the_status_user(registry: Path, tmp_path: Path) -> None:
    """Made read-only, an ingest logging in as it would get no telemetry: refused instead
    (an early version of docs/security.md said `--ingest-user farmtel-status`)."""
    broker = tmp_path / "broker"
    assert _config(registry, broker, "--ingest-user", STATUS_USER)[0] == 0
    password = (broker / f"{STATUS_USER}.password").read_text()
    code, out = _config(registry, broker, "--status-user", STATUS_USER)
    assert code == 2, out
    assert f"--status-user '{STATUS_USER}' is an ingest's broker user" in out
    assert (broker / f"{STATUS_USER}.password").read_text() == password
    assert len(_acl_blocks((broker / "acl").read_text())[STATUS_USER]) > 1
    with Registry(registry) as reg:
        assert STATUS_USER in reg.service_users("ingest")
        assert reg.service_users("status") == []


def test_broker_config_help_names_the_status_user() -> None:
    code, out = _run("broker", "config", "--help")
    assert code == 0 and "--status-user <str>" in out and "farmtel status" in out, out


# -- on the real broker ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def status_pw(secure_broker: SecureBroker) -> Path:
    """`farmtel broker config --status-user` on the test broker's folder, then a reload."""
    b = secure_broker
    code, out = _run(
        "broker", "config", "--out", str(b.dir / "broker"), "--registry",
        str(b.registry_path), "--status-user", STATUS_USER,
    )  # fmt: skip
    assert code == 0, out
    pw_file = b.dir / "broker" / f"{STATUS_USER}.password"
    pid = b.stack.mosquitto_pid
    assert pid is not None
    os.kill(pid, signal.SIGHUP)

    def logs_in() -> bool:
        s = Session(b.settings(STATUS_USER, pw_file))
        try:
            return not s.wait_connack().is_failure
        finally:
            s.close()

    wait_until(logs_in, 10, "the status user's login after the reload")
    return pw_file


def _publish_retained(s: Session, topic: str, payload: bytes) -> Any:
    info = s.client.publish(topic, payload, qos=1, retain=True)
    info.wait_for_publish(10)
    wait_until(lambda: info.mid in s.pubacks, 10, f"PUBACK of {topic}")
    return s.pubacks.pop(info.mid)


def _status(tag: str) -> bytes:
    return orjson.dumps({"state": "online", "ts": time.time_ns(), "clock": "synced", "tag": tag})


@pytest.fixture
def retained_status(secure_broker: SecureBroker) -> Iterator[dict[str, bytes]]:
    """Each live gateway publishes a retained "online" status; cleared afterwards."""
    b = secure_broker
    tag = uuid.uuid4().hex
    sent = {}
    sessions = [Session(b.settings(g.username, g.password_file)) for g in b.gateways]
    try:
        for g, s in zip(b.gateways, sessions, strict=True):
            assert not s.wait_connack().is_failure
            topic = status_topic(g.plantation, g.gateway)
            sent[topic] = _status(tag)
            assert not _publish_retained(s, topic, sent[topic]).is_failure
        yield sent
    finally:
        for g, s in zip(b.gateways, sessions, strict=True):
            _publish_retained(s, status_topic(g.plantation, g.gateway), b"")
            s.close()


@pytest.mark.integration
def test_status_user_reads_the_retained_status_and_nothing_else(
    secure_broker: SecureBroker, status_pw: Path, retained_status: dict[str, bytes]
) -> None:
    b = secure_broker
    gw = b.gateways[0]
    status = Session(b.settings(STATUS_USER, status_pw))
    ingest = Session(b.settings("farmtel-ingest", b.ingest_password_file))
    sessions = [status, ingest]
    try:
        assert not status.wait_connack().is_failure
        assert not ingest.wait_connack().is_failure
        assert not status.subscribe("farmtel/v1/+/+/status")[0].is_failure
        wait_until(
            lambda: {m.topic for m in status.messages} >= set(retained_status),
            10,
            "every gateway's retained status",
        )
        got = {m.topic: m.payload for m in status.messages if m.topic in retained_status}
        assert got == retained_status
        assert all(m.retain for m in status.messages)
        # What it may not read: telemetry, receipts, alerts, the ingests' seq bookkeeping.
        # Mosquitto 2.0.11 grants such a SUBACK and filters every message on delivery
        # (test_acl_matrix.py), so what counts is that none of them arrives.
        for topic in (
            "farmtel/v1/+/+/telemetry",
            "farmtel/v1/+/+/receipt",
            "farmtel/v1/+/+/alerts",
            "farmtel/ingest/v1/#",
            "#",
        ):
            status.subscribe(topic)
        status.messages.clear()
        group = f"g-{uuid.uuid4().hex[:8]}"
        others = [
            (gw, telemetry_topic(gw.plantation, gw.gateway), b"not a batch"),
            (ingest, receipt_topic(gw.plantation, gw.gateway), b"{}"),
            (ingest, alerts_topic(gw.plantation, gw.gateway), b"{}"),
            (ingest, seq_share_topic(group, gw.plantation, gw.gateway), b"{}"),
        ]
        gw_session = Session(b.settings(gw.username, gw.password_file))
        sessions.append(gw_session)
        assert not gw_session.wait_connack().is_failure
        for who, topic, payload in others:
            sender = gw_session if who is gw else ingest
            assert not sender.publish(topic, payload).is_failure, topic
        # A status published after them arrives, so they had their chance to.
        last = _status(uuid.uuid4().hex)
        assert not gw_session.publish(status_topic(gw.plantation, gw.gateway), last).is_failure
        wait_until(lambda: any(m.payload == last for m in status.messages), 10, "a new status")
        time.sleep(0.5)
        # ("#" brings the retained statuses again.)
        assert {m.topic for m in status.messages} <= set(retained_status)
        # What it may not write: anything (faked statuses, receipts, alerts, telemetry).
        for topic in (
            status_topic(gw.plantation, gw.gateway),
            telemetry_topic(gw.plantation, gw.gateway),
            receipt_topic(gw.plantation, gw.gateway),
            alerts_topic(gw.plantation, gw.gateway),
            seq_share_topic(group, gw.plantation, gw.gateway),
        ):
            rc = status.publish(topic, b"{}")
            assert rc.is_failure and str(rc) == "Not authorized", (topic, str(rc))
    finally:
        for s in sessions:
            s.close()


@pytest.mark.integration
def test_farmtel_status_as_the_status_user_keeps_the_ingest_connected(
    secure_broker: SecureBroker,
    status_pw: Path,
    retained_status: dict[str, bytes],
    tmp_path: Path,
) -> None:
    """Over TLS, where the broker makes the user name the client id (production)."""
    b = secure_broker
    tls = {"tls": True, "ca_file": b.ca_file, "port": b.tls_port}
    # The ingest's own config: status takes the broker from it and its user from the env.
    config = write_toml(
        tmp_path / "ingest.toml",
        {
            "ingest": {"state_dir": str(tmp_path / "state"), "registry_path": str(b.registry_path)},
            "mqtt": {
                "host": b.host,
                "port": b.tls_port,
                "tls": True,
                "ca_file": str(b.ca_file),
                "username": "farmtel-ingest",
                "password_file": str(b.ingest_password_file),
            },
            "influxdb": {"url": b.info.influx_url, "database": f"st_{uuid.uuid4().hex[:8]}"},
        },
    )
    env = {"FARMTEL_MQTT__USERNAME": STATUS_USER, "FARMTEL_MQTT__PASSWORD_FILE": str(status_pw)}
    ingest = Session(b.settings("farmtel-ingest", b.ingest_password_file, **tls))
    try:
        assert not ingest.wait_connack().is_failure
        for extra in ([], ["--plantation", "plant-a"]):
            res = run_cli(["status", "-c", str(config), "--format", "json", *extra], env=env)
            assert res.returncode == 0, res.stdout + res.stderr
            doc = json.loads(res.stdout)
            rows = {(r["plantation"], r["gateway"]): r for r in doc["gateways"]}
            want = {
                (g.plantation, g.gateway)
                for g in b.gateways
                if not extra or g.plantation == extra[1]
            }
            assert set(rows) == want, rows
            assert all(r["state"] == "online" and not r["problems"] for r in rows.values())
            assert doc["influxdb"]["problem"] is None
        time.sleep(1)
        assert not ingest.disconnected.is_set(), "farmtel status threw the ingest off"
        assert ingest.client.is_connected()
    finally:
        ingest.close()
