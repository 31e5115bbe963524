"""Scale-out: three ingests share the telemetry through one MQTT shared subscription; one is
SIGKILLed mid-stream and restarted with the same client id. Nothing is lost or doubled.

What makes it hold: the killed ingest acked nothing it had not written, and its persistent
session (same client id, session expiry > 0) keeps its unacked share on the broker; on
restart Mosquitto hands those messages back. Batches whose receipt got lost are resent by
the agent after ``receipt_timeout`` and overwrite themselves (same series and timestamp).
"""

from __future__ import annotations

import re
import signal
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from contract import status_topic
from ingest.influx import InfluxQuery, InfluxSettings
from tests.support.mqtt import TestClient
from tests.support.procs import (
    Proc,
    farmtel,
    read_records,
    text_line_simulator,
    wait_until,
    write_toml,
)

pytestmark = pytest.mark.integration

PLANTATION = "hlj-scale-001"
GATEWAY = "gw-scale"
COLUMNS = ["counter", "moisture_pct"]
SENSORS = 3
PER_SENSOR = 3_000  # 9,000 readings at 3 x 300 lines/s: a ~10 s stream
INGESTS = ("a", "b", "c")


def _stored(q: InfluxQuery) -> int:
    series = q.query('SELECT count("seq") FROM "soil" WHERE "plantation" = $p', {"p": PLANTATION})
    return int(series[0].values[0][1]) if series and series[0].values else 0


def _status(client: TestClient, what: str) -> int | None:
    """The outbox depth ("outbox") or a counter from the gateway's latest status message."""
    if not client.messages:
        return None
    payload = orjson.loads(client.messages[-1].payload)
    if what == "outbox":
        return int(payload["outbox"]["readings"])
    return int(payload["counters"][what])


def _outbox_rows(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT total(n) FROM readings").fetchone()[0])


def _stop(proc: Proc) -> int | None:
    """SIGTERM and wait; SIGKILL (and None) if it hangs, so no process outlives the test."""
    try:
        return proc.stop()
    except AssertionError:
        proc.kill()
        return None


def _batches_stored(log: str) -> int:
    """batches_stored from the counters the ingest logs when it stops."""
    found = re.findall(r"'batches_stored': (\d+)", log)
    return int(found[-1]) if found else -1


def test_three_ingests_one_killed_mid_stream_lose_and_double_nothing(
    stack: Any, influx_db: str, tmp_path: Path
) -> None:
    group = f"g-{influx_db}"

    def ingest(name: str, life: int) -> Proc:
        cfg = write_toml(
            tmp_path / f"ingest-{name}.toml",
            {
                "ingest": {"state_dir": str(tmp_path / f"ingest-{name}"), "share_group": group},
                "mqtt": {
                    "host": stack.mqtt_host,
                    "port": stack.mqtt_port,
                    "client_id": f"ingest-{name}-{influx_db}",
                },
                "influxdb": {"url": stack.influx_url, "database": influx_db},
            },
        )
        return farmtel(
            f"ingest-{name}",
            ["ingest", "run", "--config", str(cfg)],
            tmp_path / f"ingest-{name}-{life}.log",
        )

    sims, sensors = [], []
    for i in range(SENSORS):
        link = tmp_path / f"tty-{i}"
        sims.append(
            text_line_simulator(
                link,
                tmp_path / f"sim{i}.log",
                COLUMNS,
                rate=300,
                count=PER_SENSOR,
                record=tmp_path / f"sent{i}.jsonl",
                seed=7 + i,
                extra=["--start-delay", "2"],
            )
        )
        sensors.append(
            {
                "id": f"soil-{i}",
                "field": "north",
                "driver": "text_line",
                "kind": "soil",
                "port": str(link),
                "format": "csv",
                "columns": COLUMNS,
                "timeout": 0.5,
            }
        )
    wait_until(lambda: all((tmp_path / f"tty-{i}").exists() for i in range(SENSORS)), 10, "ptys")
    gw = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {"plantation": PLANTATION, "id": GATEWAY, "state_dir": str(tmp_path / "gw")},
            "mqtt": {"host": stack.mqtt_host, "port": stack.mqtt_port},
            # Small batches so every ingest gets several; resend soon if a receipt is lost.
            "outbox": {"batch_size": 100, "receipt_timeout": 5.0},
            "status": {"interval": 1.0},
            "sensors": sensors,
        },
    )
    InfluxQuery(InfluxSettings(url=stack.influx_url)).create_database(influx_db)
    ingests = {name: ingest(name, 1) for name in INGESTS}
    agent = farmtel("agent", ["agent", "run", "--config", str(gw)], tmp_path / "agent.log")
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    status = TestClient(stack.mqtt_host, stack.mqtt_port)
    status.subscribe(status_topic(PLANTATION, GATEWAY))
    try:
        # Mid-stream: some readings are stored, most are still to come.
        wait_until(lambda: _stored(q) >= 300, 30, "the first readings in InfluxDB")
        # Freeze b so that it holds messages it received and never acked, then SIGKILL it:
        # no clean disconnect, and its unacked share stays in its session on the broker.
        # Mosquitto deals a shared subscription's messages round-robin, so in 2 s of a
        # ~9 batches/s stream b is handed several batches it never writes.
        ingests["b"].popen.send_signal(signal.SIGSTOP)
        time.sleep(2.0)
        ingests["b"].kill()
        stored_at_kill = _stored(q)
        wait_until(lambda: _stored(q) >= 3_000, 30, "readings stored by the two survivors")
        ingests["b"] = ingest("b", 2)  # same client id: its session and its share come back
        for sim in sims:
            wait_until(lambda s=sim: not s.alive(), 60, f"{sim.name} to finish")  # type: ignore[misc]
        # Done when the gateway reports an empty outbox and has taken no new reading for
        # 2.5 s (its ports may still hold lines when the outbox first runs empty): every
        # reading it took is receipted.
        seen: dict[str, Any] = {"taken": None, "since": 0.0}

        def settled() -> int | None:
            outbox, now_taken = _status(status, "outbox"), _status(status, "readings_in")
            now = time.monotonic()
            if outbox != 0 or now_taken != seen["taken"]:
                seen.update(taken=now_taken, since=now)
                return None
            return now_taken if now - seen["since"] >= 2.5 else None

        taken = wait_until(settled, 60, "an empty outbox and no new readings in the status")
    finally:
        status.close()
        for proc in ingests.values():
            if proc.alive():
                proc.popen.send_signal(signal.SIGCONT)
        agent_rc = _stop(agent)
        rcs = {name: _stop(proc) for name, proc in ingests.items()}
        for sim in sims:
            _stop(sim)
    assert agent_rc == 0, agent.output()[-3000:]
    for name, rc in rcs.items():
        assert rc == 0, ingests[name].output()[-3000:]
    # Every ingest took a share (b in its second life: its share of the rest of the stream).
    for name, proc in ingests.items():
        assert _batches_stored(proc.output()) > 0, (name, proc.output()[-2000:])
    # b's second life got back what its first life held (MQTT DUP flag: redelivered).
    redelivered = re.findall(r"'redeliveries': (\d+)", ingests["b"].output())
    assert redelivered and int(redelivered[-1]) > 0, ingests["b"].output()[-2000:]
    # Each ingest stored a share of the gateway's seq, and merged the others' shares
    # (ingest/sequence.py): none reports the others' batches as holes.
    for name, proc in ingests.items():
        holes = re.findall(r"'seq_holes': (\d+)", proc.output())
        assert holes and int(holes[-1]) == 0, (name, proc.output()[-2000:])

    # Lines written before the agent opened its ports are not read (the sensor side, not the
    # pipeline under test); the outbox gives every reading it took a seq, without holes.
    assert taken is not None and 1_000 <= taken <= SENSORS * PER_SENSOR
    assert stored_at_kill < taken, "the stream was over before the kill"
    total = taken
    # Exactly once: every (gateway, seq) once, every emitted counter once per sensor.
    seq_rows = q.query(
        'SELECT count("seq"), count(distinct("seq")), min("seq"), max("seq") FROM "soil" '
        'WHERE "plantation" = $p GROUP BY "gateway"',
        {"p": PLANTATION},
    )
    assert len(seq_rows) == 1 and seq_rows[0].tags == {"gateway": GATEWAY}
    _, count, distinct, lo, hi = seq_rows[0].values[0]
    assert (count, distinct) == (total, total)
    assert hi - lo + 1 == total, "seq has a hole: a reading was lost"
    for i in range(SENSORS):
        sent = {rec["values"]["counter"] for rec in read_records(tmp_path / f"sent{i}.jsonl")}
        rows = q.query(
            'SELECT "counter" FROM "soil" WHERE "plantation" = $p AND "sensor" = $s',
            {"p": PLANTATION, "s": f"soil-{i}"},
        )
        stored = [float(v[1]) for v in rows[0].values]
        assert len(stored) == len(set(stored)), f"soil-{i}: a counter is stored twice"
        assert set(stored) <= {float(c) for c in sent}
    assert (
        not (tmp_path / "gw" / "outbox.sqlite").exists()
        or _outbox_rows(tmp_path / "gw" / "outbox.sqlite") == 0
    )


_MEMBER = """
import sys, paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port, cid, expiry, sub = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
p = Properties(PacketTypes.CONNECT)
p.SessionExpiryInterval = expiry
c.on_connect = lambda cl, *a: cl.subscribe(sub, qos=1)
c.on_subscribe = lambda *a: print("subscribed", flush=True)
c.connect("127.0.0.1", port, clean_start=False, properties=p)
c.loop_forever()
"""


@pytest.mark.parametrize(("expiry", "survivor_gets"), [(3600, 10), (1, 20)])
def test_a_dead_member_keeps_its_share_until_its_session_expires(
    stack: Any, tmp_path: Path, expiry: int, survivor_gets: int
) -> None:
    """Mosquitto 2.0 deals shared-subscription messages round-robin to every member with a
    session, connected or not: a SIGKILLed ingest with a long session expiry is handed half
    of 20 messages (2 members) and holds them until it comes back; once its session has
    expired, the survivor gets all 20. Hence docs/performance.md: restart a dead ingest with
    the same client id, or run several ingests with a short [ingest] session_expiry (the
    agents resend whatever a lost session held)."""
    tag = uuid.uuid4().hex[:8]
    topic = f"scale/{tag}/x"
    sub = f"$share/g{tag}/{topic}"
    survivor = TestClient(stack.mqtt_host, stack.mqtt_port, client_id=f"alive-{tag}")
    survivor.subscribe(sub)
    dead = _member_proc(tmp_path, stack.mqtt_port, f"dead-{tag}", expiry, sub)
    try:
        wait_until(lambda: "subscribed" in dead.output(), 15, "the second member to subscribe")
        dead.kill()  # SIGKILL: no DISCONNECT; the broker keeps its session for `expiry` s
        if expiry < 3600:
            time.sleep(expiry + 2.5)  # Mosquitto expires sessions on a periodic check
        publisher = TestClient(stack.mqtt_host, stack.mqtt_port, client_id=f"pub-{tag}")
        for i in range(20):
            publisher.publish(topic, b"m%d" % i)
        publisher.close()

        def received() -> int:
            return len([m for m in list(survivor.messages) if m.topic == topic])

        # Until the survivor has its share (the assert below names the count if not), then
        # a quiet second: no more than that arrive.
        deadline = time.monotonic() + 10
        while received() < survivor_gets and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        got = received()
    finally:
        survivor.close()
        _stop(dead)
    assert got == survivor_gets


def _member_proc(tmp_path: Path, port: int, cid: str, expiry: int, sub: str) -> Proc:
    """A bare paho shared-subscription member in a process of its own (to SIGKILL it)."""
    script = tmp_path / "member.py"
    script.write_text(_MEMBER)
    return Proc(
        cid,
        [sys.executable, str(script), str(port), cid, str(expiry), sub],
        tmp_path / f"{cid}.log",
    )
