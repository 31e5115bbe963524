"""Several InfluxDB writes in flight in one ingest ([ingest] write_concurrency): stored
messages are still acked and receipted after their write, and dead-lettered ones after the
messages before them: every PUBACK in the order the messages came in.

The writer here is a fault injector (a write that waits for a later one, a write that
fails); the broker side is a recorder of paho's ack and publish calls. The real path,
broker and InfluxDB included, is covered by tests/test_ingest_service.py and
tests/test_scale_out.py, which run with the default of 2.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from contract import Batch, Reading, decode_receipt, encode_batch, telemetry_topic
from ingest.config import IngestConfig
from ingest.influx import InfluxRejected, InfluxUnavailable
from ingest.mapping import plain_batch_lines
from ingest.service import Decoded, Inbound, Ingest

P, G = "hlj-cw-001", "gw-cw"
WAIT = 10.0
"""Seconds a test waits for a thread before it fails (never reached when all is well)."""


class _Recorder:
    """paho's ack() and publish() as the writers call them, in call order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def ack(self, mid: int, qos: int) -> None:
        with self.lock:
            self.calls.append(("ack", mid))

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if "/receipt" in topic:
            with self.lock:
                self.calls.append(("receipt", decode_receipt(payload).batch))

    def acks(self) -> list[int]:
        with self.lock:
            return [mid for kind, mid in self.calls if kind == "ack"]

    def receipts(self) -> list[str]:
        with self.lock:
            return [batch for kind, batch in self.calls if kind == "receipt"]


class _Writer:
    """Each write is handed to ``script(n, body)`` (n counts writes from 0)."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.started: list[int] = []
        self.lock = threading.Lock()

    def write(self, lines: bytes) -> None:
        with self.lock:
            n = len(self.started)
            self.started.append(n)
        self.script(n, lines)

    def close(self) -> None:
        pass


def _decoded(mid: int, batch_id: str, seq: int) -> Decoded:
    now = time.time_ns()
    batch = Batch(
        gateway=G,
        boot="b",
        batch=batch_id,
        sent=now,
        readings=[
            Reading(
                sensor="s-1",
                field="north",
                kind="soil",
                ts=now - 1000,
                clock="synced",
                seq=seq,
                values={"moisture_pct": 31.5},
            )
        ],
    )
    payload = encode_batch(batch)
    plain = plain_batch_lines(P, G, payload, 0, now + 10**12)
    assert plain is not None
    return Decoded(Inbound(mid, 1, telemetry_topic(P, G), payload, mid), P, plain, plain.lines)


def _ingest(tmp_path: Path, writer: _Writer, concurrency: int) -> tuple[Ingest, _Recorder]:
    config = IngestConfig.model_validate(
        {
            "ingest": {
                "state_dir": str(tmp_path / "ingest"),
                "write_concurrency": concurrency,
                "retry_max_backoff": 0.05,
            }
        }
    )
    ingest = Ingest(config, writer=writer)
    recorder = _Recorder()
    ingest.client = recorder  # type: ignore[assignment]
    return ingest, recorder


def _run(ingest: Ingest, groups: list[list[Decoded]]) -> None:
    """Hand ``groups`` to the writer threads as the decoder does, then let them finish."""
    for writer in ingest._writer_threads:
        writer.start()
    for group in groups:
        ingest._decoded.put((ingest._tickets, group, []), timeout=WAIT)
        ingest._tickets += 1
    deadline = time.monotonic() + WAIT
    while ingest._turn < len(groups) and time.monotonic() < deadline:
        time.sleep(0.01)
    ingest.stop_event.set()
    for writer in ingest._writer_threads:
        writer.join(WAIT)
        assert not writer.is_alive()
    ingest.dead.close()


def test_a_later_write_that_ends_first_is_acked_after_the_earlier_one(tmp_path: Path) -> None:
    second_done = threading.Event()

    def script(n: int, _body: bytes) -> None:
        if n == 0:  # the first write ends only after the second one has
            assert second_done.wait(WAIT), "the second write never ran beside the first"
        else:
            second_done.set()

    writer = _Writer(script)
    ingest, recorder = _ingest(tmp_path, writer, concurrency=2)
    _run(ingest, [[_decoded(1, "b-1", 0)], [_decoded(2, "b-2", 1), _decoded(3, "b-3", 2)]])
    assert second_done.is_set()
    assert recorder.calls == [
        ("ack", 1),
        ("receipt", "b-1"),
        ("ack", 2),
        ("receipt", "b-2"),
        ("ack", 3),
        ("receipt", "b-3"),
    ]
    assert ingest.counters["batches_stored"] == 3
    assert ingest.counters["readings_stored"] == 3
    assert ingest.sequence.holes_total == 0


def test_one_write_at_a_time_when_concurrency_is_1(tmp_path: Path) -> None:
    overlapped = threading.Event()
    busy = threading.Lock()

    def script(_n: int, _body: bytes) -> None:
        if not busy.acquire(blocking=False):
            overlapped.set()
            return
        try:
            time.sleep(0.05)  # room for a second writer to start, if there were one
        finally:
            busy.release()

    writer = _Writer(script)
    ingest, recorder = _ingest(tmp_path, writer, concurrency=1)
    _run(ingest, [[_decoded(m, f"b-{m}", m)] for m in range(1, 5)])
    assert len(ingest._writer_threads) == 1
    assert not overlapped.is_set()
    assert recorder.acks() == [1, 2, 3, 4]


def test_a_write_that_fails_does_not_hold_back_the_acks_of_later_ones(tmp_path: Path) -> None:
    def script(n: int, body: bytes) -> None:
        if b"b-bad" in body:
            raise RuntimeError("injected: a bug while writing")

    writer = _Writer(script)
    ingest, recorder = _ingest(tmp_path, writer, concurrency=2)
    _run(
        ingest,
        [[_decoded(1, "b-bad", 0)], [_decoded(2, "b-2", 1)], [_decoded(3, "b-3", 2)]],
    )
    # The failed group stays unacked (the broker redelivers it); the others go on, in order.
    assert recorder.acks() == [2, 3]
    assert ingest.counters["batches_stored"] == 2


def test_a_stop_while_influxdb_is_down_acks_only_what_was_stored(tmp_path: Path) -> None:
    down = threading.Event()
    down.set()

    def script(n: int, body: bytes) -> None:
        if b"b-held" in body and down.is_set():
            raise InfluxUnavailable("injected: connection refused")

    writer = _Writer(script)
    ingest, recorder = _ingest(tmp_path, writer, concurrency=2)
    for thread in ingest._writer_threads:
        thread.start()
    ingest._decoded.put((0, [_decoded(1, "b-held", 0)], []), timeout=WAIT)
    ingest._decoded.put((1, [_decoded(2, "b-2", 1)], []), timeout=WAIT)
    ingest._tickets = 2
    deadline = time.monotonic() + WAIT
    while ingest.counters["write_retries"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ingest.counters["write_retries"] >= 2
    # b-2 is stored but waits for b-held's turn: no ack yet, in order.
    assert recorder.acks() == []
    ingest.stop_event.set()
    for thread in ingest._writer_threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    ingest.dead.close()
    assert recorder.acks() == [2]  # b-held never stored: unacked, redelivered after a restart
    assert len(writer.started) >= 3


@pytest.mark.parametrize("value", [0, 9])
def test_write_concurrency_out_of_range_is_refused(tmp_path: Path, value: int) -> None:
    with pytest.raises(ValueError, match="write_concurrency"):
        IngestConfig.model_validate({"ingest": {"write_concurrency": value}})


def _bad(mid: int, batch_id: str) -> Inbound:
    """A telemetry message the decoder dead-letters (no readings key), naming its batch."""
    payload = b'{"v":1,"gateway":"%s","batch":"%s"}' % (G.encode(), batch_id.encode())
    return Inbound(mid, 1, telemetry_topic(P, G), payload, mid)


def test_a_rejected_message_is_acked_in_its_place(tmp_path: Path) -> None:
    """InfluxDB refuses one message of a write: it is dead-lettered, and acked between the
    stored ones before and after it, not ahead of them."""

    def script(_n: int, body: bytes) -> None:
        if b"seq=1i" in body:
            raise InfluxRejected("injected: partial write: field type conflict")

    writer = _Writer(script)
    ingest, recorder = _ingest(tmp_path, writer, concurrency=2)
    _run(ingest, [[_decoded(1, "b-1", 0), _decoded(2, "b-2", 1), _decoded(3, "b-3", 2)]])
    assert recorder.acks() == [1, 2, 3]
    assert [c for c in recorder.calls if c[0] == "receipt"] == [
        ("receipt", "b-2"),  # dead-lettered: told at once, acked in turn
        ("receipt", "b-1"),
        ("receipt", "b-3"),
    ]
    assert ingest.counters["dead_letters"] == 1
    assert ingest.counters["batches_stored"] == 2


def test_a_message_the_decoder_dead_letters_waits_for_the_writes_before_it(
    tmp_path: Path,
) -> None:
    """The decoder dead-letters message 3 while the write of message 1 is still in flight
    and message 2 is stored: 3 is acked after both, in arrival order, by the real decoder."""
    release = threading.Event()

    def script(n: int, _body: bytes) -> None:
        if n == 0:
            assert release.wait(WAIT), "the test never released the first write"

    writer = _Writer(script)
    ingest, recorder = _ingest(tmp_path, writer, concurrency=2)
    ingest.config.ingest.write_max_wait = 0.001  # message 1 alone in its group
    for thread in [ingest._worker, *ingest._writer_threads]:
        thread.start()
    ingest.inbox.put(_decoded(1, "b-1", 0).msg)
    deadline = time.monotonic() + WAIT
    while not writer.started and time.monotonic() < deadline:
        time.sleep(0.01)
    ingest.inbox.put(_decoded(2, "b-2", 1).msg)
    ingest.inbox.put(_bad(3, "b-bad"))
    # The receipt itself: the dead_letters counter goes up before it is published.
    while "b-bad" not in recorder.receipts() and time.monotonic() < deadline:
        time.sleep(0.01)
    while len(writer.started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ingest.counters["dead_letters"] == 1
    assert ("receipt", "b-bad") in recorder.calls  # the gateway is told at once
    assert recorder.acks() == []  # ... but nothing is acked ahead of message 1
    release.set()
    while len(recorder.acks()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    ingest.stop_event.set()
    for thread in [ingest._worker, *ingest._writer_threads]:
        thread.join(WAIT)
        assert not thread.is_alive()
    ingest.dead.close()
    assert recorder.acks() == [1, 2, 3]
    assert ingest.counters["batches_stored"] == 2
