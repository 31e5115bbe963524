"""ACL matrix on the real broker with a real ingest and InfluxDB: a gateway writes only its
own topics, reads only its own receipts, and no reading lands in another plantation."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from contract.topics import (
    alerts_topic,
    receipt_topic,
    seq_share_subscription,
    seq_share_topic,
    status_topic,
    telemetry_topic,
)
from contract.wire import encode_batch
from ingest.config import parse_ingest_config
from ingest.influx import InfluxQuery, InfluxSettings
from ingest.service import Ingest
from tests.security.batches import make_batch, signed
from tests.security.conftest import GatewayCreds, SecureBroker, Session
from tests.support.procs import (
    farmtel,
    release_when_open,
    started_text_line_simulator,
    wait_until,
    write_toml,
)

pytestmark = pytest.mark.integration

READINGS = 5


def _origin(g: GatewayCreds) -> str:
    return f"from-{g.plantation}-{g.gateway}"


def _ingest(b: SecureBroker, tmp: Path, db: str) -> Ingest:
    cfg = parse_ingest_config(
        {
            "ingest": {
                "state_dir": str(tmp / "ingest"),
                "share_group": f"g-{uuid.uuid4().hex[:8]}",
                "registry_path": str(b.registry_path),
                "require_signatures": True,
            },
            "mqtt": {
                "host": b.host,
                "port": b.port,
                "username": "farmtel-ingest",
                "password_file": str(b.ingest_password_file),
                "client_id": f"ingest-{db}",
            },
            "influxdb": {"url": b.info.influx_url, "database": db},
        },
        "test",
        environ={},
    )
    return Ingest(cfg)


def test_every_gateway_is_confined_to_its_own_topics(
    secure_broker: SecureBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    b = secure_broker
    db = f"acl_{uuid.uuid4().hex[:8]}"
    q = InfluxQuery(InfluxSettings(url=b.info.influx_url, database=db))
    q.create_database(db)
    ingest = _ingest(b, tmp_path, db)
    group = ingest.config.ingest.share_group
    ingest.start()
    sessions: dict[str, Session] = {}
    try:
        wait_until(ingest.connected.is_set, 15, "the ingest to connect")
        for g in b.gateways:
            s = Session(b.settings(g.username, g.password_file))
            assert not s.wait_connack().is_failure
            sessions[g.username] = s
        # Reading: each gateway asks for every receipt topic and for everything.
        subacks: dict[tuple[str, str], Any] = {}
        for g in b.gateways:
            s = sessions[g.username]
            for t in b.gateways:
                subacks[(g.username, t.username)] = s.subscribe(
                    receipt_topic(t.plantation, t.gateway)
                )[0]
            s.subscribe("farmtel/#")  # the ingests' seq bookkeeping too
        # Mosquitto 2.0.11 grants these SUBACKs (QoS 1) and filters each message on delivery
        # instead, so what counts is below: no gateway receives another's receipt.
        assert all(not rc.is_failure for rc in subacks.values())

        # Writing: every gateway tries every gateway's topics, in both plantations.
        results: dict[tuple[str, str, str], bool] = {}
        for g in b.gateways:
            s = sessions[g.username]
            for t in b.gateways:
                batch = signed(
                    make_batch(t.gateway, _origin(g), READINGS), t.plantation, g.signing_key_file
                )
                status = orjson.dumps({"state": "online", "from": g.username})
                for channel, topic, payload in (
                    ("telemetry", telemetry_topic(t.plantation, t.gateway), encode_batch(batch)),
                    ("status", status_topic(t.plantation, t.gateway), status),
                    ("receipt", receipt_topic(t.plantation, t.gateway), b"{}"),
                    ("alerts", alerts_topic(t.plantation, t.gateway), b"{}"),
                    # Faked seq bookkeeping would hide holes from every ingest of the group.
                    (
                        "seq-share",
                        seq_share_topic(group, t.plantation, t.gateway),
                        b'{"seen": [[0, 999999]]}',
                    ),
                ):
                    results[(g.username, t.username, channel)] = not s.publish(
                        topic, payload
                    ).is_failure
        for (who, target, channel), accepted in results.items():
            allowed = who == target and channel in ("telemetry", "status")
            assert accepted == allowed, (who, target, channel)

        def stored_batches() -> int:
            series = q.query('SELECT count("readings") FROM "farmtel_batch"')
            return int(series[0].values[0][1]) if series else 0

        wait_until(lambda: stored_batches() >= len(b.gateways), 30, "every gateway's own batch")
        series = q.query('SELECT * FROM "soil"')
        assert len(series) == 1
        rows = [dict(zip(series[0].columns, v, strict=True)) for v in series[0].values]
        assert len(rows) == READINGS * len(b.gateways)
        cross = [r for r in rows if r["sensor"] != f"from-{r['plantation']}-{r['gateway']}"]
        assert cross == [], "readings stored under another plantation or gateway"
        assert stored_batches() == len(b.gateways)
        # Each gateway got its own receipt and nothing else (not others' receipts, no
        # telemetry or status of anyone).
        for g in b.gateways:
            s = sessions[g.username]
            own = receipt_topic(g.plantation, g.gateway)
            wait_until(lambda s=s: s.messages, 10, f"{g.username}'s receipt")  # type: ignore[misc]
            assert {m.topic for m in s.messages} == {own}, g.username
        assert ingest.counters["refused_batches"] == 0
        # The ingest user may share its seq bookkeeping: one retained message per gateway,
        # with the seq it stored (make_batch numbers readings from 0), and no hole.
        peer = Session(b.settings("farmtel-ingest", b.ingest_password_file))
        sessions["peer-ingest"] = peer
        assert not peer.wait_connack().is_failure
        peer.subscribe(seq_share_subscription(group))
        wait_until(lambda: len(peer.messages) >= len(b.gateways), 10, "seq bookkeeping")
        shared = {m.topic: orjson.loads(m.payload)["seen"] for m in peer.messages}
        assert shared == {
            seq_share_topic(group, g.plantation, g.gateway): [[0, READINGS - 1]] for g in b.gateways
        }
        assert ingest.counters["seq_holes"] == 0
    finally:
        for s in sessions.values():
            s.close()
        ingest.stop()
    # No secret in the ingest's log, at any level.
    secrets = [b.ingest_password_file.read_text().strip()]
    secrets += [g.password for g in b.gateways]
    assert "mqtt connected" in caplog.text
    for secret in secrets:
        assert secret not in caplog.text


def _outbox_rows(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT total(n) FROM readings").fetchone()[0])


def test_agent_keeps_rows_when_the_broker_says_not_authorized(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """A gateway configured for a plantation its credentials do not cover: every publish
    gets PUBACK 0x87, the agent logs it and keeps the rows in its outbox."""
    b = secure_broker
    creds = b.gateways[0]  # plant-a.gw-1, but configured as plant-b below
    columns = ["counter", "moisture_pct"]
    go = tmp_path / "go"
    sim, link = started_text_line_simulator(tmp_path, columns, rate=50, count=40, start_file=go)
    state = tmp_path / "agent"
    gw = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {
                "plantation": "plant-b",
                "id": creds.gateway,
                "state_dir": str(state),
                "signing_key_file": str(creds.signing_key_file),
            },
            "mqtt": {
                "host": b.host,
                "port": b.port,
                "username": creds.username,
                "password_file": str(creds.password_file),
            },
            "outbox": {"batch_size": 10, "receipt_timeout": 30.0},
            "sensors": [
                {
                    "id": "soil-1",
                    "field": "north",
                    "driver": "text_line",
                    "kind": "soil",
                    "port": str(link),
                    "format": "csv",
                    "columns": columns,
                    "timeout": 0.5,
                }
            ],
        },
    )
    agent = farmtel("agent", ["agent", "run", "--config", str(gw)], tmp_path / "agent.log")
    try:
        release_when_open(agent, ["soil-1"], go)
        wait_until(lambda: not sim.alive(), 30, "the simulator to finish")
        wait_until(
            lambda: agent.output().count("publish refused") >= 2, 20, "refused publishes in the log"
        )
    finally:
        rc = agent.stop()
        sim.stop()
    log = agent.output()
    assert rc == 0, log[-2000:]
    assert "Not authorized" in log
    assert _outbox_rows(state / "outbox.sqlite") == 40, "rows left the outbox without a receipt"
    # No secret in the agent's log.
    assert creds.password not in log
    key_body = creds.signing_key_file.read_text().splitlines()[1]
    assert key_body not in log
