"""The agent's committer never drops readings when the outbox refuses a group."""

from pathlib import Path
from typing import Any

import pytest

from agent.outbox import NewReading
from agent.service import Agent
from contract.wire import ClockQuality, Gap
from tests.support.agents import make_agent


def _agent(tmp_path: Path) -> Agent:
    return make_agent(tmp_path)


def test_a_failed_commit_keeps_the_group_for_the_next_try(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    try:
        readings = [
            NewReading(
                "s-1",
                "f",
                "env",
                1_800_000_000_000_000_000 + i,
                ClockQuality.SYNCED,
                {"temp_c": float(i)},
            )
            for i in range(5)
        ]
        gap = Gap(sensor="s-1", start=1, end=2, reason="sensor_silent")
        agent._take_readings(readings[:3])
        agent._take_gap(gap)
        real_add = agent.outbox.add
        calls = 0

        def failing_add(group: Any) -> list[int]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("disk I/O error (injected)")
            return real_add(group)

        agent.outbox.add = failing_add  # type: ignore[method-assign]
        with pytest.raises(OSError, match="injected"):
            agent._commit_once()
        agent._take_readings(readings[3:])  # arrives while the disk is failing
        assert agent._commit_once() == 5
        depth = agent.outbox.depth()
        assert depth.readings == 5
        stored, _ = agent.outbox.next_batch("b1", 100)
        assert [r.values["temp_c"] for r in stored] == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert agent.counters["gaps"] == 1  # the gap went in before the failure, once
    finally:
        agent.outbox.close()
