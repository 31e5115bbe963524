"""The ingest on the real servers: readings with impossible timestamps go to
farmtel_quarantine (not stored as data, still receipted), duplicates and holes are counted,
and self-metrics (farmtel_ingest, farmtel_agent) reach InfluxDB."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from contract import (
    Batch,
    Gap,
    Reading,
    decode_receipt,
    encode_batch,
    receipt_topic,
    status_topic,
    telemetry_topic,
)
from ingest.influx import InfluxQuery, InfluxSettings
from tests.support.mqtt import TestClient
from tests.support.procs import farmtel, wait_until, write_toml

pytestmark = pytest.mark.integration

P, G = "hlj-quar-001", "gw-quar"
S = 10**9


def _reading(seq: int, ts: int, cal: str | None = None) -> Reading:
    return Reading(
        cal=cal,
        sensor="s-1",
        field="north",
        kind="soil",
        ts=ts,
        clock="unsynced",
        seq=seq,
        values={"moisture_pct": 10.0 + seq},
    )


def _rows(q: InfluxQuery, statement: str) -> list[dict[str, Any]]:
    out = []
    for series in q.query(statement):
        out += [dict(zip(series.columns, v, strict=True)) | series.tags for v in series.values]
    return out


def test_quarantine_counters_and_self_metrics(stack: Any, influx_db: str, tmp_path: Path) -> None:
    conf = write_toml(
        tmp_path / "ingest.toml",
        {
            "ingest": {
                "state_dir": str(tmp_path / "ingest"),
                "share_group": f"g-{influx_db}",
                "not_before": "2026-01-01",
                "max_future_skew": 60.0,
                "metrics_interval": 1.0,
            },
            "mqtt": {
                "host": stack.mqtt_host,
                "port": stack.mqtt_port,
                "client_id": f"i-{influx_db}",
            },
            "influxdb": {"url": stack.influx_url, "database": influx_db},
        },
    )
    ingest = farmtel("ingest", ["ingest", "run", "-c", str(conf)], tmp_path / "ingest.log")
    client = TestClient(stack.mqtt_host, stack.mqtt_port)
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    now = time.time_ns()
    try:
        client.subscribe(receipt_topic(P, G))
        wait_until(lambda: "mqtt connected" in ingest.output(), 15, "ingest to connect")
        first = Batch(
            gateway=G,
            boot="b",
            batch="b-1",
            sent=now,
            readings=[
                _reading(0, now - S),
                _reading(1, now + 3600 * S, cal="v7"),
                _reading(2, 5 * S),
            ],
        )
        # seq 3..4 declared by a gap, 5 stored, 6..7 never arrive (a hole), 8 stored;
        # then b-1 again (a redelivery: 3 duplicates).
        second = Batch(
            gateway=G,
            boot="b",
            batch="b-2",
            sent=now,
            readings=[_reading(5, now - S // 2), _reading(8, now - S // 4)],
            gaps=[Gap(start=now - 2 * S, end=now - S, reason="agent_down", seq=3, count=2)],
        )
        for batch in (first, second, first):
            client.publish(telemetry_topic(P, G), encode_batch(batch))
        status = {
            "state": "online",
            "ts": now,
            "outbox": {"readings": 7, "inflight_batches": 1},
            "counters": {"readings_in": 9, "readings_acked": 2},
        }
        client.publish(status_topic(P, G), orjson.dumps(status))
        receipts = [decode_receipt(m.payload) for m in client.wait_for(3, timeout=30)]
        assert {r.batch for r in receipts} == {"b-1", "b-2"}
        assert all(r.status == "stored" for r in receipts)
        metrics = wait_until(
            lambda: (
                _rows(q, 'SELECT * FROM "farmtel_ingest" ORDER BY time DESC LIMIT 1')
                and _rows(q, 'SELECT * FROM "farmtel_ingest" ORDER BY time DESC LIMIT 1')[0][
                    "batches_stored"
                ]
                == 3
                and _rows(q, 'SELECT * FROM "farmtel_ingest" ORDER BY time DESC LIMIT 1')[0]
            ),
            20,
            "a farmtel_ingest point after the three batches",
        )
        agent = wait_until(
            lambda: _rows(q, f'SELECT * FROM "farmtel_agent" WHERE "plantation" = \'{P}\''),
            20,
            "farmtel_agent",
        )
    finally:
        client.close()
        rc = ingest.stop()
    assert rc == 0, ingest.output()[-2000:]
    data = _rows(q, f'SELECT * FROM "soil" WHERE "plantation" = \'{P}\'')
    assert sorted(r["seq"] for r in data) == [0, 5, 8]
    quarantined = _rows(
        q, f'SELECT * FROM "farmtel_quarantine" WHERE "plantation" = \'{P}\' GROUP BY *'
    )
    assert {(r["seq"], r["reason"]) for r in quarantined} == {
        (1, "future"),
        (2, "before_registration"),
    }
    assert {r["ts_ns"] for r in quarantined} == {now + 3600 * S, 5 * S}
    assert all(
        r["moisture_pct"] == 10.0 + r["seq"] and r["clock"] == "unsynced" for r in quarantined
    )
    assert metrics["quarantined"] == 4  # two per copy of b-1
    # Everything the signed message needs stays with a quarantined reading ...
    assert {(r["seq"], r["batch"], r["cal"], r["kind"], r["field"]) for r in quarantined} == {
        (1, "b-1", "v7", "soil", "north"),
        (2, "b-1", None, "soil", "north"),
    }
    # ... and the batch record describes the batch as signed, quarantined readings included
    # (b-1 and b-2 share their sent time, so the record last written, b-1's copy, is kept).
    records = _rows(q, f'SELECT * FROM "farmtel_batch" WHERE "plantation" = \'{P}\'')
    assert [
        (r["batch"], r["first_seq"], r["last_seq"], r["readings"], r["quarantined"])
        for r in records
    ] == [("b-1", 0, 2, 3, 2)]
    assert metrics["readings_stored"] == 4
    assert metrics["duplicates"] == 3
    assert metrics["seq_holes"] == 2
    assert metrics["rss_bytes"] > 10 * 2**20
    assert agent[0]["plantation"] == P and agent[0]["gateway"] == G
    assert agent[0]["outbox_readings"] == 7 and agent[0]["readings_acked"] == 2
    assert agent[0]["state"] == "online" and agent[0]["time"] == now
