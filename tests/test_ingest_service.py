"""The ingest service on the real broker and database: bad payloads, a database that is
down, and a broker that is not there. Nothing accepted is lost and nothing crashes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from contract import Batch, Reading, decode_receipt, encode_batch, receipt_topic, telemetry_topic
from devstack.stack import free_port
from ingest.influx import InfluxQuery, InfluxSettings
from tests.support.mqtt import TestClient
from tests.support.procs import (
    farmtel,
    read_records,
    started_text_line_simulator,
    wait_until,
    write_toml,
)

pytestmark = pytest.mark.integration

P, G = "hlj-ing-001", "gw-ing"


def _batch(batch_id: str, first_seq: int, n: int = 5) -> Batch:
    now = time.time_ns()
    return Batch(
        gateway=G,
        boot="test",
        batch=batch_id,
        sent=now,
        readings=[
            Reading(
                sensor="s-1",
                field="north",
                kind="soil",
                ts=now - (n - i) * 1000,
                clock="synced",
                seq=first_seq + i,
                values={"moisture_pct": 10.0 + i},
            )
            for i in range(n)
        ],
    )


def _ingest_conf(tmp: Path, stack: Any, db: str, influx_url: str | None = None) -> Path:
    return write_toml(
        tmp / "ingest.toml",
        {
            # A group of its own: an earlier test's ingest keeps its (offline) share.
            "ingest": {
                "state_dir": str(tmp / "ingest"),
                "retry_max_backoff": 1.0,
                "share_group": f"g-{db}",
            },
            "mqtt": {"host": stack.mqtt_host, "port": stack.mqtt_port, "client_id": f"ingest-{db}"},
            "influxdb": {"url": influx_url or stack.influx_url, "database": db},
        },
    )


def _stored_seqs(q: InfluxQuery) -> list[int]:
    series = q.query('SELECT "seq" FROM "soil" WHERE "plantation" = $p', params={"p": P})
    return sorted(v[1] for v in series[0].values) if series else []


def _dead_letters(tmp: Path) -> list[tuple[str, str]]:
    path = tmp / "ingest" / "deadletter.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return [(t, r) for t, r in db.execute("SELECT topic, reason FROM dead_letters ORDER BY id")]


def test_malformed_payloads_are_dead_lettered_and_the_rest_stored(
    stack: Any, influx_db: str, tmp_path: Path
) -> None:
    ingest = farmtel(
        "ingest",
        ["ingest", "run", "-c", str(_ingest_conf(tmp_path, stack, influx_db))],
        tmp_path / "ingest.log",
    )
    client = TestClient(stack.mqtt_host, stack.mqtt_port)
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    try:
        client.subscribe(receipt_topic(P, G))
        wait_until(lambda: "mqtt connected" in ingest.output(), 15, "ingest to connect")
        topic = telemetry_topic(P, G)
        good = _batch("good-1", 0)
        too_many = orjson.loads(encode_batch(_batch("too-many", 100, 2)))
        too_many["readings"] = too_many["readings"] * 2600
        wrong_gateway = orjson.loads(encode_batch(_batch("wrong-gw", 200)))
        wrong_gateway["gateway"] = "gw-other"
        bad = [
            b"this is not json",
            orjson.dumps({**orjson.loads(encode_batch(good)), "v": 2, "batch": "v2-batch"}),
            orjson.dumps(wrong_gateway),
            orjson.dumps(too_many),
            b"{" + b" " * 1_048_600 + b"}",  # over the ingest's 1 MiB limit, under the broker's
        ]
        for payload in bad:
            client.publish(topic, payload)
        client.publish(topic, encode_batch(good))
        # Four receipts: "not JSON" and the oversize "{}" name no batch, so nobody is told
        # (ingest/service.py _dead_letter); v2-batch, wrong-gw, too-many and good-1 are.
        receipts = [decode_receipt(m.payload) for m in client.wait_for(4, timeout=30)]
        by_batch = {r.batch: r for r in receipts}
        assert by_batch["good-1"].status == "stored" and by_batch["good-1"].stored == 5
        assert by_batch["v2-batch"].status == "dead_lettered"
        assert "schema version 2" in by_batch["v2-batch"].reason
        assert by_batch["wrong-gw"].status == "dead_lettered"
        assert by_batch["too-many"].status == "dead_lettered"
        assert _stored_seqs(q) == [0, 1, 2, 3, 4]
        letters = wait_until(
            lambda: len(_dead_letters(tmp_path)) >= 5 and _dead_letters(tmp_path),
            10,
            "5 dead letters",
        )
        reasons = [r for _, r in letters]
        assert "not JSON" in reasons[0]
        assert "schema version 2 is not supported" in reasons[1]
        assert "differs from topic gateway" in reasons[2]
        assert "readings" in reasons[3]
        assert "over the 1048576 limit" in reasons[4]
        assert ingest.alive()
    finally:
        client.close()
        rc = ingest.stop()
    assert rc == 0, ingest.output()[-2000:]


def test_influxdb_down_means_no_ack_and_nothing_lost(
    stack: Any, influx_db: str, tmp_path: Path
) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}"
    conf = _ingest_conf(tmp_path, stack, influx_db, influx_url=dead_url)
    ingest = farmtel("ingest", ["ingest", "run", "-c", str(conf)], tmp_path / "ingest1.log")
    client = TestClient(stack.mqtt_host, stack.mqtt_port)
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    try:
        client.subscribe(receipt_topic(P, G))
        wait_until(lambda: "mqtt connected" in ingest.output(), 15, "ingest to connect")
        client.publish(telemetry_topic(P, G), encode_batch(_batch("held-1", 0)))
        wait_until(lambda: "influxdb unavailable" in ingest.output(), 15, "a write failure log")
        assert dead_url.removeprefix("http://") in ingest.output()
        assert client.messages == []  # no receipt while the database is down
        assert ingest.alive()
    finally:
        assert ingest.stop() == 0
    # Same client id, database back: the broker redelivers the unacked batch.
    conf = _ingest_conf(tmp_path, stack, influx_db)
    ingest = farmtel("ingest", ["ingest", "run", "-c", str(conf)], tmp_path / "ingest2.log")
    try:
        msgs = client.wait_for(1, timeout=30)
        assert decode_receipt(msgs[0].payload).batch == "held-1"
        assert _stored_seqs(q) == [0, 1, 2, 3, 4]
    finally:
        client.close()
        assert ingest.stop() == 0


def test_agent_keeps_collecting_while_the_broker_is_unreachable(stack: Any, tmp_path: Path) -> None:
    sim, link = started_text_line_simulator(
        tmp_path, ["counter", "temp_c"], rate=50, count=0, start_delay=3
    )
    port = free_port()
    conf = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {"plantation": P, "id": G, "state_dir": str(tmp_path / "agent")},
            "mqtt": {"host": "127.0.0.1", "port": port},
            "sensors": [
                {
                    "id": "s-1",
                    "field": "north",
                    "driver": "text_line",
                    "port": str(link),
                    "columns": ["counter", "temp_c"],
                }
            ],
        },
    )
    agent = farmtel("agent", ["agent", "run", "-c", str(conf)], tmp_path / "agent.log")
    try:
        wait_until(
            lambda: f"127.0.0.1:{port} is unreachable" in agent.output(),
            20,
            "a log naming the unreachable broker",
        )
        sent = tmp_path / "sent.jsonl"
        wait_until(lambda: sent.exists() and len(read_records(sent)) >= 100, 30, "100 lines sent")
        assert agent.alive()
    finally:
        rc = agent.stop()
        sim.stop()
    assert rc == 0, agent.output()[-2000:]
    # Every line the agent read is in the outbox, waiting for the broker.
    with sqlite3.connect(tmp_path / "agent" / "outbox.sqlite") as db:
        stored = db.execute("SELECT total(n) FROM readings").fetchone()[0]
    assert stored >= 100


def test_another_client_with_the_ingest_client_id_is_named(
    stack: Any, influx_db: str, tmp_path: Path
) -> None:
    """What `farmtel status` with the ingest's broker user does under
    use_username_as_clientid, or a second ingest with the same client id: Mosquitto closes
    the ingest's connection without saying why. After a few, the ingest says what it is."""
    conf = _ingest_conf(tmp_path, stack, influx_db)
    ingest = farmtel("ingest", ["ingest", "run", "-c", str(conf)], tmp_path / "ingest.log")
    try:
        for n in range(1, 4):

            def connected(times: int = n) -> bool:
                return ingest.output().count("mqtt connected") >= times

            wait_until(connected, 30, f"connection {n}")
            TestClient(stack.mqtt_host, stack.mqtt_port, client_id=f"ingest-{influx_db}").close()
        wait_until(
            lambda: "another client probably uses client id" in ingest.output(), 30, "the hint"
        )
        assert f"client id 'ingest-{influx_db}' (a second ingest, or `farmtel status`" in (
            ingest.output()
        )
        assert ingest.alive()
    finally:
        assert ingest.stop() == 0
