"""`query latest` looks at the last days first and falls back to the whole history, so a
sensor silent for weeks still shows with its old reading (ingest/queries.py latest)."""

from __future__ import annotations

import time
from typing import Any

from ingest.influx import InfluxQuery, InfluxSettings, make_writer
from ingest.line_protocol import encode_point
from ingest.queries import latest

P = "hlj-latest-001"
DAY_NS = 86_400 * 10**9


def _point(sensor: str, ts: int, moisture: float, plantation: str = P) -> str:
    return encode_point(
        "soil",
        {"plantation": plantation, "field": "north", "gateway": "gw-1", "sensor": sensor},
        {"moisture_pct": moisture, "seq": 1, "clock": "synced"},
        ts,
    )


def test_recent_and_long_silent_sensors_both_come_back(stack: Any, influx_db: str) -> None:
    now = time.time_ns()
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=influx_db))
    lines = [
        _point("fresh", now - 2 * DAY_NS, 10.0),
        _point("fresh", now - 60_000_000_000, 11.0),  # its newest: a minute ago
        _point("silent", now - 60 * DAY_NS, 20.0),
        _point("silent", now - 40 * DAY_NS, 21.0),  # its newest: 40 days ago
        _point("other", now, 99.0, plantation="hlj-latest-002"),  # another plantation
    ]
    writer.write("\n".join(lines).encode())
    writer.close()
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    rows = {r.sensor: r for r in latest(q, P)}
    assert set(rows) == {"fresh", "silent"}
    assert rows["fresh"].values == {"moisture_pct": 11.0}
    assert rows["silent"].values == {"moisture_pct": 21.0}
    assert rows["silent"].time_ns == now - 40 * DAY_NS


def test_only_recent_sensors_answer_from_the_recent_span(stack: Any, influx_db: str) -> None:
    now = time.time_ns()
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=influx_db))
    writer.write("\n".join([_point("a", now - DAY_NS, 1.0), _point("b", now, 2.0)]).encode())
    writer.close()
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    rows = latest(q, P)
    assert [(r.sensor, r.values["moisture_pct"]) for r in rows] == [("a", 1.0), ("b", 2.0)]
