"""The outbox stores each reading as its wire form (version 2), so a new batch is its rows'
records joined (Outbox.next_raw_batch); a version 1 file (array records) still opens, is
read and checked as before, and is marked 2 so an older agent refuses it."""

import logging
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import outbox as outbox_mod
from agent.outbox import NewReading, Outbox, _reading_crc
from contract.wire import _READING_FIELDS, ClockQuality, encode_wire_batch, plain_reading
from tests.agent.test_outbox_fast_read import RECORDS

GW = "gw-1"
T0 = 1_764_400_000_000_000_000


def new(i: int, **change: Any) -> NewReading:
    parts: dict[str, Any] = {
        "sensor": f"soil-{i % 7}",
        "field": "north",
        "kind": "soil",
        "ts": T0 + i * 1_000_000,
        "clock": list(ClockQuality)[i % 4],
        "values": {"moisture_pct": 31.2 + i % 7, "temp_c": -14.5 + i / 8, "x": 0.1 * i},
        "cal": [None, "", "v2", 'q"uote\\'][i % 4],
    }
    parts.update(change)
    return NewReading(**parts)


def rows(ob: Outbox) -> list[Any]:
    return ob._conn.execute("SELECT seq, rec, crc FROM readings ORDER BY seq").fetchall()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_add_stores_each_reading_as_its_wire_form(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.sqlite", GW)
    # The last one passes pydantic only (an int value, coerced): stored as the float.
    ob.add([*(new(i) for i in range(40)), new(40, values={"temp_c": 21})])
    stored = rows(ob)
    assert [seq for seq, _, _ in stored] == list(range(41))
    for seq, rec, crc in stored:
        assert crc == _reading_crc(seq, rec)
        wire = orjson.loads(rec)
        assert list(wire) == list(_READING_FIELDS)
        assert wire["seq"] == seq
        assert rec == orjson.dumps(wire)
        assert rec.startswith(outbox_mod._OBJECT_RECORD)
        again = plain_reading(*(wire[k] for k in _READING_FIELDS))
        assert again == wire
    assert orjson.loads(stored[40][1])["values"] == {"temp_c": 21.0}
    ob.close()
    assert user_version(tmp_path / "outbox.sqlite") == outbox_mod.SCHEMA_VERSION == 3


def test_a_raw_batch_holds_the_bytes_of_the_checked_wire_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []  # rows parsed and checked, by either checker
    for name in ("_decode_rows", "_plain_wire_readings"):
        checker = getattr(outbox_mod, name)
        monkeypatch.setattr(outbox_mod, name, lambda rs, c=checker: parsed.append(len(rs)) or c(rs))
    ob = Outbox(tmp_path / "outbox.sqlite", GW)
    ob.add([new(i) for i in range(1200)])
    seen: list[int] = []
    for b, want in enumerate([500, 500, 200]):
        count, raw, gaps = ob.next_raw_batch(f"b{b}", 500)
        assert (count, gaps) == (want, [])
        # The same batch read again and checked against the contract (a resend).
        readings, _ = ob.wire_batch_contents(f"b{b}")
        assert raw == orjson.dumps(readings)
        assert encode_wire_batch(GW, "boot", f"b{b}", 1, orjson.Fragment(raw), [], None) == (
            encode_wire_batch(GW, "boot", f"b{b}", 1, readings, [], None)
        )
        seen += [r["seq"] for r in orjson.loads(raw)]
    assert seen == list(range(1200))
    assert ob.next_raw_batch("b3", 500) == (0, b"[]", [])
    assert ob.inflight_batches() == 3
    assert parsed == [500, 500, 200]  # by wire_batch_contents only: new batches are joined
    assert ob.ack("b1") == 500
    ob.close()


def _make_version_1(path: Path, n: int) -> list[dict[str, Any]]:
    """An outbox as version 1 left it: ``n`` readings as arrays without the seq."""
    ob = Outbox(path, GW)
    ob.add([new(i) for i in range(n)])
    wires = [orjson.loads(rec) for _, rec, _ in rows(ob)]
    ob.close()
    conn = sqlite3.connect(path)
    for w in wires:
        rec = orjson.dumps([w[k] for k in _READING_FIELDS if k != "seq"])
        conn.execute(
            "UPDATE readings SET rec = ?, crc = ? WHERE seq = ?",
            (rec, _reading_crc(w["seq"], rec), w["seq"]),
        )
    conn.execute("ALTER TABLE readings DROP COLUMN n")  # added by version 3
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    return wires


def test_a_version_1_file_is_read_and_marked_3(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    old = _make_version_1(path, 10)
    assert user_version(path) == 1
    # One array record the contract refuses, with a valid CRC: a gap, as before.
    bad = orjson.dumps(["soil-1", "north", "soil", T0, "synced", {"seq": 1.0}, None])
    conn = sqlite3.connect(path)
    conn.execute("UPDATE readings SET rec = ?, crc = ? WHERE seq = 3", (bad, _reading_crc(3, bad)))
    conn.commit()
    conn.close()

    ob = Outbox(path, GW)
    assert ob.recovered_from is None
    assert ob._conn.execute("PRAGMA user_version").fetchone()[0] == 1  # the file is locked
    assert ob.add([new(i) for i in range(10, 15)]) == list(range(10, 15))
    assert ob._conn.execute("PRAGMA user_version").fetchone()[0] == 3
    count, raw, gaps = ob.next_raw_batch("b1", 500)
    readings = orjson.loads(raw)
    assert count == 14
    assert [r["seq"] for r in readings] == [0, 1, 2, *range(4, 15)]
    assert readings[:3] == old[:3] and readings[3:9] == old[4:]
    assert all(list(r) == list(_READING_FIELDS) for r in readings)
    assert [(g.reason, g.seq, g.count) for g in gaps] == [("storage_corrupt", 3, 1)]
    ob.close()
    assert user_version(path) == 3


def test_a_version_1_file_is_marked_3_by_the_commit_of_its_first_new_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Until it holds an object record the file stays one version 1 reads: an agent that
    opens it, sends and stops (an upgrade rolled back before it stored anything) leaves the
    backlog to the older agent instead of having it moved aside. A commit that fails (disk
    full) takes the mark back with its rows."""
    caplog.set_level(logging.INFO, logger="agent.outbox")
    path = tmp_path / "outbox.sqlite"
    _make_version_1(path, 10)
    ob = Outbox(path, GW)
    count, _, _ = ob.next_raw_batch("b1", 4)
    assert count == 4 and ob.ack("b1") == 4
    ob.close()
    assert user_version(path) == 1
    assert "outbox upgraded" not in caplog.text

    ob = Outbox(path, GW)
    pages = ob._conn.execute("PRAGMA page_count").fetchone()[0]
    ob._conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL, as on a full disk
    assert ob.add([new(i) for i in range(10, 400)]) == [outbox_mod.DROPPED] * 390
    assert ob._conn.execute("PRAGMA user_version").fetchone()[0] == 1  # rolled back with it
    ob._conn.execute("PRAGMA max_page_count = 1000000")
    assert ob.add([new(400)]) == [10]
    assert ob._conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert caplog.text.count("outbox upgraded") == 1
    assert ob.add([new(401)]) == [11]
    assert caplog.text.count("outbox upgraded") == 1
    ob.close()
    assert user_version(path) == 3


def test_a_version_1_file_gives_the_batches_version_1_gave(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    old = _make_version_1(path, 1200)
    ob = Outbox(path, GW)
    got: list[Any] = []
    for b in range(3):
        readings, gaps = ob.next_wire_batch(f"b{b}", 500)
        assert gaps == []
        got += readings
    assert got == old
    ob.close()


@pytest.mark.parametrize("version", [0, 4, 99])
def test_a_version_it_cannot_read_is_moved_aside(tmp_path: Path, version: int) -> None:
    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path, GW)
    ob.add([new(i) for i in range(3)])
    ob.close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={version}")
    conn.commit()
    conn.close()
    ob = Outbox(path, GW)
    assert ob.recovered_from is not None
    assert ob.recovery_reason == f"outbox schema version {version}, this agent reads 1, 2 and 3"
    assert ob.add([new(3)]) == [3]  # seq goes on from the sidecar
    ob.close()


def _object(array_rec: bytes, seq: Any) -> bytes:
    parts = orjson.loads(array_rec)
    return orjson.dumps(dict(zip(_READING_FIELDS, [*parts[:5], seq, *parts[5:]], strict=True)))


def _object_rows(recs: list[bytes], first: int = 1000) -> list[Any]:
    out = []
    for n, rec in enumerate(recs):
        rec = _object(rec, first + n)
        out.append((first + n, rec, _reading_crc(first + n, rec)))
    return out


def _one_per_row(rows: list[Any]) -> list[Any]:
    """Rows (seq, rec, crc) as the outbox reads them: (seq, rec, crc, n) with n = 1."""
    return [(*row, 1) for row in rows]


def _good(n: int) -> list[bytes]:
    return [
        orjson.dumps([f"soil-{i}", "north", "soil", T0 + i, "synced", {"t": 0.5}, None])
        for i in range(n)
    ]


# Object records this version would not write, each with a valid CRC.
ODD_OBJECTS = {
    "another seq": lambda w: {**w, "seq": w["seq"] + 1},
    "float seq": lambda w: {**w, "seq": float(w["seq"])},
    "bool seq": lambda w: {**w, "seq": True},
    "no cal": lambda w: {k: v for k, v in w.items() if k != "cal"},
    "extra key": lambda w: {**w, "gateway": "gw-1"},
    "keys out of order": lambda w: dict(reversed(list(w.items()))),
}


@pytest.mark.parametrize("odd", ODD_OBJECTS.values(), ids=ODD_OBJECTS.keys())
def test_an_object_record_not_as_written_is_a_bad_row(odd: Any) -> None:
    rows_ = _object_rows(_good(5), first=1)  # seq 1..5: "bool seq" True == 1 for row 0
    seq = rows_[0][0]
    rec = orjson.dumps(odd(orjson.loads(rows_[0][1])))
    rows_[0] = (seq, rec, _reading_crc(seq, rec))
    assert outbox_mod._plain_wire_readings(rows_) is None
    readings, bad = outbox_mod._decode_rows(rows_)
    assert bad == {0: seq}
    assert readings[0] is None
    assert [r["seq"] for r in readings[1:]] == [2, 3, 4, 5]
    assert outbox_mod.Outbox._decode_readings(_one_per_row(rows_), 6) == (readings, bad)


def test_arrays_and_objects_in_one_batch_are_read_row_by_row() -> None:
    recs = _good(4)
    mixed = _object_rows(recs[:2]) + [
        (1002 + n, rec, _reading_crc(1002 + n, rec)) for n, rec in enumerate(recs[2:])
    ]
    assert outbox_mod._plain_wire_readings(mixed) is None
    readings, bad = outbox_mod._decode_rows(mixed)
    assert bad == {}
    assert [r["seq"] for r in readings] == [1000, 1001, 1002, 1003]
    assert outbox_mod._joined_records(mixed) is None  # an array record: not joined


def test_joined_records_need_every_crc_and_an_object_record() -> None:
    good = _one_per_row(_object_rows(_good(3)))
    assert outbox_mod._joined_records(good) == b"[" + b",".join(r[1] for r in good) + b"]"
    assert outbox_mod._joined_records([]) == b"[]"
    bad_crc = [*good[:2], (good[2][0], good[2][1], good[2][2] ^ 1, 1)]
    assert outbox_mod._joined_records(bad_crc) is None
    text = [*good[:2], (good[2][0], good[2][1].decode(), good[2][2], 1)]
    assert outbox_mod._joined_records(text) is None
    negative = [*good[:2], (-1, good[2][1], good[2][2], 1)]
    assert outbox_mod._joined_records(negative) is None


def test_a_row_of_several_readings_is_joined_only_with_its_own_count() -> None:
    """A version 3 row's CRC covers its n: a row whose n changed is not joined."""
    recs = [r[1] for r in _object_rows(_good(3))]
    joined = b",".join(recs)
    row = (1000, joined, outbox_mod._row_crc(1000, 3, joined), 3)
    single = _one_per_row(_object_rows(_good(1), first=1003))
    assert outbox_mod._joined_records([row, *single]) == b"[" + joined + b"," + single[0][1] + b"]"
    for n in (1, 2, 4, 0, -3, "3", None):
        assert outbox_mod._joined_records([(*row[:3], n)]) is None, n
    # A row of one reading: the CRC versions 1 and 2 wrote.
    assert outbox_mod._row_crc(7, 1, recs[0]) == _reading_crc(7, recs[0])


@settings(max_examples=200, deadline=None)
@given(recs=st.lists(RECORDS, min_size=1, max_size=12), corrupt=st.sets(st.integers(0, 11)))
def test_object_records_are_decided_like_the_reference(
    recs: list[bytes], corrupt: set[int]
) -> None:
    rows_ = _object_rows(recs)
    for i in corrupt & set(range(len(rows_))):
        seq, rec, crc = rows_[i]
        rows_[i] = (seq, rec, crc ^ 1)
    want = outbox_mod._decode_rows(rows_)
    fast = outbox_mod._plain_wire_readings(rows_)
    if fast is not None:
        assert (fast, {}) == want
        assert all(list(r) == list(_READING_FIELDS) for r in fast if r is not None)
    assert outbox_mod.Outbox._decode_readings(_one_per_row(rows_), rows_[-1][0] + 1) == want
    # Each row that is plainly valid on its own reads back as its record.
    for (seq, rec, crc), got in zip(rows_, want[0], strict=True):
        if (
            got is not None
            and crc == _reading_crc(seq, rec)
            and plain_reading(*(orjson.loads(rec)[k] for k in _READING_FIELDS))
        ):
            assert orjson.dumps(got) == rec
