"""The time the agent was not running becomes one gateway-wide agent_down gap (agent/downtime.py):
the outbox keeps when the agent was last alive, and the next start declares the stretch."""

import logging
import re
import sqlite3
import time
from contextlib import closing
from itertools import pairwise
from pathlib import Path

import pytest

from agent.downtime import ALIVE_EVERY_S, AliveMark, ClockSteps, Downtime, clock_state, in_pieces
from agent.outbox import NewReading, Outbox
from contract.wire import ClockQuality, Gap
from tests.support.agents import make_agent

S = 10**9
NOW = 1_800_000_000 * S  # 2027-01-15, after the build epoch
OLD = 1_000 * S  # 1970: a clock nobody set


class Clocks:
    """Wall and monotonic clocks the test moves, and the kernel's sync flag."""

    def __init__(self, wall: int, synced: bool | None = True):
        self.wall = wall
        self.mono = 50 * S
        self.synced = synced

    def advance(self, s: float) -> None:
        self.wall += int(s * S)
        self.mono += int(s * S)

    def downtime(self, last: AliveMark | None) -> Downtime:
        return Downtime(
            last, wall_ns=lambda: self.wall, mono_ns=lambda: self.mono, synced=lambda: self.synced
        )


def test_marks_encode_and_refuse_what_they_cannot_read() -> None:
    for mark in (AliveMark(NOW, "synced"), AliveMark(5, "invalid", stopped=True)):
        assert AliveMark.decode(mark.encode()) == mark
    expected = re.escape("expected '<ns> <clock> <running|stopped>'")
    for bad in ("", "12 synced", "x synced running", "12 fine running", "12 synced gone", None):
        with pytest.raises(ValueError, match=expected):
            AliveMark.decode(bad)
    assert clock_state(OLD, True) == "invalid"
    assert clock_state(NOW, True) == "synced"
    assert clock_state(NOW, None) == "unsynced"


@pytest.mark.parametrize(
    ("stopped", "how"),
    [(True, "it was stopped"), (False, "it ended without stopping (killed, crashed")],
)
def test_a_restart_declares_the_time_since_the_last_mark(stopped: bool, how: str) -> None:
    clocks = Clocks(NOW + 300 * S)
    down = clocks.downtime(AliveMark(NOW, "synced", stopped))
    gap = down.check()
    assert gap is not None
    assert (gap.sensor, gap.start, gap.end, gap.reason) == (None, NOW, NOW + 300 * S, "agent_down")
    assert gap.detail.startswith(f"the agent was not running: {how}")
    assert "clock" not in gap.detail
    assert not down.pending
    assert down.check() is None  # once


def test_an_unsynced_clock_is_named_in_the_detail() -> None:
    clocks = Clocks(NOW + 60 * S, synced=False)
    gap = clocks.downtime(AliveMark(NOW, "synced")).check()
    assert gap is not None and gap.end == NOW + 60 * S
    assert gap.detail.endswith("; clock synced at the start, unsynced at the end")


def test_a_downtime_under_a_second_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    clocks = Clocks(NOW + S // 2)
    with caplog.at_level(logging.INFO, logger="agent.downtime"):
        down = clocks.downtime(AliveMark(NOW, "synced"))
        assert down.check() is None
    assert not down.pending
    assert "the agent was down 0.500 s; too short to declare" in caplog.text


def test_no_mark_means_nothing_to_declare() -> None:
    down = Clocks(NOW).downtime(None)
    assert down.check() is None
    assert not down.pending


def test_a_mark_from_a_clock_before_the_build_cannot_be_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = Clocks(NOW).downtime(AliveMark(OLD, "invalid"))
    assert down.check() is None
    assert not down.pending
    assert "cannot tell how long the agent was down: its clock read 1970-01-01T00:16:40" in (
        caplog.text
    )


def test_a_restart_in_1970_waits_until_the_clock_is_set(caplog: pytest.LogCaptureFixture) -> None:
    """A power cut: the gateway boots with its clock at 1970 and NTP sets it 40 s later."""
    clocks = Clocks(OLD, synced=False)
    down = clocks.downtime(AliveMark(NOW, "synced"))
    assert down.check() is None
    assert down.pending
    assert "its clock now reads 1970-01-01T00:16:40" in caplog.text
    clocks.advance(20)
    assert down.check() is None
    assert down.pending
    clocks.advance(20)
    clocks.wall = NOW + 3600 * S  # NTP: the restart was 40 s ago, at NOW + 3560 s
    gap = down.check()
    assert gap is not None
    assert (gap.start, gap.end) == (NOW, NOW + 3560 * S)
    assert not down.pending


def test_a_clock_restored_behind_the_mark_declares_no_downtime(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """fake-hwclock restored a time saved before the agent last ran: new readings are dated
    among the earlier ones, so there is no hole to declare at the restart. (The clock step
    that sets it right is a clock gap: ClockSteps.)"""
    clocks = Clocks(NOW - 100 * S, synced=False)
    down = clocks.downtime(AliveMark(NOW, "unsynced"))
    assert down.check() is None
    assert not down.pending
    assert "reads before the agent last ran" in caplog.text


def _steps(clocks: Clocks) -> ClockSteps:
    return ClockSteps(wall_ns=lambda: clocks.wall, mono_ns=lambda: clocks.mono)


def test_a_clock_set_forward_is_a_clock_gap_between_the_old_and_the_new_time() -> None:
    clocks = Clocks(NOW)
    steps = _steps(clocks)
    clocks.advance(0.2)
    assert steps.check() is None
    clocks.advance(0.1)
    clocks.wall += 7200 * S  # NTP, 0.1 s after the last pass
    clocks.advance(0.1)
    gap = steps.check()
    assert gap is not None
    # Readings before the step: dated at most the old clock now; after it: at least the
    # new clock at the previous pass.
    old_now = NOW + int(0.4 * S)
    new_at_previous_pass = NOW + 7200 * S + int(0.2 * S)
    assert (gap.sensor, gap.reason) == (None, "clock")
    assert (gap.start, gap.end) == (old_now, new_at_previous_pass)
    assert gap.detail.startswith("the gateway clock was set forward by 7200.0 s")
    clocks.advance(0.2)
    assert steps.check() is None  # once


def test_drift_a_step_back_and_a_step_out_of_1970_are_no_clock_gaps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clocks = Clocks(NOW)
    steps = _steps(clocks)
    clocks.advance(0.2)
    clocks.wall += int(1.5 * S)  # within JUMP_TOLERANCE_S
    assert steps.check() is None
    clocks.wall -= 60 * S
    assert steps.check() is None
    assert "the gateway clock was set back by 60.0 s" in caplog.text
    clocks = Clocks(OLD)
    steps = _steps(clocks)
    clocks.wall = NOW
    assert steps.check() is None  # the readings before were quarantined, not dated


def test_a_long_gap_is_declared_in_pieces_of_a_day() -> None:
    day = 86_400 * S
    gap = Gap(start=NOW, end=NOW + 40 * day + S, reason="agent_down", detail="down")
    pieces = in_pieces(gap)
    assert len(pieces) == 41
    assert pieces[0].start == NOW and pieces[-1].end == gap.end
    assert all(a.end == b.start for a, b in pairwise(pieces))
    assert all(p.end - p.start <= day for p in pieces)
    assert pieces[1].detail == "down (part 2 of 41)"
    assert in_pieces(gap.model_copy(update={"end": NOW + day})) == [
        gap.model_copy(update={"end": NOW + day})
    ]
    assert len(in_pieces(gap.model_copy(update={"end": NOW + 5000 * day}))) == 1000


def _reading(ts: int) -> NewReading:
    return NewReading("s-1", "f", "soil", ts, ClockQuality.SYNCED, {"temp_c": 1.0})


def test_the_outbox_keeps_the_mark_of_its_last_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, "gw-1")
    assert box.last_alive is None
    box.note_alive(AliveMark(NOW, "synced"))
    box.add([_reading(NOW - S)])
    box.close()
    box = Outbox(path, "gw-1")
    assert box.last_alive == AliveMark(NOW, "synced")
    box.mark_alive(AliveMark(NOW + 5 * S, "unsynced", stopped=True))
    box.close()
    box = Outbox(path, "gw-1")
    assert box.last_alive == AliveMark(NOW + 5 * S, "unsynced", stopped=True)
    box.close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE meta SET value = 'garbage' WHERE key = 'alive'")
    box = Outbox(path, "gw-1")
    assert box.last_alive is None
    assert "outbox alive mark unreadable" in caplog.text
    box.close()


def test_an_agent_started_again_declares_its_downtime_once(tmp_path: Path) -> None:
    first = make_agent(tmp_path)
    assert first.outbox.last_alive is None
    first._commit_once()  # nothing to commit: the idle mark
    first.outbox.close()
    time.sleep(1.2)

    second = make_agent(tmp_path)
    last = second.outbox.last_alive
    assert last is not None and last.clock in ("synced", "unsynced") and not last.stopped
    second._commit_once()
    second._commit_once()
    _, gaps = second.outbox.next_batch("b-1", 100)
    downs = [g for g in gaps if g.reason == "agent_down"]
    assert len(downs) == 1
    assert downs[0].sensor is None
    assert downs[0].start == last.ns
    assert downs[0].end - downs[0].start >= int(1.2 * S)
    assert downs[0].detail.startswith("the agent was not running: it ended without stopping")
    second.outbox.close()


def test_an_idle_agent_marks_itself_alive_every_few_seconds(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    agent._commit_once()
    marks = []
    for _ in range(2):
        agent.outbox.close()
        agent = make_agent(tmp_path)
        assert agent.outbox.last_alive is not None
        marks.append(agent.outbox.last_alive.ns)
        agent._commit_once()  # the first pass of each process marks at once
    assert marks[1] > marks[0]
    before = agent._marked_at
    agent._commit_once()  # within ALIVE_EVERY_S of the last mark: none
    assert agent._marked_at == before
    agent._marked_at -= ALIVE_EVERY_S
    agent._commit_once()
    assert agent._marked_at > before
    agent.outbox.close()
    agent = make_agent(tmp_path)
    assert agent.outbox.last_alive is not None and agent.outbox.last_alive.ns > marks[1]
    agent.outbox.close()


def test_a_mark_never_goes_back(tmp_path: Path) -> None:
    """A clock set back, or readings dated after now (a sensor's last ts + 1): the mark is
    the latest of now, the previous mark and the newest reading, so a later downtime gap
    never covers a stored reading."""
    agent = make_agent(tmp_path)
    try:
        ahead = time.time_ns() + 3600 * S
        agent._take_readings([_reading(ahead)])
        agent._commit_once()
        agent._commit_once()
        assert agent._alive_mark().ns >= ahead
    finally:
        agent.outbox.close()
    again = make_agent(tmp_path)
    try:
        assert again.outbox.last_alive is not None
        assert again.outbox.last_alive.ns == ahead
        assert again._alive_mark().ns >= ahead
    finally:
        again.outbox.close()


def test_a_failing_idle_mark_is_tried_once_per_interval(tmp_path: Path) -> None:
    """Not on every commit pass (0.2 s): the committer logs each failure with a traceback."""
    agent = make_agent(tmp_path)
    agent.outbox.close()  # every write now fails
    with pytest.raises(Exception, match="closed"):
        agent._commit_once()
    agent._commit_once()  # within ALIVE_EVERY_S: not tried again
    agent._marked_at -= ALIVE_EVERY_S
    with pytest.raises(Exception, match="closed"):
        agent._commit_once()


def test_a_clock_gap_starts_no_earlier_than_the_newest_mark(tmp_path: Path) -> None:
    """A clock restored 30 min behind the last mark, then set forward an hour: the readings
    before the restart are dated up to the mark, so the clock gap starts there."""
    agent = make_agent(tmp_path)
    try:
        clocks = Clocks(NOW - 1800 * S)
        agent.clock_steps = _steps(clocks)
        agent._mark_floor = NOW
        clocks.advance(0.2)
        clocks.wall += 3600 * S
        gap = agent._clock_step()
        assert gap is not None
        assert (gap.start, gap.end) == (NOW, NOW + 1800 * S)
        clocks.advance(0.2)
        clocks.wall += 600 * S  # a step that ends before the mark: nothing to declare
        agent._mark_floor = NOW + 3 * 3600 * S
        assert agent._clock_step() is None
    finally:
        agent.outbox.close()


def test_a_mark_kept_from_before_keeps_its_clock(tmp_path: Path) -> None:
    """A gateway back at 1970 twice before NTP: the real mark of the run before must stay
    usable, so a mark that is the previous one keeps that one's clock label."""
    agent = make_agent(tmp_path)
    try:
        agent._mark_floor = time.time_ns() + 3600 * S
        agent._mark_clock = "synced"
        assert agent._alive_mark() == AliveMark(agent._mark_floor, "synced")
    finally:
        agent.outbox.close()


def test_pieces_are_stored_in_one_commit_and_keep_distinct_details(tmp_path: Path) -> None:
    day = 86_400 * S
    gap = Gap(start=NOW, end=NOW + 3 * day, reason="agent_down", detail="x" * 495)
    pieces = in_pieces(gap)
    assert len({p.detail for p in pieces}) == 3
    assert all(len(p.detail) <= 500 and p.detail.endswith(f"of {len(pieces)})") for p in pieces)
    box = Outbox(tmp_path / "outbox.sqlite", "gw-1")
    try:
        box.note_alive(AliveMark(NOW + 3 * day, "synced"))
        box.add_gaps(pieces)
        _, stored = box.next_batch("b-1", 100)
        assert [(g.start, g.end) for g in stored] == [(p.start, p.end) for p in pieces]
    finally:
        box.close()
    again = Outbox(tmp_path / "outbox.sqlite", "gw-1")
    assert again.last_alive == AliveMark(NOW + 3 * day, "synced")
    again.close()
