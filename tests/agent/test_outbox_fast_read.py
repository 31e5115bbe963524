"""The outbox's batch read checked a column at a time (agent.outbox._plain_wire_readings)
returns exactly what the row-by-row reference (agent.outbox._decode_rows) returns: the same
wire dicts (keys in order, values as parsed), the same bad rows by index and seq, and the
same exceptions; anything it is not sure of goes to the reference whole."""

import math
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import outbox as outbox_mod
from agent.outbox import NewReading, Outbox, _reading_crc
from contract.wire import _READING_FIELDS, ClockQuality, encode_wire_batch

GW = "gw-1"
T0 = 1_764_400_000_000_000_000
SEQ0 = 1000


def record(i: int, **change: object) -> list[object]:
    """A stored record (sensor, field, kind, ts, clock, values, cal) as the agent writes it."""
    rec: dict[str, object] = {
        "sensor": f"soil-{i % 20}",
        "field": "north",
        "kind": "soil",
        "ts": T0 + i * 10_000_000,
        "clock": "synced",
        "values": {"moisture_pct": 31.2 + i % 7, "temp_c": 14.5 - i % 5, "ec_us_cm": 412.0},
        "cal": None,
    }
    rec.update(change)
    return list(rec.values())


def rows_of(recs: Sequence[bytes], first: int = SEQ0) -> list[tuple[int, bytes, int]]:
    return [(first + n, rec, _reading_crc(first + n, rec)) for n, rec in enumerate(recs)]


def good_recs(n: int) -> list[bytes]:
    return [orjson.dumps(record(i)) for i in range(n)]


def reference(rows: list[Any]) -> tuple[list[Any], dict[int, int]]:
    return outbox_mod._decode_rows(rows)


def decoded(rows: list[Any]) -> tuple[list[Any], dict[int, int]]:
    # Rows of one reading each (n = 1), as versions 1 and 2 stored every reading.
    return Outbox._decode_readings([(*row, 1) for row in rows], rows[-1][0] + 1 if rows else 0)


def test_a_batch_as_the_agent_writes_it_takes_the_column_path(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.sqlite", GW)
    ob.add(
        [
            NewReading(
                sensor=f"soil-{i % 20}",
                field="north",
                kind="soil",
                ts=T0 + i,
                clock=list(ClockQuality)[i % 4],
                values={"moisture_pct": 31.2 + i % 7, "temp_c": -14.5 + i % 5, "x": 0.1 * i},
                cal=[None, "", "v2", 'q"uote\\'][i % 4],
            )
            for i in range(1200)
        ]
    )
    rows = ob._conn.execute("SELECT seq, rec, crc FROM readings ORDER BY seq").fetchall()
    want, bad = reference(rows)
    assert bad == {}
    fast = outbox_mod._plain_wire_readings(rows)
    assert fast is not None
    assert fast == want
    assert all(list(r) == list(_READING_FIELDS) for r in fast)
    assert [list(r["values"]) for r in fast] == [list(r["values"]) for r in want]
    assert {type(v) for r in fast for v in r["values"].values()} == {float}
    assert encode_wire_batch(GW, "boot", "b", 1, fast, [], None) == encode_wire_batch(
        GW, "boot", "b", 1, want, [], None
    )

    got: list[Any] = []
    for b in range(3):
        readings, gaps = ob.next_wire_batch(f"b{b}", 500)
        assert gaps == []
        assert ob.wire_batch_contents(f"b{b}") == (readings, [])
        got += readings
    assert got == want
    ob.close()


def test_empty_and_single_rows() -> None:
    assert decoded([]) == ([], {})
    rows = rows_of(good_recs(1))
    assert decoded(rows) == reference(rows)
    assert outbox_mod._plain_wire_readings(rows) is not None


Edit = Callable[[list[Any], int], None]


def _bad_crc(rows: list[Any], i: int) -> None:
    seq, rec, crc = rows[i]
    rows[i] = (seq, rec, crc ^ 1)


def _flipped_byte(rows: list[Any], i: int) -> None:
    seq, rec, crc = rows[i]
    rows[i] = (seq, rec.replace(b"412.0", b"492.0"), crc)


def _record(**change: object) -> Edit:
    def edit(rows: list[Any], i: int) -> None:
        seq = rows[i][0]
        rec = orjson.dumps(record(i, **change))
        rows[i] = (seq, rec, _reading_crc(seq, rec))

    return edit


def _raw(rec: bytes) -> Edit:
    def edit(rows: list[Any], i: int) -> None:
        seq = rows[i][0]
        rows[i] = (seq, rec, _reading_crc(seq, rec))

    return edit


GOOD_VALUES = {"moisture_pct": 31.2, "temp_c": 14.5}
# One row in the middle of a good batch that the column check must leave to the reference.
MIDDLE_ROWS: dict[str, Edit] = {
    "crc": _bad_crc,
    "flipped byte": _flipped_byte,
    "not json": _raw(b'["soil-1", "north"'),
    "json number": _raw(b"5"),
    "json null": _raw(b"null"),
    "json string of 7": _raw(b'"abcdefg"'),
    "json object of 7": _raw(orjson.dumps({str(k): k for k in range(7)})),
    "six fields": _raw(orjson.dumps(record(0)[:6])),
    "eight fields": _raw(orjson.dumps([*record(0), None])),
    "int value (coerced)": _record(values={**GOOD_VALUES, "temp_c": 14}),
    "bool value (coerced)": _record(values={**GOOD_VALUES, "temp_c": True}),
    "string value (coerced)": _record(values={**GOOD_VALUES, "temp_c": "14.5"}),
    "null value": _record(values={**GOOD_VALUES, "temp_c": None}),
    "reserved value name": _record(values={**GOOD_VALUES, "seq": 1.0}),
    "bad value name": _record(values={**GOOD_VALUES, "Temp": 1.0}),
    "no values": _record(values={}),
    "65 values": _record(values={f"v{k}": 1.0 for k in range(65)}),
    "values a list": _record(values=[1.0]),
    "invalid sensor id": _record(sensor="Soil 1"),
    "unhashable sensor id": _record(sensor=["soil-1"]),
    "int field": _record(field=7),
    "empty kind": _record(kind=""),
    "negative ts": _record(ts=-1),
    "ts 2**63": _record(ts=2**63),
    "float ts (coerced)": _record(ts=1.5e18),
    "bool ts (coerced)": _record(ts=True),
    "unknown clock": _record(clock="maybe"),
    "clock upper case": _record(clock="SYNCED"),
    "unhashable clock": _record(clock=["synced"]),
    "cal too long": _record(cal="x" * 129),
    "int cal": _record(cal=3),
    "unhashable cal": _record(cal=["v1"]),
}


@pytest.mark.parametrize("where", [0, 250, 499])
@pytest.mark.parametrize("edit", MIDDLE_ROWS.values(), ids=MIDDLE_ROWS.keys())
def test_one_doubtful_row_leaves_the_batch_to_the_reference(edit: Edit, where: int) -> None:
    rows = rows_of(good_recs(500))
    edit(rows, where)
    assert outbox_mod._plain_wire_readings(rows) is None
    got = decoded(rows)
    assert got == reference(rows)
    assert [list(r) for r in got[0] if r is not None] == [list(_READING_FIELDS)] * sum(
        r is not None for r in got[0]
    )


def test_what_the_reference_makes_of_the_middle_rows() -> None:
    """The middle rows above are decided as before: coerced by pydantic, or bad at their
    index (the callers turn that into a storage_corrupt gap)."""
    coerced = {
        "int value (coerced)": ("values", {"moisture_pct": 31.2, "temp_c": 14.0}),
        "bool value (coerced)": ("values", {"moisture_pct": 31.2, "temp_c": 1.0}),
        "string value (coerced)": ("values", {"moisture_pct": 31.2, "temp_c": 14.5}),
        "float ts (coerced)": ("ts", 1_500_000_000_000_000_000),
        "bool ts (coerced)": ("ts", 1),
    }
    for name, edit in MIDDLE_ROWS.items():
        rows = rows_of(good_recs(5))
        edit(rows, 2)
        readings, bad = decoded(rows)
        if name in coerced:
            key, value = coerced[name]
            assert bad == {}
            assert readings[2][key] == value
            assert list(map(type, readings[2]["values"].values())) == [float] * 2 or key == "ts"
            assert type(readings[2]["ts"]) is int
        else:
            assert bad == {2: SEQ0 + 2}, name
            assert readings[2] is None
        assert [r is None for r in readings] == [False, False, bad != {}, False, False]


def test_a_value_sum_that_overflows_is_left_to_the_reference() -> None:
    big = 1.7976931348623157e308
    rows = rows_of([orjson.dumps(record(i, values={"a": big, "b": big})) for i in range(3)])
    assert outbox_mod._plain_wire_readings(rows) is None
    readings, bad = decoded(rows)
    assert bad == {}
    assert readings == reference(rows)[0]
    assert readings[0]["values"] == {"a": big, "b": big}


@pytest.mark.parametrize(
    ("seq", "error"),
    [(-1, OverflowError), (2**64, OverflowError), ("1", AttributeError), (1.0, AttributeError)],
)
def test_a_seq_sqlite_cannot_hold_raises_as_before(seq: object, error: type[Exception]) -> None:
    rows: list[Any] = rows_of(good_recs(3))
    rows[1] = (seq, rows[1][1], rows[1][2])
    with pytest.raises(error):
        reference(rows)
    with pytest.raises(error):
        decoded(rows)


@pytest.mark.parametrize("seq", [2**63, 2**64 - 1, True])
def test_a_seq_beyond_the_contract_is_decided_by_the_reference(seq: int) -> None:
    rec = orjson.dumps(record(0))
    rows: list[Any] = [*rows_of(good_recs(2)), (seq, rec, _reading_crc(seq, rec))]
    assert outbox_mod._plain_wire_readings(rows) is None
    assert decoded(rows) == reference(rows)


def test_a_record_stored_as_text_is_a_bad_row() -> None:
    """The reference, given it, raises; the outbox checks each row's CRC before (version 3:
    the row stands for its seq range) and takes it for a corrupt row."""
    rows: list[Any] = rows_of(good_recs(3))
    rows[1] = (rows[1][0], rows[1][1].decode(), rows[1][2])
    with pytest.raises(TypeError):
        reference(rows)
    readings, bad = decoded(rows)
    assert bad == {1: rows[1][0]} and readings[1] is None
    assert readings[0] is not None and readings[2] is not None


# Records mostly as the agent writes them, sometimes odd in one field.
IDS = st.sampled_from(["soil-1", "north", "soil", "gw-1", "a", "x_y-z"])
ODD_IDS = st.sampled_from(["", "A", "a b", "-x", "x" * 64, "é", 7, None])
NAMES = st.sampled_from(["moisture_pct", "temp_c", "x", "a1"])
ODD_NAMES = st.sampled_from(["seq", "cal", "time", "Temp", "_x", "a" * 64])
NUMBERS = st.floats(allow_nan=False, allow_infinity=False)
ODD_NUMBERS = st.integers(-3, 3) | st.sampled_from([True, None, "1.5"])


def _mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
    return st.sampled_from([True] * 12 + [False]).flatmap(lambda ok: valid if ok else odd)


RECORDS = st.tuples(
    _mostly(IDS, ODD_IDS),
    _mostly(IDS, ODD_IDS),
    _mostly(IDS, ODD_IDS),
    _mostly(st.integers(0, 2**63 - 1), st.sampled_from([-1, 2**63, 5.0, True])),
    _mostly(st.sampled_from([c.value for c in ClockQuality]), st.sampled_from(["x", 1])),
    _mostly(
        st.dictionaries(_mostly(NAMES, ODD_NAMES), _mostly(NUMBERS, ODD_NUMBERS), min_size=1),
        st.just({}) | st.just([1.0]),
    ),
    _mostly(st.none() | st.sampled_from(["", "v2", "x" * 128]), st.sampled_from(["x" * 129, 3])),
).map(lambda parts: orjson.dumps(list(parts)))


@settings(max_examples=300, deadline=None)
@given(
    recs=st.lists(RECORDS, min_size=1, max_size=12),
    corrupt=st.sets(st.integers(0, 11), max_size=2),
)
def test_column_read_decides_like_the_reference(recs: list[bytes], corrupt: set[int]) -> None:
    rows = rows_of(recs)
    for i in corrupt & set(range(len(rows))):
        _bad_crc(rows, i)
    want = reference(rows)
    fast = outbox_mod._plain_wire_readings(rows)
    if fast is not None:
        assert (fast, {}) == want
        assert not corrupt & set(range(len(rows)))
    got = decoded(rows)
    assert got == want
    for r, w in zip(got[0], want[0], strict=True):
        assert (r is None) == (w is None)
        if r is not None:
            assert list(r) == list(w) == list(_READING_FIELDS)
            assert [type(v) for v in r["values"].values()] == [float] * len(r["values"])
            assert not any(math.isnan(v) for v in r["values"].values())


@pytest.mark.parametrize("raw", [False, True], ids=["next_wire_batch", "next_raw_batch"])
def test_a_corrupt_row_in_a_full_batch_is_replaced_by_a_gap(tmp_path: Path, raw: bool) -> None:
    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path, GW)
    ob.add(
        [
            NewReading("soil-1", "north", "soil", T0 + i, ClockQuality.SYNCED, {"t": i + 0.5})
            for i in range(500)
        ]
    )
    rows = ob._conn.execute("SELECT seq, rec, crc FROM readings ORDER BY seq").fetchall()
    ob.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE readings SET crc = crc + 1 WHERE seq = 250")
    conn.commit()
    conn.close()

    ob = Outbox(path, GW)
    want = [r for r in reference(rows)[0] if r["seq"] != 250]
    if raw:  # the join is refused; the rows are decided as next_wire_batch does
        count, joined, gaps = ob.next_raw_batch("b1", 500)
        assert count == 499
        assert joined == orjson.dumps(want)
        readings = orjson.loads(joined)
    else:
        readings, gaps = ob.next_wire_batch("b1", 500)
    assert readings == want
    assert [(g.reason, g.seq, g.count) for g in gaps] == [("storage_corrupt", 250, 1)]
    assert (gaps[0].start, gaps[0].end) == (T0 + 249, T0 + 251)
    assert ob.wire_batch_contents("b1") == (readings, gaps)
    assert ob.ack("b1") == 499 + 1
    assert ob.depth().readings == 0
    ob.close()


def test_only_doubtful_batches_are_read_row_by_row(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    row_by_row = outbox_mod._decode_rows

    def counted(rows: list[Any]) -> tuple[list[Any], dict[int, int]]:
        calls.append(len(rows))
        return row_by_row(rows)

    monkeypatch.setattr(outbox_mod, "_decode_rows", counted)
    rows = rows_of(good_recs(500))
    assert decoded(rows)[1] == {}
    assert calls == []
    _bad_crc(rows, 7)
    assert decoded(rows)[1] == {7: SEQ0 + 7}
    assert calls == [500]
