"""Outbox version 3: the readings of one commit share rows (``row_readings`` of them, at most
``ROW_BYTES`` of records), a batch takes whole rows, and a row that fails its CRC becomes one
storage_corrupt gap for its seq range without swallowing the rows after it."""

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent import outbox as outbox_mod
from agent.outbox import ROW_BYTES, Outbox, _row_crc
from tests.agent.test_outbox_records import GW, new, user_version


def stored(ob: Outbox) -> list[tuple[int, int, int]]:
    """(seq, n, bytes) of every row."""
    return ob._conn.execute("SELECT seq, n, length(rec) FROM readings ORDER BY seq").fetchall()


def seqs(raw: bytes) -> list[int]:
    return [r["seq"] for r in orjson.loads(raw)]


def test_a_commit_is_stored_in_rows_of_row_readings(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.sqlite", GW, row_readings=20)
    assert ob.add([new(i) for i in range(50)]) == list(range(50))
    assert [(s, n) for s, n, _ in stored(ob)] == [(0, 20), (20, 20), (40, 10)]
    for seq, rec, crc, n in ob._conn.execute("SELECT seq, rec, crc, n FROM readings"):
        assert crc == _row_crc(seq, n, rec)
        records = orjson.loads(b"[" + rec + b"]")
        assert [r["seq"] for r in records] == list(range(seq, seq + n))
    # The next commit starts a row of its own.
    assert ob.add([new(50)]) == [50]
    assert stored(ob)[-1][:2] == (50, 1)
    assert ob.depth().readings == 51
    ob.close()
    assert user_version(tmp_path / "outbox.sqlite") == 3


def test_a_row_stays_within_row_bytes_unless_one_reading_is_larger(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.sqlite", GW, row_readings=50)
    wide = {f"v{k}": 1.5 + k for k in range(12)}  # ~300 bytes a record
    huge = {f"value_{k:02d}_" + "x" * 50: 1.5 + k for k in range(64)}  # ~4.5 KB
    ob.add([new(i, values=wide) for i in range(60)] + [new(60, values=huge), new(61)])
    rows = stored(ob)
    assert sum(n for _, n, _ in rows) == 62
    assert all(size <= ROW_BYTES for _, n, size in rows if n > 1)
    assert max(n for _, n, _ in rows) < 50  # the byte cap cut them
    assert (60, 1) in [(s, n) for s, n, _ in rows]  # alone, larger than ROW_BYTES
    count, raw, _ = ob.next_raw_batch("b1", 500)
    assert count == 62 and seqs(raw) == list(range(62))
    ob.close()


def test_a_batch_takes_whole_rows_and_acks_count_readings(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.sqlite", GW, row_readings=20)
    ob.add([new(i) for i in range(50)])
    count, raw, gaps = ob.next_raw_batch("b1", 45)
    assert (count, gaps) == (40, []) and seqs(raw) == list(range(40))
    # The first row alone holds more than asked: it goes whole.
    count, raw, _ = ob.next_raw_batch("b2", 5)
    assert count == 10 and seqs(raw) == list(range(40, 50))
    assert ob.next_raw_batch("b3", 500) == (0, b"[]", [])
    # A resend is read row by row and checked.
    readings, _ = ob.wire_batch_contents("b1")
    assert [r["seq"] for r in readings] == list(range(40))
    assert ob.ack("b2") == 10
    assert ob.depth().readings == 40
    assert ob.ack("b1") == 40
    assert ob.depth().readings == 0 and stored(ob) == []
    ob.close()


def test_the_raw_batch_holds_what_a_resend_holds(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.sqlite", GW, row_readings=20)
    ob.add([new(i) for i in range(30)])
    _, raw, _ = ob.next_raw_batch("b1", 500)
    readings, _ = ob.wire_batch_contents("b1")
    assert raw == orjson.dumps(readings)
    ob.close()


def test_seq_and_counts_survive_a_restart_without_the_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    _fifty(path)
    Path(f"{path}.seq").unlink()
    ob = Outbox(path, GW, row_readings=20)
    assert ob.depth().readings == 50
    assert ob.add([new(50)]) == [50]  # from the last row's seq + n, not its key
    ob.close()


def _fifty(path: Path) -> None:
    """An outbox at ``path`` holding seq 0..49 in rows of 20, 20 and 10, closed."""
    ob = Outbox(path, GW, row_readings=20)
    ob.add([new(i) for i in range(50)])
    ob.close()


def _set(path: Path, sql: str, *args: Any) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def test_a_corrupt_row_is_one_gap_for_its_seq_range(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    _fifty(path)
    _set(
        path,
        "UPDATE readings SET rec = CAST(replace(CAST(rec AS TEXT), 'north', 'nortH') AS BLOB)"
        " WHERE seq = 20",
    )
    ob = Outbox(path, GW, row_readings=20)
    count, raw, gaps = ob.next_raw_batch("b1", 500)
    assert seqs(raw) == [*range(20), *range(40, 50)] and count == 30
    assert [(g.reason, g.seq, g.count) for g in gaps] == [("storage_corrupt", 20, 20)]
    assert [s for s, _, _ in stored(ob)] == [0, 40]  # the corrupt row went with its gap
    assert ob.depth().readings == 30
    assert ob.corrupt_rows_total == 20
    assert ob.ack("b1") == 30 + 1
    ob.close()
    ob = Outbox(path, GW, row_readings=20)
    assert ob.next_raw_batch("b1", 500) == (0, b"[]", [])  # nothing sent twice
    ob.close()


@pytest.mark.parametrize(("key", "want"), [(20, 20), (40, 10)])
def test_a_corrupt_count_never_reaches_past_the_next_row(
    tmp_path: Path, key: int, want: int
) -> None:
    """n is under the CRC; a row whose n went wrong is a gap up to the next row (or up to
    the next seq to assign), and the rows after it are still sent."""
    path = tmp_path / "outbox.sqlite"
    _fifty(path)
    _set(path, "UPDATE readings SET n = 1000 WHERE seq = ?", key)
    ob = Outbox(path, GW, row_readings=20)
    assert ob.add([new(50)]) == [50]  # the sidecar keeps seq going
    sent: list[int] = []
    gaps = []
    for b in range(4):
        _, raw, g = ob.next_raw_batch(f"b{b}", 500)
        sent += seqs(raw)
        gaps += g
    assert [(g.reason, g.seq, g.count) for g in gaps] == [("storage_corrupt", key, want)]
    assert sent == [s for s in range(51) if not key <= s < key + want]
    ob.close()


def _refuse_in_first_row(path: Path, index: int) -> None:
    """Give reading ``index`` of the row of 20 at seq 0 a clock the contract refuses, with
    the row's CRC made right again (what a contract that refuses more would meet)."""
    conn = sqlite3.connect(path)
    rec = conn.execute("SELECT rec FROM readings WHERE seq = 0").fetchone()[0]
    records = orjson.loads(b"[" + rec + b"]")
    records[index]["clock"] = "sundial"
    rec = b",".join(orjson.dumps(r) for r in records)
    conn.execute("UPDATE readings SET rec = ?, crc = ? WHERE seq = 0", (rec, _row_crc(0, 20, rec)))
    conn.commit()
    conn.close()


def test_a_record_the_contract_refuses_inside_an_intact_row(tmp_path: Path) -> None:
    """Only that reading becomes a gap. Its row is replaced by rows of the other readings
    in the same commit as the gap: they stay stored until the receipt, and neither a resend
    nor the next process declares the reading again."""
    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path, GW, row_readings=20)
    ob.add([new(i) for i in range(20)])
    ob.close()
    _refuse_in_first_row(path, 5)
    ob = Outbox(path, GW, row_readings=20)
    # (A new raw batch trusts a row that passes its CRC, as version 2 did; a batch read
    # back and checked, as for a resend, decides each record.)
    readings, gaps = ob.next_wire_batch("b1", 500)
    want = [s for s in range(20) if s != 5]
    assert [r["seq"] for r in readings] == want
    assert [(g.reason, g.seq, g.count) for g in gaps] == [("storage_corrupt", 5, 1)]
    assert [(s, n) for s, n, _ in stored(ob)] == [(0, 5), (6, 14)]
    assert ob.depth().readings == 19
    again, gaps_again = ob.wire_batch_contents("b1")
    assert again == readings and gaps_again == gaps
    ob.close()  # stopped before the receipt: the readings are sent again, the gap once
    ob = Outbox(path, GW, row_readings=20)
    count, raw, gaps = ob.next_raw_batch("b1", 500)
    assert seqs(raw) == want and count == 19
    assert [(g.reason, g.seq, g.count) for g in gaps] == [("storage_corrupt", 5, 1)]
    assert ob.ack("b1") == 19 + 1 and stored(ob) == []
    assert ob.depth().readings == 0
    ob.close()


def _make_version_2(path: Path, n: int) -> list[bytes]:
    """An outbox as version 2 left it: one reading per row, no column n."""
    ob = Outbox(path, GW)
    ob.add([new(i) for i in range(n)])
    recs = [r[0] for r in ob._conn.execute("SELECT rec FROM readings ORDER BY seq")]
    ob.close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE readings DROP COLUMN n")
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    return recs


def test_a_version_2_file_is_read_and_marked_3_by_its_first_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    old = _make_version_2(path, 10)
    ob = Outbox(path, GW, row_readings=20)
    assert ob.recovered_from is None
    assert ob.depth().readings == 10
    count, raw, _ = ob.next_raw_batch("b1", 4)
    assert count == 4 and raw == b"[" + b",".join(old[:4]) + b"]"
    assert ob.ack("b1") == 4
    assert ob._conn.execute("PRAGMA user_version").fetchone()[0] == 2  # nothing new stored yet
    assert ob.add([new(i) for i in range(10, 40)]) == list(range(10, 40))
    assert ob._conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert [(s, n) for s, n, _ in stored(ob)] == [(s, 1) for s in range(4, 10)] + [
        (10, 20),
        (30, 10),
    ]
    count, raw, _ = ob.next_raw_batch("b2", 500)
    assert count == 36 and seqs(raw) == list(range(4, 40))
    assert raw.startswith(b"[" + b",".join(old[4:]) + b",")
    assert ob.ack("b2") == 36
    ob.close()
    assert user_version(path) == 3
    ob = Outbox(path, GW, row_readings=20)
    assert ob.recovered_from is None and ob.add([new(40)]) == [40]
    ob.close()


def test_an_upgrade_that_fails_leaves_a_version_2_file(tmp_path: Path) -> None:
    """The column and the mark go with the commit of the first new rows: a full disk rolls
    all of it back, and the older agent can still take the backlog."""
    path = tmp_path / "outbox.sqlite"
    _make_version_2(path, 10)
    ob = Outbox(path, GW, row_readings=20)
    pages = ob._conn.execute("PRAGMA page_count").fetchone()[0]
    ob._conn.execute(f"PRAGMA max_page_count = {pages}")
    assert ob.add([new(i) for i in range(10, 400)]) == [outbox_mod.DROPPED] * 390
    columns = [r[1] for r in ob._conn.execute("PRAGMA table_info(readings)")]
    assert columns == ["seq", "rec", "crc"]
    assert ob._conn.execute("PRAGMA user_version").fetchone()[0] == 2
    count, raw, _ = ob.next_raw_batch("b1", 500)
    assert count == 10 and seqs(raw) == list(range(10))
    ob.close()
    assert user_version(path) == 2


def test_a_version_3_file_without_its_column_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    _make_version_2(path, 3)
    _set(path, "PRAGMA user_version=3")
    ob = Outbox(path, GW)
    assert ob.recovered_from is not None
    assert ob.recovery_reason == (
        "readings columns ['seq', 'rec', 'crc'] are not a version 3 outbox's"
    )
    ob.close()


@pytest.mark.parametrize("bad", [0, 5001])
def test_row_readings_out_of_range_is_refused(tmp_path: Path, bad: int) -> None:
    with pytest.raises(ValueError, match=f"row_readings {bad} must be 1..5000"):
        Outbox(tmp_path / "outbox.sqlite", GW, row_readings=bad)


def _drain(ob: Outbox, most: int = 500) -> tuple[list[int], list[Any]]:
    """Every batch until none is left, each acked: the seq sent and the gaps."""
    sent: list[int] = []
    gaps: list[Any] = []
    for b in range(1000):
        count, raw, g = ob.next_raw_batch(f"d{b}", most)
        if not count and not g:
            return sent, gaps
        sent += seqs(raw)
        gaps += g
        ob.ack(f"d{b}")
    raise AssertionError("the outbox never drained")


@pytest.mark.parametrize("n", [4, 1, 0, -126, 52, 10**9])
def test_a_corrupt_count_leaves_no_seq_unaccounted_for(tmp_path: Path, n: int) -> None:
    """Whatever a corrupt row's n says, every seq is sent or in a gap exactly once, the
    row's gap is declared once, and the counts come out right."""
    path = tmp_path / "outbox.sqlite"
    _fifty(path)
    _set(path, "UPDATE readings SET n = ? WHERE seq = 20", n)
    ob = Outbox(path, GW, row_readings=20)
    # A resend reads the batch again: the corrupt row went with its gap the first time.
    ob.next_raw_batch("first", 500)
    assert ob.wire_batch_contents("first")[1] == ob.wire_batch_contents("first")[1]
    ob.close()  # stopped before the receipt
    ob = Outbox(path, GW, row_readings=20)
    sent, gaps = _drain(ob)
    assert [(g.reason, g.seq, g.count) for g in gaps] == [("storage_corrupt", 20, 20)]
    assert sent == [s for s in range(50) if not 20 <= s < 40]
    assert ob.depth().readings == 0 and stored(ob) == []
    ob.close()


def test_a_negative_count_never_makes_a_batch_over_the_contract(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"

    def small(i: int) -> Any:  # small enough for 5,000 in a batch's byte budget
        return new(i, sensor="s", field="f", values={"t_c": 1.0}, cal=None)

    ob = Outbox(path, GW, row_readings=50)
    ob.add([small(i) for i in range(4950)])
    ob.add([small(i) for i in range(4950, 4952)])  # a row of 2 at 4950
    ob.add([small(i) for i in range(4952, 5049)])
    ob.close()
    _set(path, "UPDATE readings SET n = -126 WHERE seq = 4950")
    ob = Outbox(path, GW, row_readings=50)
    count, raw, gaps = ob.next_raw_batch("b1", 5000)
    assert count == len(seqs(raw)) <= 5000
    assert [(g.seq, g.count) for g in gaps] == [(4950, 2)]
    ob.close()


def test_a_corrupt_row_next_to_a_refused_reading_keeps_the_count(tmp_path: Path) -> None:
    """One run of bad seq over two rows: the intact row keeps its good readings, and the
    outbox's count is what it stores."""
    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path, GW, row_readings=20)
    ob.add([new(i) for i in range(40)])
    ob.close()
    _refuse_in_first_row(path, 19)
    _set(path, "UPDATE readings SET crc = crc + 1 WHERE seq = 20")
    ob = Outbox(path, GW, row_readings=20)
    readings, gaps = ob.next_wire_batch("b1", 500)
    assert [r["seq"] for r in readings] == list(range(19))
    assert [(g.seq, g.count) for g in gaps] == [(19, 21)]
    assert ob.corrupt_rows_total == 21
    assert ob.depth().readings == 19 == sum(n for _, n, _ in stored(ob))
    assert ob.ack("b1") == 19 + 1
    assert ob.depth().readings == 0
    assert ob.add([new(40)]) == [40] and ob.depth().readings == 1
    ob.close()
