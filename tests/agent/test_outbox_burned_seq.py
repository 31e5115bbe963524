"""A crash between the seq sidecar write and the commit burns seq: the next open declares
them as an agent_down gap carrying seq + count, so the ingest sees no unexplained hole."""

from __future__ import annotations

import time
from pathlib import Path

from agent.outbox import NewReading, Outbox
from contract.wire import ClockQuality


def _readings(n: int) -> list[NewReading]:
    now = time.time_ns()
    return [
        NewReading(
            sensor="s-1",
            field="f",
            kind="soil",
            ts=now + i,
            clock=ClockQuality.SYNCED,
            values={"moisture_pct": float(i)},
        )
        for i in range(n)
    ]


def test_burned_seq_are_declared_once(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, "gw")
    assert box.add(_readings(3)) == [0, 1, 2]
    # What a SIGKILL after the sidecar write of the next group (7 readings) leaves behind.
    box._write_sidecar(10)
    box.close()

    box = Outbox(path, "gw")
    readings, gaps = box.next_batch("b1", 100)
    assert [r.seq for r in readings] == [0, 1, 2]
    assert len(gaps) == 1
    gap = gaps[0]
    assert (gap.reason, gap.seq, gap.count, gap.sensor) == ("agent_down", 3, 7, None)
    assert gap.start <= gap.end
    assert box.add(_readings(1)) == [10]
    box.ack("b1")
    box.close()

    box = Outbox(path, "gw")  # declared once: no second gap on the next open
    readings, gaps = box.next_batch("b2", 100)
    assert [r.seq for r in readings] == [10] and gaps == []
    box.close()


def test_a_clean_history_declares_nothing(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, "gw")
    box.add(_readings(2))
    box.close()
    box = Outbox(path, "gw")
    assert box.next_batch("b", 100)[1] == []
    box.close()
