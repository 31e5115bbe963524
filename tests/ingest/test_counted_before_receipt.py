"""The ingest counts a message whole, before its receipt goes out: a `farmtel_ingest` point,
`/metrics` or status read after an agent got its receipt shows the message counted, and
never half of it (stored but not its duplicates)."""

from pathlib import Path
from typing import Any

from contract import decode_receipt
from ingest.config import IngestConfig
from ingest.service import Ingest
from tests.ingest.test_concurrent_writes import _decoded, _Writer


class _SeesCounters:
    """paho's ack() and publish(): keeps the counters as they are when a receipt goes out."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.at_receipt: list[tuple[str, dict[str, int]]] = []

    def ack(self, mid: int, qos: int) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any:
        if "/receipt" in topic:
            batch = decode_receipt(payload).batch
            self.at_receipt.append((batch, self.ingest.counters_now()))


def test_a_message_is_counted_whole_before_its_receipt(tmp_path: Path) -> None:
    config = IngestConfig.model_validate({"ingest": {"state_dir": str(tmp_path / "ingest")}})
    ingest = Ingest(config, writer=_Writer(lambda _n, _body: None))
    client = _SeesCounters(ingest)
    ingest.client = client  # type: ignore[assignment]
    first, again = _decoded(1, "b-1", 0), _decoded(2, "b-2", 0)  # the same seq twice
    ingest._acknowledge([first, again], [])
    assert [batch for batch, _ in client.at_receipt] == ["b-1", "b-2"]
    counted = [
        (c["batches_stored"], c["readings_stored"], c["duplicates"]) for _, c in client.at_receipt
    ]
    assert counted == [(1, 1, 0), (2, 2, 1)]
