"""``[outbox] send_delay``: a part batch waits (on disk) for more readings, at most that long;
a full batch and a backlog never wait."""

import time
from pathlib import Path
from typing import Any

from agent.service import Agent
from tests.support.agents import make_agent


def _agent(tmp_path: Path, **outbox: Any) -> Agent:
    return make_agent(tmp_path, outbox={"batch_size": 100, **outbox})


def test_a_part_batch_waits_once_the_outbox_is_drained(tmp_path: Path) -> None:
    delay = 10.0  # far more than a loaded box may stall between two statements
    agent = _agent(tmp_path, send_delay=delay)
    try:
        # Before any batch: whatever the outbox holds (a backlog, maybe) goes at once.
        assert agent._note_committed(5) is True
        agent._note_taken(5, 0, 100)  # a short batch: the outbox is drained
        before = time.monotonic()
        assert agent._note_committed(20) is False  # the committer does not wake the sender
        hold = agent._hold_s()
        after = time.monotonic()
        # send_delay counted from the commit (made between before and after), whatever the
        # time those two statements took.
        assert (before + delay) - after <= hold <= delay
        agent._unsent_since -= delay  # the oldest waited send_delay
        assert agent._hold_s() <= 0
    finally:
        agent.outbox.close()


def test_a_full_batch_goes_at_once(tmp_path: Path) -> None:
    agent = _agent(tmp_path, send_delay=5.0)
    try:
        agent._note_taken(0, 0, 100)
        assert agent._note_committed(60) is False
        assert agent._note_committed(40) is True  # batch_size reached
        assert agent._hold_s() <= 0
        agent._note_taken(100, 0, 100)  # full: there may be more behind it
        assert agent._note_committed(1) is True
    finally:
        agent.outbox.close()


def test_zero_publishes_after_every_commit(tmp_path: Path) -> None:
    agent = _agent(tmp_path, send_delay=0)
    try:
        agent._note_taken(0, 0, 100)
        assert agent._note_committed(1) is True
        assert agent._hold_s() <= 0
    finally:
        agent.outbox.close()
