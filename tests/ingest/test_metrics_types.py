"""The ingest's /metrics: counters only ever grow; what can fall is a gauge."""

import queue
import threading
from types import SimpleNamespace
from typing import Any, cast

from contract.metrics import render
from ingest.metrics import ingest_samples


def test_seq_holes_is_a_gauge_and_the_counters_are_totals() -> None:
    counters = {"messages": 7, "seq_holes": 3, "duplicates": 1}
    service = SimpleNamespace(
        config=SimpleNamespace(client_id=lambda: "ingest-1"),
        counters_now=lambda: dict(counters),
        alerts=SimpleNamespace(fired=0, resolved=0),
        inbox=queue.Queue(),
        connected=threading.Event(),
    )
    text = render(ingest_samples(cast(Any, service)))
    assert "# TYPE farmtel_ingest_seq_holes gauge" in text
    assert 'farmtel_ingest_seq_holes{client_id="ingest-1"} 3' in text
    assert "seq_holes_total" not in text
    assert "# TYPE farmtel_ingest_messages_total counter" in text
    assert "# TYPE farmtel_ingest_duplicates_total counter" in text
