"""How the ingest's decoder groups messages into InfluxDB writes (``Ingest._gather``).

A write holds at most ``[ingest] write_max_readings`` lines, counted on the decoded batches
(it used to be estimated from payload bytes, which made writes ~3x smaller than the budget
for the agent's batches: docs/performance.md, ninth round). A batch that would pass the
budget begins the next group; a batch bigger than the budget is written alone; dead letters
keep their place. No InfluxDB or broker here: the groups are read straight from
``_gather``, so nothing is written and nothing is acked.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from contract import Batch, Reading, encode_batch, telemetry_topic
from ingest.config import IngestConfig
from ingest.influx import InfluxUnavailable
from ingest.service import Inbound, Ingest

P, G = "hlj-gather-001", "gw-gather"


class _NoWriter:
    def write(self, lines: bytes) -> None:
        raise AssertionError("_gather must not write")

    def close(self) -> None:
        pass


def _payload(batch_no: int, readings: int) -> bytes:
    now = time.time_ns()
    return encode_batch(
        Batch(
            gateway=G,
            boot="b",
            batch=f"b{batch_no}",
            sent=now,
            readings=[
                Reading(
                    sensor=f"s-{i % 5}",
                    field="north",
                    kind="soil",
                    ts=now - 10**9 + i,
                    clock="synced",
                    seq=batch_no * 100_000 + i,
                    values={"moisture_pct": 31.5, "temp_c": 12.25},
                )
                for i in range(readings)
            ],
        )
    )


def _ingest(tmp_path: Path, budget: int, wait: float = 0.05, **more: object) -> Ingest:
    config = IngestConfig.model_validate(
        {
            "ingest": {
                "state_dir": str(tmp_path / "ingest"),
                "write_max_readings": budget,
                "write_max_wait": wait,
            },
            **more,
        }
    )
    ingest = Ingest(config, writer=_NoWriter())  # type: ignore[arg-type]
    ingest.client.publish = lambda *a, **k: None  # type: ignore[method-assign,assignment]
    return ingest


def _queue(ingest: Ingest, payloads: list[bytes]) -> None:
    for n, payload in enumerate(payloads):
        ingest.inbox.put(Inbound(n + 1, 1, telemetry_topic(P, G), payload, n))


def _groups(ingest: Ingest) -> list[list[tuple[int, int]]]:
    """Every group until the inbox is empty, as (arrival, lines or -1 for a dead letter)."""
    groups = []
    while True:
        msgs, results = ingest._gather()
        if not msgs:
            return groups
        assert [m.arrival for m in msgs] == [
            m.arrival if d is None else d.msg.arrival for m, d in zip(msgs, results, strict=True)
        ]
        groups.append(
            [
                (m.arrival, -1 if d is None else len(d.lines))
                for m, d in zip(msgs, results, strict=True)
            ]
        )


def test_a_write_is_filled_to_the_budget_counted_in_lines(tmp_path: Path) -> None:
    # 200 readings + 1 batch record = 201 lines a message; 1,000 lines take 4 of them.
    ingest = _ingest(tmp_path, budget=1_000)
    _queue(ingest, [_payload(n, 200) for n in range(10)])
    groups = _groups(ingest)
    assert [len(g) for g in groups] == [4, 4, 2]
    assert all(sum(lines for _, lines in g) <= 1_000 for g in groups)
    # Every message once, in the order it came, the one carried over included.
    assert [a for g in groups for a, _ in g] == list(range(10))
    assert ingest.counters["messages"] == 10


def test_a_batch_bigger_than_the_budget_is_written_alone(tmp_path: Path) -> None:
    ingest = _ingest(tmp_path, budget=100)
    _queue(ingest, [_payload(0, 10), _payload(1, 300), _payload(2, 10), _payload(3, 10)])
    assert _groups(ingest) == [[(0, 11)], [(1, 301)], [(2, 11), (3, 11)]]


def test_dead_letters_keep_their_place_and_take_no_budget(tmp_path: Path) -> None:
    ingest = _ingest(tmp_path, budget=500)
    _queue(ingest, [_payload(0, 200), b"not json", _payload(1, 200), b"{}", _payload(2, 200)])
    assert _groups(ingest) == [[(0, 201), (1, -1), (2, 201), (3, -1)], [(4, 201)]]
    assert ingest.counters["messages"] == 5
    assert ingest.counters["dead_letters"] == 2


def _nested(field: bytes, depth: int) -> bytes:
    return (
        b'{"v":1,"gateway":"' + G.encode() + b'","boot":"b","batch":"b9","sent":5,'
        b'"readings":[],"gaps":[],"sig":null,' + field + b":" + b"[" * depth + b"]" * depth + b"}"
    )


@pytest.mark.parametrize("field", [b'"gaps"', b'"readings"', b'"sig"'])
def test_a_deeply_nested_payload_is_a_dead_letter_and_the_decoder_goes_on(
    tmp_path: Path, field: bytes
) -> None:
    # A review found that 2 KB of nested lists in "gaps" made msgspec raise RecursionError
    # out of the decoder, which killed its thread (the message was never acked). The field
    # comes twice here, the nested copy last, so it is the one each parser keeps.
    ingest = _ingest(tmp_path, budget=500)
    _queue(ingest, [_nested(field, 100_000), _payload(1, 10), _nested(field, 2_000)])
    assert _groups(ingest) == [[(0, -1), (1, 11), (2, -1)]]
    assert ingest.counters["dead_letters"] == 2


def test_an_empty_inbox_gives_no_group(tmp_path: Path) -> None:
    ingest = _ingest(tmp_path, budget=500)
    assert ingest._gather() == ([], [])


class _Writer:
    """Takes every write, or refuses them all as if InfluxDB were down."""

    def __init__(self, down: bool) -> None:
        self.down = down
        self.writes: list[int] = []

    def write(self, lines: bytes) -> None:
        if self.down:
            raise InfluxUnavailable("connection refused (test)")
        self.writes.append(lines.count(b"\n") + 1)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("influx_down", [False, True])
def test_a_group_decoded_when_the_stop_comes_is_still_handed_over(
    tmp_path: Path, influx_down: bool
) -> None:
    """Stopping while a group gathers: its dead letter is acked in turn (redelivered, it
    would be dead-lettered and receipted twice), its batch stored and acked if InfluxDB
    takes it, and left unacked for redelivery if not."""
    ingest = _ingest(tmp_path, budget=10_000, wait=8.0)
    writer = _Writer(influx_down)
    ingest.writer = writer  # type: ignore[assignment]
    acks: list[int] = []
    ingest.client.ack = lambda mid, qos: acks.append(mid)  # type: ignore[method-assign,assignment]
    _queue(ingest, [_payload(0, 20), b"not json"])  # mids 1 and 2
    ingest._worker.start()
    for thread in ingest._writer_threads:
        thread.start()
    deadline = time.monotonic() + 10
    while ingest.counters["dead_letters"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ingest.counters["dead_letters"] == 1  # both decoded; the group waits for more
    ingest.stop_event.set()
    for thread in [ingest._worker, *ingest._writer_threads]:
        thread.join(timeout=20)
        assert not thread.is_alive(), thread.name
    if influx_down:
        assert (acks, writer.writes) == ([2], [])
    else:
        assert (acks, writer.writes) == ([1, 2], [21])
    assert ingest.counters["dead_letters"] == 1


def test_held_writes_keep_lines_not_parsed_readings_unless_alert_rules_read_them(
    tmp_path: Path,
) -> None:
    """The parsed readings (~1 KB of dicts each) are let go of once checked when no alert
    rule will read them: a write held while InfluxDB is down costs its lines."""
    plain = _ingest(tmp_path / "plain", budget=1_000)
    _queue(plain, [_payload(0, 200)])
    _, [decoded] = plain._gather()
    assert decoded is not None
    assert decoded.batch.readings == [] and decoded.reading_count() == 200
    assert len(decoded.lines) == 201
    with pytest.raises(RuntimeError, match="let go of"):
        decoded.model()

    rule = {"name": "dry", "value": "moisture_pct", "op": "<", "threshold": 10.0}
    watched = _ingest(tmp_path / "watched", budget=1_000, alerts=[rule])
    _queue(watched, [_payload(0, 200)])
    _, [decoded] = watched._gather()
    assert decoded is not None
    assert decoded.reading_count() == 200 and len(decoded.model().readings) == 200


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_decoder_that_dies_is_seen_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Fault injection: a bug in decoding (not a bad payload, which is a dead letter) kills
    # the decoder thread. The ingest must not stay up holding unacked messages: watch()
    # returns the thread's name, and run_forever exits non-zero on it.
    ingest = _ingest(tmp_path, budget=500)

    def broken(msg: Inbound) -> None:
        raise RuntimeError("injected decoder bug")

    ingest._decode = broken  # type: ignore[method-assign,assignment]
    _queue(ingest, [_payload(0, 10)])
    ingest._worker.start()
    assert ingest.watch(every_s=0.05) == ["decoder"]
    assert "injected decoder bug" in caplog.text
    assert "the decoder failed" in caplog.text


def test_watch_returns_nothing_when_told_to_stop(tmp_path: Path) -> None:
    ingest = _ingest(tmp_path, budget=500)
    ingest._worker.start()
    threading.Timer(0.2, ingest.stop_event.set).start()
    assert ingest.watch(every_s=0.05) == []
    ingest._worker.join(5)
    assert not ingest._worker.is_alive()


def test_run_forever_exits_non_zero_when_a_thread_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest = _ingest(tmp_path, budget=500)
    monkeypatch.setattr(ingest, "start", lambda: None)
    monkeypatch.setattr(ingest, "stop", lambda: None)
    monkeypatch.setattr(ingest, "watch", lambda: ["decoder"])
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's handlers
    with pytest.raises(SystemExit) as exited:
        ingest.run_forever()
    assert "the decoder thread stopped on an error" in str(exited.value.code)
