"""Unit tests of the ingest's delivery bookkeeping: seq tracking, clock quarantine and the
self-metric points (pure functions; the fault suite runs them on the real servers)."""

from __future__ import annotations

from datetime import date

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.wire import Batch, Reading
from ingest.quarantine import (
    BEFORE_REGISTRATION,
    FUTURE,
    config_not_before_ns,
    judge,
    split_batch,
)
from ingest.selfmetrics import StatusError, agent_line, ingest_line
from ingest.sequence import SequenceTracker

S = 10**9


def test_in_order_batches_make_no_duplicates_and_no_holes() -> None:
    t = SequenceTracker()
    assert t.observe("p", "g", range(0, 500)) == 0
    assert t.observe("p", "g", range(500, 1000)) == 0
    state = t.gateway("p", "g")
    assert state is not None and state.starts == [0] and state.ends == [999]
    assert t.totals().holes == 0 and t.holes_total == 0


def test_a_redelivered_batch_counts_as_duplicates() -> None:
    t = SequenceTracker()
    t.observe("p", "g", range(0, 500))
    assert t.observe("p", "g", range(250, 750)) == 250
    assert t.totals().duplicates == 250


def test_a_late_batch_fills_its_hole() -> None:
    t = SequenceTracker()
    t.observe("p", "g", range(0, 100))
    t.observe("p", "g", range(200, 300))
    assert t.holes_total == 100
    t.observe("p", "g", range(100, 200))
    assert t.holes_total == 0


def test_a_declared_gap_is_not_a_hole() -> None:
    t = SequenceTracker()
    t.observe("p", "g", range(0, 10))
    t.observe("p", "g", range(15, 20), declared=[(10, 5)])
    assert t.holes_total == 0 and t.totals().duplicates == 0


def test_gateways_are_kept_apart() -> None:
    t = SequenceTracker()
    t.observe("p", "a", range(10))
    assert t.observe("p", "b", range(10)) == 0
    assert t.observe("q", "a", range(10)) == 0


def test_ingests_of_a_share_group_see_no_holes_once_they_merge() -> None:
    # Three ingests each store every third batch of one gateway.
    ingests = [SequenceTracker() for _ in range(3)]
    for n in range(9):
        ingests[n % 3].observe("p", "g", range(n * 100, n * 100 + 100))
    assert all(t.holes_total > 0 for t in ingests)  # each alone sees the others' batches as holes
    for t in ingests:
        for other in ingests:
            t.merge("p", "g", other.export("p", "g"))
    assert [t.holes_total for t in ingests] == [0, 0, 0]
    assert all(t.export("p", "g") == [[0, 899]] for t in ingests)
    # Merging counts no duplicates; storing a batch again still does, in the ingest that did.
    assert sum(t.totals().duplicates for t in ingests) == 0
    assert ingests[1].observe("p", "g", range(0, 100)) == 100


def test_a_real_hole_stays_after_merging() -> None:
    a, b = SequenceTracker(), SequenceTracker()
    a.observe("p", "g", range(0, 100))
    b.observe("p", "g", range(150, 200))
    a.merge("p", "g", b.export("p", "g"))
    b.merge("p", "g", a.export("p", "g"))
    assert a.holes_total == b.holes_total == 50
    assert a.export("p", "g") == b.export("p", "g") == [[0, 99], [150, 199]]
    assert SequenceTracker().export("p", "nobody") == []


@pytest.mark.parametrize(
    "seen",
    [[[5, 1]], [[1]], [["0", 5]], [[0, 2**63]], [[-1, 3]], [[0, 1.5]], ["0-5"], [[True, 3]]],
)
def test_bad_shared_intervals_are_refused_whole(seen: list[object]) -> None:
    t = SequenceTracker()
    t.observe("p", "g", range(10))
    with pytest.raises(ValueError, match="seq interval"):
        t.merge("p", "g", [[20, 30], *seen])  # type: ignore[list-item]
    assert t.export("p", "g") == [[0, 9]] and t.holes_total == 0


def test_memory_is_bounded_by_compaction() -> None:
    t = SequenceTracker(max_intervals=4)
    for i in range(100):
        t.observe("p", "g", [i * 2])  # every other seq missing
    state = t.gateway("p", "g")
    assert state is not None and len(state.starts) == 4
    assert t.holes_total == 99  # settled holes stay counted
    assert t.observe("p", "g", [0]) == 0 and state.late == 1


def test_gateway_count_is_bounded() -> None:
    t = SequenceTracker(max_gateways=2)
    for g in "abc":
        t.observe("p", g, range(5))
    assert t.totals().gateways == 2 and t.gateway("p", "a") is None


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_intervals"):
        SequenceTracker(max_intervals=0)


@given(st.lists(st.integers(0, 200), max_size=300), st.integers(1, 8))
def test_tracker_agrees_with_a_set(seqs: list[int], chunk: int) -> None:
    t = SequenceTracker()
    seen: set[int] = set()
    dups = 0
    for i in range(0, len(seqs), chunk):
        part = seqs[i : i + chunk]
        expected = 0
        for s in part:
            expected += s in seen
            seen.add(s)
        dups += expected
        assert t.observe("p", "g", part) == expected
    state = t.gateway("p", "g")
    holes = (max(seen) - min(seen) + 1 - len(seen)) if seen else 0
    assert t.holes_total == holes and t.totals().duplicates == dups
    if state is not None:
        assert sum(e - s + 1 for s, e in zip(state.starts, state.ends, strict=True)) == len(seen)


def test_judge_future_and_before_registration() -> None:
    now = 2_000_000_000 * S
    assert judge(now, now, None) is None
    assert judge(now + 300 * S, now, None) is None
    assert judge(now + 301 * S, now, None) == FUTURE
    assert judge(now + 10 * S, now, None, max_future_ns=5 * S) == FUTURE
    assert judge(5, now, None) is None
    assert judge(5, now, now - S) == BEFORE_REGISTRATION
    assert judge(now - S, now, now - S) is None


def test_not_before_from_config() -> None:
    assert config_not_before_ns(None) is None
    assert config_not_before_ns(date(1970, 1, 2)) == 86_400 * S


def _reading(seq: int, ts: int) -> Reading:
    return Reading(
        sensor="s-1",
        field="f",
        kind="soil",
        ts=ts,
        clock="unsynced",
        seq=seq,
        values={"moisture_pct": 1.5},
    )


def test_split_batch_moves_doubtful_readings_to_quarantine() -> None:
    now = 2_000_000_000 * S
    batch = Batch(
        gateway="gw",
        boot="b",
        batch="x",
        sent=now,
        readings=[_reading(0, now), _reading(1, now + 3600 * S), _reading(2, 10)],
    )
    kept, lines = split_batch("p", batch, now, now - 86_400 * S, 300 * S)
    assert [r.seq for r in kept.readings] == [0]
    assert len(lines) == 2
    assert lines[0].startswith("farmtel_quarantine,") and "reason=future" in lines[0]
    assert f"ts_ns={now + 3600 * S}i" in lines[0] and "seq=1i" in lines[0]
    assert "reason=before_registration" in lines[1] and lines[1].endswith(" 10")
    same, none = split_batch(
        "p", batch.model_copy(update={"readings": batch.readings[:1]}), now, None, 300 * S
    )
    assert none == [] and len(same.readings) == 1


def test_agent_status_becomes_a_point() -> None:
    payload = orjson.dumps(
        {
            "state": "online",
            "ts": 1_700_000_000 * S,
            "outbox": {"readings": 12, "oldest_age_s": 3.5, "inflight_batches": 2, "dropped": 0},
            "counters": {
                "readings_in": 100,
                "readings_acked": 88,
                "batches_sent": 3,
                "batches_resent": 1,
                "receipts": 2,
                "gaps": 0,
            },
        }
    )
    line = agent_line("hlj-001", "gw-01", payload)
    assert line is not None
    assert line.startswith("farmtel_agent,gateway=gw-01,plantation=hlj-001 ") or line.startswith(
        "farmtel_agent,plantation=hlj-001,gateway=gw-01 "
    )
    for part in (
        "outbox_readings=12i",
        "outbox_oldest_age_s=3.5",
        "readings_acked=88i",
        'state="online"',
    ):
        assert part in line
    assert line.endswith(str(1_700_000_000 * S))


def test_offline_will_writes_no_point() -> None:
    assert agent_line("p", "g", b'{"state": "offline", "reason": "connection lost"}') is None


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not an object"),
        (b'{"ts": 1, "outbox": {"readings": "many"}}', "outbox.readings"),
    ],
)
def test_bad_status_is_refused_with_reason(payload: bytes, match: str) -> None:
    with pytest.raises(StatusError, match=match):
        agent_line("p", "g", payload)


def test_ingest_point() -> None:
    line = ingest_line("host1", "ingest-1", {"messages": 3, "rss_bytes": 1000}, 5)
    assert line == "farmtel_ingest,client_id=ingest-1,host=host1 messages=3i,rss_bytes=1000i 5" or (
        line.startswith("farmtel_ingest,") and "messages=3i" in line
    )


def test_delivery_config_keys_are_checked() -> None:
    from agent.config import parse_gateway_config
    from contract.settings import ConfigError
    from ingest.config import parse_ingest_config

    cfg = parse_ingest_config({"ingest": {"not_before": "2026-03-01"}}, "x.toml", environ={})
    assert config_not_before_ns(cfg.ingest.not_before) == 1_772_323_200 * S
    assert cfg.ingest.max_future_skew == 300.0 and cfg.ingest.metrics_interval == 10.0
    with pytest.raises(ConfigError, match=r"ingest\.not_before"):
        parse_ingest_config({"ingest": {"not_before": "soon"}}, "x.toml", environ={})
    with pytest.raises(ConfigError, match=r"ingest\.max_future_skew"):
        parse_ingest_config({"ingest": {"max_future_skew": -1}}, "x.toml", environ={})
    with pytest.raises(ConfigError, match=r"ingest\.metrics_interval"):
        parse_ingest_config({"ingest": {"metrics_interval": 0}}, "x.toml", environ={})
    raw = {
        "gateway": {"plantation": "p", "id": "g"},
        "outbox": {"prune_on": "never"},
        "sensors": [
            {
                "id": "s",
                "driver": "text_line",
                "kind": "soil",
                "port": "/dev/null",
                "field": "f",
                "format": "csv",
                "columns": ["a_pct"],
            }
        ],
    }
    with pytest.raises(ConfigError, match=r"outbox\.prune_on"):
        parse_gateway_config(raw, "gw.toml", environ={})
