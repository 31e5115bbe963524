"""The seq sidecar (``<outbox>.seq``): two copies overwritten in turn, so a write torn by a
power cut leaves the other; the version 1 layout (one record) still reads."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

from agent.outbox import NewReading, Outbox
from contract.wire import ClockQuality

PAGE = 4096


def _readings(n: int) -> list[NewReading]:
    now = time.time_ns()
    return [
        NewReading("s-1", "f", "soil", now + i, ClockQuality.SYNCED, {"moisture_pct": float(i)})
        for i in range(n)
    ]


def _copies(seq_file: Path) -> list[bytes]:
    data = seq_file.read_bytes()
    return [data[:PAGE].split(b"\n")[0], data[PAGE:].split(b"\n")[0]]


def test_each_commit_updates_one_copy_and_the_highest_wins(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, "gw")
    assert box.add(_readings(3)) == [0, 1, 2]
    assert box.add(_readings(2)) == [3, 4]
    box.close()
    seq_file = Path(f"{path}.seq")
    assert seq_file.stat().st_size == 2 * PAGE
    copies = _copies(seq_file)
    assert sorted(c.split()[2] for c in copies) == [b"3", b"5"]  # the last two writes

    box = Outbox(path, "gw")
    assert box.add(_readings(1)) == [5]
    box.close()


def test_a_torn_copy_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, "gw")
    box.add(_readings(4))
    box.add(_readings(4))
    box.close()
    seq_file = Path(f"{path}.seq")
    data = bytearray(seq_file.read_bytes())
    newer = 0 if b" 8 " in bytes(data[:PAGE]) else PAGE
    data[newer + 20 : newer + 30] = b"\xff" * 10  # the write of seq 8 torn by a power cut
    seq_file.write_bytes(bytes(data))

    box = Outbox(path, "gw")  # the database says 8, the intact copy 4: no hole, no gap
    readings, gaps = box.next_batch("b", 100)
    assert [r.seq for r in readings] == list(range(8)) and gaps == []
    assert box.add(_readings(1)) == [8]
    box.close()


def test_a_version_1_sidecar_still_counts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, "gw")
    box.add(_readings(2))
    box.close()
    # What an agent before the two-copy layout left: one line, replaced by rename.
    digits = "40"
    Path(f"{path}.seq").write_text(
        f"farmtel-outbox-seq 1 {digits} {zlib.crc32(digits.encode()):08x}\n", encoding="ascii"
    )

    box = Outbox(path, "gw")
    readings, gaps = box.next_batch("b", 100)
    assert [r.seq for r in readings] == [0, 1]
    assert [(g.reason, g.seq, g.count) for g in gaps] == [("agent_down", 2, 38)]
    assert box.add(_readings(1)) == [40]
    box.close()
    assert Path(f"{path}.seq").stat().st_size == 2 * PAGE


def test_both_copies_damaged_falls_back_to_the_database(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, "gw")
    box.add(_readings(3))
    box.close()
    Path(f"{path}.seq").write_bytes(b"\xff" * (2 * PAGE))

    box = Outbox(path, "gw")
    assert box.add(_readings(1)) == [3]
    box.close()
