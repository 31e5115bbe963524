"""The outbox: nothing committed is lost, nothing is sent twice as new, losses become gaps."""

import logging
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agent import outbox as outbox_mod
from agent.outbox import DROPPED, REJECTED, NewReading, Outbox, OutboxError, _reading_crc
from contract.wire import Batch, ClockQuality, Gap, Reading, wire_form

GW = "gw-1"
T0 = 1_764_400_000_000_000_000
ROOT = Path(__file__).resolve().parents[2]


def new(
    i: int, sensor: str = "soil-1", clock: ClockQuality = ClockQuality.SYNCED, **values: float
) -> NewReading:
    return NewReading(
        sensor=sensor,
        field="north",
        kind="soil",
        ts=T0 + i * 1_000_000_000,
        clock=clock,
        values=values or {"temp_c": 20.0 + i / 4},
    )


def stored(r: NewReading, seq: int) -> Reading:
    return Reading(
        sensor=r.sensor,
        field=r.field,
        kind=r.kind,
        ts=r.ts,
        clock=r.clock,
        seq=seq,
        values=r.values,
        cal=r.cal,
    )


def drain(ob: Outbox, size: int = 5000) -> tuple[list[Reading], list[Gap]]:
    """Take and ack everything pending; return what came out."""
    readings: list[Reading] = []
    gaps: list[Gap] = []
    while True:
        batch_id = uuid.uuid4().hex
        rs, gs = ob.next_batch(batch_id, size, 1000)
        if not rs and not gs:
            return readings, gaps
        readings += rs
        gaps += gs
        ob.ack(batch_id)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite"


@pytest.fixture
def ob(path: Path) -> Iterator[Outbox]:
    box = Outbox(path, GW)
    yield box
    box.close()


# --- round trip ------------------------------------------------------------------------------


def test_add_next_batch_ack_round_trip_keeps_exact_contents(ob: Outbox) -> None:
    group = [
        NewReading(
            "soil-1",
            "north",
            "soil",
            T0,
            ClockQuality.SYNCED,
            {"moisture_pct": 31.2, "temp_c": -1.5},
        ),
        NewReading(
            "wx-2", "south", "weather", T0 + 1, ClockQuality.STEPPED, {"wind_ms": 0.1}, cal="v3"
        ),
        NewReading("soil-1", "north", "soil", T0 + 2, ClockQuality.UNSYNCED, {"ec_us_cm": 1e-7}),
    ]
    gap = Gap(sensor="wx-2", start=T0 - 10, end=T0 - 5, reason="sensor_silent", detail="no answer")

    assert ob.add(group) == [0, 1, 2]
    ob.add_gap(gap)
    assert ob.depth().readings == 3
    assert ob.depth().gaps == 1

    readings, gaps = ob.next_batch("b1", 500)

    assert readings == [stored(r, i) for i, r in enumerate(group)]
    assert gaps == [gap]
    # What comes out builds a valid envelope as is.
    assert Batch(gateway=GW, boot="x", batch="b1", sent=1, readings=readings, gaps=gaps)
    assert ob.inflight_batches() == 1
    assert ob.batch_contents("b1") == (readings, gaps)
    assert ob.next_batch("b2", 500) == ([], [])
    assert ob.ack("b1") == 4
    assert ob.ack("b1") == 0
    assert ob.ack("never-sent") == 0
    assert ob.batch_contents("b1") == ([], [])
    depth = ob.depth()
    assert (depth.readings, depth.gaps, depth.oldest_ts, depth.inflight_batches) == (0, 0, None, 0)


def test_next_batch_takes_oldest_first_and_ack_deletes_only_its_batch(ob: Outbox) -> None:
    group = [new(i) for i in range(10)]
    assert ob.add(group) == list(range(10))

    first, _ = ob.next_batch("b1", 4)
    second, _ = ob.next_batch("b2", 4)
    assert [r.seq for r in first] == [0, 1, 2, 3]
    assert [r.seq for r in second] == [4, 5, 6, 7]
    assert ob.depth().oldest_ts == group[0].ts

    assert ob.ack("b2") == 4
    assert ob.batch_contents("b1") == (first, [])
    assert ob.depth().readings == 6
    assert ob.depth().oldest_ts == group[0].ts
    third, _ = ob.next_batch("b3", 4)
    assert [r.seq for r in third] == [8, 9]
    assert ob.ack("b1") == 4
    assert ob.depth().oldest_ts == group[8].ts
    assert ob.ack("b3") == 2
    assert ob.depth().readings == 0


def test_invalid_reading_is_rejected_and_the_rest_of_the_group_is_stored(
    ob: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    group = [new(0), new(1, temp_c=float("nan")), new(2, sensor="Soil 1"), new(3)]

    assert ob.add(group) == [0, REJECTED, REJECTED, 1]

    assert ob.rejected_total == 2
    assert "reason=values.temp_c" in caplog.text
    readings, _ = drain(ob)
    assert readings == [stored(group[0], 0), stored(group[3], 1)]


def test_batch_arguments_are_checked(ob: Outbox) -> None:
    ob.add([new(0), new(1)])
    ob.next_batch("b1", 1)
    with pytest.raises(ValueError, match="already in flight"):
        ob.next_batch("b1", 1)
    with pytest.raises(ValueError, match="batch id"):
        ob.next_batch("no/slash", 1)
    with pytest.raises(ValueError, match="max_readings"):
        ob.next_batch("b2", 5001)


def test_closed_outbox_refuses_work_and_close_is_idempotent(path: Path) -> None:
    ob = Outbox(path, GW)
    ob.add([new(0)])
    ob.close()
    ob.close()
    with pytest.raises(OutboxError, match="closed"):
        ob.add([new(1)])
    assert not Path(f"{path}-wal").exists()  # checkpointed into the database


def test_second_outbox_on_the_same_file_is_refused(
    ob: Outbox, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_mod, "BUSY_TIMEOUT_S", 0.05)
    ob.add([new(0)])

    with pytest.raises(OutboxError, match="in use by another process"):
        Outbox(path, GW)

    assert ob.add([new(1)]) == [1]
    assert not list(path.parent.glob("*.corrupt-*"))


# --- seq across restarts and corruption --------------------------------------------------------


def test_seq_continues_across_reopen_even_when_everything_was_acked(path: Path) -> None:
    ob = Outbox(path, GW)
    assert ob.add([new(i) for i in range(5)]) == [0, 1, 2, 3, 4]
    drain(ob)
    ob.close()

    ob = Outbox(path, GW)
    assert ob.add([new(5)]) == [5]
    ob.close()

    Path(f"{path}.seq").unlink()  # the database alone still knows
    ob = Outbox(path, GW)
    assert ob.add([new(6)]) == [6]
    ob.close()


def test_garbage_database_is_moved_aside_and_seq_continues(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ob = Outbox(path, GW)
    assert ob.add([new(i) for i in range(7)]) == list(range(7))
    ob.close()
    garbage = random.Random(7).randbytes(3 * 4096)
    path.write_bytes(garbage)

    ob = Outbox(path, GW)

    assert ob.recovered_from is not None
    assert ob.recovered_from.name.startswith("outbox.sqlite.corrupt-")
    assert ob.recovered_from.read_bytes() == garbage
    assert ob.recovery_reason is not None and "not a database" in ob.recovery_reason
    assert "moved aside" in caplog.text
    assert ob.integrity_ok()
    assert ob.depth().readings == 0
    assert ob.add([new(7), new(8)]) == [7, 8]
    ob.close()

    ob = Outbox(path, GW)  # the fresh file is fine on the next start
    assert ob.recovered_from is None
    assert ob.add([new(9)]) == [9]
    ob.close()


def test_corrupt_pages_are_moved_aside(path: Path) -> None:
    ob = Outbox(path, GW)
    ob.add([new(i) for i in range(2000)])
    ob.close()
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 3 + 200] = b"\xff" * 200  # a b-tree page header and cells
    path.write_bytes(bytes(data))

    ob = Outbox(path, GW)

    assert ob.recovered_from is not None
    assert ob.integrity_ok()
    assert ob.add([new(0)]) == [2000]
    ob.close()


def test_foreign_database_or_other_gateway_is_moved_aside(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE something (x)")
    conn.commit()
    conn.close()

    ob = Outbox(path, GW)
    assert ob.recovered_from is not None
    assert ob.recovery_reason == "application_id is 0x0, not a farmtel outbox"
    ob.add([new(0)])
    ob.close()

    ob = Outbox(path, "gw-2")
    assert ob.recovered_from is not None
    assert ob.recovery_reason == "outbox belongs to gateway 'gw-1', not 'gw-2'"
    assert ob.add([new(1)]) == [1]  # same sidecar: seq never repeats on this device
    ob.close()
    assert len(list(path.parent.glob("outbox.sqlite.corrupt-*"))) == 2


def test_unreceipted_batches_are_released_on_reopen(path: Path) -> None:
    ob = Outbox(path, GW)
    group = [new(i) for i in range(6)]
    ob.add(group)
    ob.next_batch("b1", 3)
    ob.next_batch("b2", 3)
    ob.ack("b1")
    ob.close()

    ob = Outbox(path, GW)
    assert ob.inflight_batches() == 0
    assert ob.ack("b2") == 0  # a receipt for the previous process's batch changes nothing
    readings, _ = ob.next_batch("b3", 500)
    assert readings == [stored(r, i) for i, r in enumerate(group)][3:]
    ob.close()


# --- republishing ------------------------------------------------------------------------------


def test_overdue_batches_follow_mark_sent(ob: Outbox) -> None:
    ob.add([new(i) for i in range(4)])
    t = time.monotonic()
    ob.next_batch("b1", 2)
    ob.next_batch("b2", 2)

    assert ob.overdue_batches(10, now=t) == []
    # Never sent: counted from assignment.
    assert ob.overdue_batches(10, now=t + 11) == ["b1", "b2"]
    ob.mark_sent("b1", now=t + 20)
    assert ob.attempts("b1") == 1
    assert ob.attempts("b2") == 0
    assert ob.overdue_batches(10, now=t + 25) == ["b2"]
    assert ob.overdue_batches(10, now=t + 31) == ["b1", "b2"]
    ob.mark_sent("b1", now=t + 40)
    ob.mark_sent("b2", now=t + 40)
    assert ob.attempts("b1") == 2
    assert ob.overdue_batches(10, now=t + 45) == []

    ob.ack("b1")
    ob.mark_sent("b1", now=t + 50)  # a receipt that beat mark_sent: ignored
    assert ob.attempts("b1") == 0
    assert ob.overdue_batches(10, now=t + 100) == ["b2"]


# --- disk cap ----------------------------------------------------------------------------------


def test_cap_drops_readings_into_one_gap_per_sensor_until_acks_free_space(path: Path) -> None:
    cap = 64 * 1024
    ob = Outbox(path, GW, max_bytes=cap)
    i = 0
    results: list[tuple[NewReading, int]] = []
    groups_after_first_drop = 0
    while groups_after_first_drop < 3:
        group = [new(i + k, sensor="soil-a" if k % 2 else "soil-b") for k in range(20)]
        i += 20
        seqs = ob.add(group)
        results += zip(group, seqs, strict=True)
        if DROPPED in seqs:
            groups_after_first_drop += 1
        assert i < 10_000, "the cap never took effect"

    kept = [(r, s) for r, s in results if s != DROPPED]
    dropped = [r for r, s in results if s == DROPPED]
    # Once full, nothing is admitted until space returns, and seq has no holes.
    assert results == kept + [(r, DROPPED) for r in dropped]
    assert [s for _, s in kept] == list(range(len(kept)))
    assert ob.dropped_total == len(dropped)
    assert ob.depth().bytes <= cap + 2 * 4096
    assert ob.depth().gaps == 2

    # Still full after a restart: the same open gaps keep growing.
    ob.close()
    ob = Outbox(path, GW, max_bytes=cap)
    late = [new(i, sensor="soil-a"), new(i + 1, sensor="soil-b")]
    assert ob.add(late) == [DROPPED, DROPPED]
    dropped += late
    assert ob.depth().gaps == 2

    # Open gaps are not sent while they still grow.
    readings, gaps = ob.next_batch("b1", 5000)
    assert readings == [stored(r, s) for r, s in kept]
    assert gaps == []
    assert ob.ack("b1") == len(kept)

    _, gaps = ob.next_batch("b2", 100)
    by_sensor = {g.sensor: g for g in gaps}
    assert set(by_sensor) == {"soil-a", "soil-b"}
    for sensor, gap in by_sensor.items():
        ts = [r.ts for r in dropped if r.sensor == sensor]
        assert (gap.start, gap.end, gap.reason) == (min(ts), max(ts), "outbox_full")
        assert f"{len(ts)} readings dropped" in gap.detail
        assert gap.seq is None
    assert ob.add([new(i + 2)]) == [len(kept)]
    assert ob.ack("b2") == 2
    assert ob.depth().gaps == 0
    ob.close()


def test_disk_full_drops_into_a_gap_and_recovers(ob: Outbox) -> None:
    ob.add([new(0)])
    pages = ob._conn.execute("PRAGMA page_count").fetchone()[0]
    # Fault injection: SQLite answers SQLITE_FULL past max_page_count, as on a full disk.
    ob._conn.execute(f"PRAGMA max_page_count = {pages}")
    bursts = [[new(1 + b * 300 + k, temp_c=float(k)) for k in range(300)] for b in range(2)]

    assert ob.add(bursts[0]) == [DROPPED] * 300
    assert ob.add(bursts[1]) == [DROPPED] * 300
    assert ob.dropped_total == 600

    ob._conn.execute("PRAGMA max_page_count = 1000000")
    assert ob.add([new(1000)]) == [1]
    readings, gaps = drain(ob)
    assert [r.seq for r in readings] == [0, 1]
    assert len(gaps) == 1
    span = (gaps[0].sensor, gaps[0].start, gaps[0].end)
    assert span == ("soil-1", bursts[0][0].ts, bursts[1][-1].ts)
    assert gaps[0].reason == "outbox_full"
    assert "disk full" in gaps[0].detail and "600 readings dropped" in gaps[0].detail


def test_acked_space_is_reused_and_given_back_to_the_file_system(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_mod, "VACUUM_MIN_FREE", 64 * 1024)
    monkeypatch.setattr(outbox_mod, "VACUUM_EVERY_S", 0.0)
    ob = Outbox(path, GW)
    ob.add([new(i) for i in range(5000)])
    full = ob.depth().bytes
    ob.close()
    size_full = path.stat().st_size

    ob = Outbox(path, GW)
    drain(ob)
    assert ob.depth().bytes < full / 10
    ob.close()

    assert path.stat().st_size < size_full / 2


# --- corrupt rows ------------------------------------------------------------------------------


def test_row_failing_its_checksum_becomes_a_gap_not_data(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ob = Outbox(path, GW)
    group = [new(i, temp_c=21.25 + i) for i in range(5)]
    ob.add(group)
    ob.close()
    # A bit flip on the card inside one record: SQLite's structure stays valid.
    data = path.read_bytes()
    assert data.count(b"23.25") == 1
    path.write_bytes(data.replace(b"23.25", b"93.25"))

    ob = Outbox(path, GW)
    assert ob.recovered_from is None
    readings, gaps = ob.next_batch("b1", 500)

    assert [r.seq for r in readings] == [0, 1, 3, 4]
    assert all(r.values["temp_c"] != 93.25 for r in readings)
    assert len(gaps) == 1
    gap = gaps[0]
    assert (gap.sensor, gap.reason, gap.seq, gap.count) == (None, "storage_corrupt", 2, 1)
    assert (gap.start, gap.end) == (group[1].ts, group[3].ts)
    assert ob.corrupt_rows_total == 1
    assert "record corrupt" in caplog.text
    assert ob.batch_contents("b1") == (readings, gaps)
    assert ob.ack("b1") == 5
    assert ob.depth().readings == 0
    ob.close()


def test_gap_row_failing_its_checksum_is_replaced(path: Path) -> None:
    ob = Outbox(path, GW)
    ob.add_gap(Gap(sensor="soil-1", start=T0, end=T0 + 5, reason="sensor_silent"))
    ob.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE gaps SET crc = crc + 1")
    conn.commit()
    conn.close()

    ob = Outbox(path, GW)
    _, gaps = ob.next_batch("b1", 10)

    assert len(gaps) == 1
    assert (gaps[0].sensor, gaps[0].reason) == (None, "storage_corrupt")
    assert ob.ack("b1") == 1
    assert drain(ob) == ([], [])
    ob.close()


def test_records_are_checked_against_the_contract_on_the_way_out(path: Path) -> None:
    """Records this agent writes take the plain check (contract.wire.plain_reading); any
    other record with a valid checksum is judged by pydantic: coerced when the contract
    accepts it (an int value, as an older writer might store), a gap when it does not."""
    ob = Outbox(path, GW)
    ob.add([new(i) for i in range(3)])
    ob.close()
    odd = {
        1: orjson.dumps(["soil-1", "north", "soil", T0 + 1, "synced", {"temp_c": 21}, None]),
        2: orjson.dumps(["soil-1", "north", "soil", T0 + 2, "synced", {"seq": 1.0}, None]),
    }
    conn = sqlite3.connect(path)
    for seq, rec in odd.items():
        conn.execute(
            "UPDATE readings SET rec = ?, crc = ? WHERE seq = ?", (rec, _reading_crc(seq, rec), seq)
        )
    conn.commit()
    conn.close()

    ob = Outbox(path, GW)
    wire, gaps = ob.next_wire_batch("b1", 10)
    assert [r["seq"] for r in wire] == [0, 1]
    assert wire[1]["values"] == {"temp_c": 21.0}
    assert type(wire[1]["values"]["temp_c"]) is float
    assert [(g.reason, g.seq, g.count) for g in gaps] == [("storage_corrupt", 2, 1)]
    readings, again = ob.batch_contents("b1")
    assert [wire_form(r) for r in readings] == wire
    assert again == gaps
    ob.close()


# --- threads and crashes -----------------------------------------------------------------------


def test_three_threads_deliver_every_reading_exactly_once(ob: Outbox) -> None:
    n_groups, group_size = 40, 25
    added = threading.Event()
    sent: queue.Queue[tuple[str, list[Reading]] | None] = queue.Queue()
    delivered: list[int] = []
    failures: list[BaseException] = []

    def collector() -> None:
        try:
            for g in range(n_groups):
                ob.add([new(g * group_size + k) for k in range(group_size)])
        except BaseException as err:
            failures.append(err)
        finally:
            added.set()

    def publisher() -> None:
        try:
            while True:
                done = added.is_set()
                batch_id = uuid.uuid4().hex
                readings, _ = ob.next_batch(batch_id, 60)
                if readings:
                    ob.mark_sent(batch_id)
                    sent.put((batch_id, readings))
                elif done:
                    return
                else:
                    time.sleep(0.001)
        except BaseException as err:
            failures.append(err)
        finally:
            sent.put(None)

    def receipts() -> None:
        try:
            while (item := sent.get()) is not None:
                batch_id, readings = item
                delivered.extend(r.seq for r in readings)
                assert ob.ack(batch_id) == len(readings)
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=f) for f in (collector, publisher, receipts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert sorted(delivered) == list(range(n_groups * group_size))
    assert ob.depth().readings == 0
    assert ob.inflight_batches() == 0


CHILD = """
import sys, time
from pathlib import Path
from agent.outbox import NewReading, Outbox
from contract.wire import ClockQuality

ob = Outbox(Path(sys.argv[1]), "gw-1")
print("ready", flush=True)
n = 0
while True:
    now = time.time_ns()
    group = [
        NewReading("soil-1", "north", "soil", now + k, ClockQuality.SYNCED, {"temp_c": k / 8})
        for k in range(25)
    ]
    seqs = ob.add(group)
    print(seqs[0], seqs[-1], flush=True)
    n += 1
    if n % 7 == 0:
        ob.next_batch(f"b{n}", 100)  # in flight when killed: must be released, not lost
"""


def test_sigkill_loses_no_committed_seq_and_never_repeats_one(path: Path) -> None:
    rng = random.Random(20240601)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reported: list[int] = []
    runs_with_commits = 0
    for kill in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert child.stdout is not None
        if kill % 4 == 3:
            # Sometimes while it opens (and recovers the WAL of the previous kill).
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            assert child.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL
        assert b"Traceback" not in err, err.decode()
        run: list[int] = []
        for line in out.split(b"\n")[:-1]:  # a last line without its newline is not reported
            if line != b"ready":
                first, last = map(int, line.split())
                assert last - first == 24
                run += range(first, last + 1)
        if run:
            runs_with_commits += 1
            # seq never goes backwards nor repeats across restarts.
            assert not reported or run[0] > reported[-1]
        reported += run

    ob = Outbox(path, GW)
    assert ob.recovered_from is None
    assert ob.integrity_ok()
    readings, _ = drain(ob)
    ob.close()
    present = [r.seq for r in readings]
    assert len(present) == len(set(present))
    assert set(reported) <= set(present)
    assert runs_with_commits >= 10
    assert len(reported) == len(set(reported)) > 0


def test_log_lines_are_key_value(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.outbox")
    Outbox(path, GW).close()
    assert f"outbox open path={path} readings=0 gaps=0 next_seq=0" in caplog.text
