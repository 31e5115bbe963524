"""The fast paths from the profiles write exactly what the reference code writes: the cached
reading encoder of ingest/mapping.py, the hand-built encode_batch of contract/wire.py, and the
plain path (readings as dicts, no pydantic) of the agent's outbox and of the ingest."""

import math
from collections import OrderedDict

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract import wire as wire_module
from contract.signing import batch_message, wire_batch_message
from contract.wire import (
    MAX_BATCH_BYTES,
    Batch,
    ClockQuality,
    Gap,
    Reading,
    decode_batch,
    encode_batch,
    encode_wire_batch,
    plain_reading,
    plain_reading_columns,
    plain_reading_dict,
    reading_from_wire,
    validated_reading,
    wire_form,
)
from ingest import mapping
from ingest.line_protocol import LineProtocolError
from ingest.mapping import MappingError, batch_to_lines, plain_batch_lines
from ingest.quarantine import split_batch

IDS = st.sampled_from(["soil-1", "north", "gw-1", "a", "x_y", "z9", "soil", "weather"])
# Value names the contract allows, including ones that clash with a tag key or start oddly.
NAMES = st.sampled_from(
    ["moisture_pct", "temp_c", "field", "sensor", "gateway", "plantation", "x", "a1"]
)
VALUES = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1e-300, 1.7976931348623157e308, 31.2]
)


def _reading(**kw: object) -> Reading:
    base: dict[str, object] = {
        "sensor": "soil-1",
        "field": "north",
        "kind": "soil",
        "ts": 1_764_400_000_000_000_000,
        "clock": ClockQuality.SYNCED,
        "seq": 7,
        "values": {"moisture_pct": 31.2},
    }
    base.update(kw)
    return Reading.model_validate(base)


def _same(plantation: str, gateway: str, r: Reading) -> None:
    try:
        want = mapping._reading_line_slow(plantation, gateway, r)
    except (LineProtocolError, MappingError) as err:
        with pytest.raises(type(err), match=None) as got:
            mapping._reading_line(plantation, gateway, r)
        assert str(got.value) == str(err)
        return
    assert mapping._reading_line(plantation, gateway, r) == want


@settings(max_examples=400, deadline=None)
@given(
    sensor=IDS,
    field=IDS,
    kind=IDS,
    ts=st.integers(0, 2**63 - 1),
    clock=st.sampled_from(list(ClockQuality)),
    seq=st.integers(0, 2**63 - 1),
    values=st.dictionaries(NAMES, VALUES, min_size=1, max_size=5),
    cal=st.none() | st.sampled_from(["", "v2", 'q"uote\\']),
)
def test_fast_encoder_matches_the_reference(
    sensor: str,
    field: str,
    kind: str,
    ts: int,
    clock: ClockQuality,
    seq: int,
    values: dict[str, float],
    cal: str | None,
) -> None:
    r = _reading(
        sensor=sensor, field=field, kind=kind, ts=ts, clock=clock, seq=seq, values=values, cal=cal
    )
    # Twice: the first call fills the caches, the second uses them.
    _same("hlj-001", "gw-1", r)
    _same("hlj-001", "gw-1", r)


def test_clashing_value_name_is_refused_even_after_the_series_is_cached() -> None:
    assert batch_to_lines(
        "p", Batch(gateway="gw-1", boot="b", batch="b1", sent=1, readings=[_reading()])
    )[0].startswith("soil,field=north,gateway=gw-1,plantation=p,sensor=soil-1 moisture_pct=")
    with pytest.raises(LineProtocolError, match="both tag and field"):
        mapping._reading_line("p", "gw-1", _reading(values={"sensor": 1.0}))


def test_reserved_kind_is_refused() -> None:
    with pytest.raises(MappingError, match="reserved prefix"):
        mapping._reading_line("p", "gw-1", _reading(kind="farmtel_gap"))


def test_last_timestamp_influxdb_refuses_is_refused() -> None:
    with pytest.raises(LineProtocolError, match="timestamp"):
        mapping._reading_line("p", "gw-1", _reading(ts=2**63 - 1))


def test_line_is_exact() -> None:
    r = _reading(values={"moisture_pct": 31.25, "temp_c": -0.0}, seq=41, cal="v1")
    line = mapping._reading_line("hlj-001", "gw-1", r)
    assert line == (
        "soil,field=north,gateway=gw-1,plantation=hlj-001,sensor=soil-1 "
        'moisture_pct=31.25,temp_c=-0.0,seq=41i,clock="synced",cal="v1" 1764400000000000000'
    )
    assert not math.isnan(r.values["moisture_pct"])


@settings(max_examples=200, deadline=None)
@given(
    readings=st.lists(
        st.builds(
            _reading,
            seq=st.integers(0, 2**63 - 1),
            values=st.dictionaries(NAMES, VALUES, min_size=1, max_size=4),
            cal=st.none() | st.just("v1"),
            clock=st.sampled_from(list(ClockQuality)),
        ),
        max_size=5,
    ),
    sig=st.none() | st.just("ed25519:abc"),
)
def test_encode_batch_writes_what_model_dump_writes(
    readings: list[Reading], sig: str | None
) -> None:
    batch = Batch(
        gateway="gw-1",
        boot="b",
        batch="b1",
        sent=5,
        readings=readings,
        gaps=[Gap(start=1, end=2, reason="sensor_silent", detail="x", seq=3, count=1)],
        sig=sig,
    )
    assert encode_batch(batch) == orjson.dumps(batch.model_dump(mode="json"))
    assert decode_batch(encode_batch(batch)) == batch


# --- the plain path: readings as dicts, without pydantic --------------------------------------
# contract.wire.plain_reading (agent outbox), ingest.mapping.plain_batch_lines (ingest) and
# contract.signing.wire_batch_message must decide and write exactly what the reference path
# (pydantic models, decode_batch, split_batch, batch_to_lines, batch_message) decides and writes.


def _mostly(
    valid: st.SearchStrategy[object], odd: st.SearchStrategy[object]
) -> st.SearchStrategy[object]:
    """``valid`` about 6 times in 7, else ``odd``: most generated readings are valid."""
    return st.sampled_from([True] * 6 + [False]).flatmap(lambda ok: valid if ok else odd)


ANY_ID = _mostly(IDS, st.sampled_from(["", "GW", "a b", "-x", "x" * 64, "é", "farmtel_gap", 7]))
ANY_NAME = _mostly(NAMES, st.sampled_from(["seq", "clock", "cal", "time", "Temp", "_x", "a" * 64]))
ANY_VALUE = _mostly(
    VALUES,
    st.sampled_from([math.nan, math.inf, -math.inf, True, "1.5", None]) | st.integers(-5, 5),
)
ANY_INT = _mostly(
    st.integers(0, 2**63 - 1),
    st.sampled_from([-1, 2**63 - 1, 2**63, 2**64, 0, 5.0, True, "5"]),
)
ANY_CLOCK = _mostly(
    st.sampled_from([c.value for c in ClockQuality]), st.sampled_from(["maybe", "SYNCED", "", 1])
)
ANY_CAL = _mostly(
    st.none() | st.sampled_from(["", "v2", 'q"uote\\', "x" * 128]),
    st.sampled_from(["x" * 129, 3, b"v1"]),
)


@settings(max_examples=600, deadline=None)
@given(
    sensor=ANY_ID,
    field=ANY_ID,
    kind=ANY_ID,
    ts=ANY_INT,
    clock=ANY_CLOCK,
    seq=ANY_INT,
    values=_mostly(
        st.dictionaries(ANY_NAME, ANY_VALUE, min_size=1, max_size=4),
        st.just({}) | st.just([1.0]) | st.just({f"v{i}": 1.0 for i in range(65)}),
    ),
    cal=ANY_CAL,
)
def test_plain_reading_decides_like_pydantic(
    sensor: object,
    field: object,
    kind: object,
    ts: object,
    clock: object,
    seq: object,
    values: object,
    cal: object,
) -> None:
    plain = plain_reading(sensor, field, kind, ts, clock, seq, values, cal)
    try:
        model = validated_reading(sensor, field, kind, ts, clock, seq, values, cal)
    except ValueError:
        assert plain is None
        return
    if plain is not None:  # None is allowed: pydantic decides (and coerces) then
        assert plain == wire_form(model)
        assert [type(v) for v in plain["values"].values()] == [float] * len(model.values)
        assert reading_from_wire(plain) == model
        assert reading_from_wire(plain).model_dump() == model.model_dump()


def _reference(plantation: str, gateway: str, payload: bytes, now: int, not_before: int | None):
    """What ingest/service.py does without the plain path: lines, or the error's text."""
    try:
        batch = decode_batch(payload)
        if batch.gateway != gateway:
            return "gateway differs"
        kept, quarantine = split_batch(plantation, batch, now, not_before, 300 * 10**9)
        return batch_to_lines(plantation, kept, signed=batch) + quarantine, batch, quarantine
    except (ValueError, MappingError, LineProtocolError) as err:
        return f"refused: {err}"


def _agree(payload: bytes, not_before: int | None = None) -> bool:
    """The plain path stores what the reference path stores, or leaves the batch to it."""
    now = 1_800_000_000_000_000_000
    plain = plain_batch_lines(
        "hlj-001", "gw-1", payload, 0 if not_before is None else not_before, now + 300 * 10**9
    )
    ref = _reference("hlj-001", "gw-1", payload, now, not_before)
    if plain is None:
        return False
    assert isinstance(ref, tuple), ref
    lines, batch, quarantine = ref
    assert not quarantine
    assert plain.lines == lines
    assert plain.model() == batch
    assert encode_batch(plain.model()) == encode_batch(batch)  # fields in the models' order
    assert list(plain.seqs) == [r.seq for r in batch.readings]
    signed = batch_message("hlj-001", batch)
    assert wire_batch_message("hlj-001", "gw-1", plain.batch, plain.readings, plain.gaps) == signed
    wires = [plain_reading_dict(r) for r in plain.readings]  # as the agent signs them
    assert wire_batch_message("hlj-001", "gw-1", plain.batch, wires, plain.gaps) == signed
    return True


GAPS = st.lists(
    st.builds(
        Gap,
        sensor=st.none() | IDS,
        start=st.integers(0, 2**62),
        end=st.integers(0, 2**62),
        reason=st.sampled_from(["sensor_silent", "outbox_full", "storage_corrupt"]),
        detail=st.sampled_from(["", "no answer", "two\nlines", 'q"uote']),
        seq=st.none() | st.integers(0, 2**40),
        count=st.integers(0, 100),
    ),
    max_size=2,
)


@settings(max_examples=300, deadline=None)
@given(
    readings=st.lists(
        st.builds(
            _reading,
            sensor=IDS,
            kind=IDS,
            # Mostly before the test's "now" (1.8e18 ns); later ones are quarantined.
            ts=st.integers(0, 1_800_000_000_000_000_000)
            | st.sampled_from([2**63 - 2, 2**63 - 1, 1_800_000_300_000_000_001]),
            seq=st.integers(0, 2**63 - 1),
            values=st.dictionaries(NAMES, VALUES, min_size=1, max_size=4),
            cal=st.none() | st.sampled_from(["", "v1", 'q"uote\\', "a b,c=d"]),
            clock=st.sampled_from(list(ClockQuality)),
        ),
        max_size=6,
    ),
    gaps=GAPS,
    consecutive=st.booleans(),
    sig=st.none() | st.just("ed25519:abc"),
    not_before=st.none() | st.sampled_from([0, 1_764_400_000_000_000_000]),
)
def test_plain_batch_lines_store_what_the_reference_path_stores(
    readings: list[Reading],
    gaps: list[Gap],
    consecutive: bool,
    sig: str | None,
    not_before: int | None,
) -> None:
    if consecutive:
        readings = [r.model_copy(update={"seq": 40 + n}) for n, r in enumerate(readings)]
    batch = Batch(
        gateway="gw-1", boot="b", batch="b1", sent=5, readings=readings, gaps=gaps, sig=sig
    )
    payload = encode_batch(batch)
    if _agree(payload, not_before):
        plain = plain_batch_lines("hlj-001", "gw-1", payload, 0, 2**63)
        assert plain is not None
        if consecutive and readings:
            assert isinstance(plain.seqs, range)


def test_a_batch_as_the_agent_sends_it_takes_the_plain_path() -> None:
    batch = Batch(
        gateway="gw-1",
        boot="b",
        batch="b1",
        sent=5,
        readings=[_reading(seq=s, cal="v1" if s % 2 else None) for s in range(3)],
        gaps=[Gap(sensor="soil-1", start=1, end=2, reason="sensor_silent", detail="x")],
    )
    assert _agree(encode_batch(batch))


_GOOD = orjson.loads(
    encode_batch(
        Batch(
            gateway="gw-1",
            boot="b",
            batch="b1",
            sent=5,
            readings=[_reading(seq=1)],
            gaps=[Gap(start=1, end=2, reason="sensor_silent", detail="x", seq=3, count=1)],
        )
    )
)


def _edit(path: str, value: object) -> bytes:
    doc = orjson.loads(orjson.dumps(_GOOD))
    *keys, last = path.split(".")
    target = doc
    for k in keys:
        target = target[int(k)] if k.isdigit() else target[k]
    if value is _DROP:
        del target[last]
    else:
        target[last] = value
    return orjson.dumps(doc)


_DROP = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("v", 2),
        ("v", True),
        ("v", 1.0),
        ("v", _DROP),
        ("gateway", "gw-2"),
        ("gateway", "GW-1"),
        ("boot", ""),
        ("boot", "b" * 65),
        ("batch", "a b"),
        ("sent", -1),
        ("sent", 2**63 - 1),
        ("sig", 5),
        ("sig", "s" * 257),
        ("gaps", _DROP),
        ("sig", _DROP),
        ("extra", 1),
        ("readings.0.ts", 1.5e18),
        ("readings.0.ts", 2**63 - 1),
        ("readings.0.ts", True),
        ("readings.0.seq", -1),
        ("readings.0.clock", "maybe"),
        ("readings.0.values", {}),
        ("readings.0.values", {"seq": 1.0}),
        ("readings.0.values", {"field": 1.0}),
        ("readings.0.values", {"x": None}),
        ("readings.0.values", {"moisture_pct": True}),
        ("readings.0.values", {"moisture_pct": "31.2"}),
        ("readings.0.values", {"moisture_pct": [31.2]}),
        ("readings.0.values", {"moisture_pct": {"x": 31.2}}),
        ("readings.0.values", {"moisture_pct": 1e400}),
        ("readings.0.cal", _DROP),
        ("readings.0.cal", 5),
        ("readings.0.cal", "a\nb"),
        ("readings.0.kind", "farmtel_gap"),
        ("readings.0.sensor", "Soil"),
        ("readings.0.extra", 1),
        ("gaps.0.reason", "bored"),
        ("gaps.0.count", -1),
        ("gaps.0.sensor", "S"),
        ("gaps.0.detail", "d" * 501),
        ("gaps.0.start", 2**63 - 1),
        ("gaps.0.seq", _DROP),
    ],
)
def test_plain_path_leaves_every_doubtful_batch_to_the_reference_path(
    path: str, value: object
) -> None:
    payload = _edit(path, value)
    if _agree(payload):  # the plain path may take a batch only if it stores the same
        pytest.fail(f"{path}={value!r} was taken; it should be left to pydantic")


@pytest.mark.parametrize(
    "values",
    [{"moisture_pct": 3}, {"moisture_pct": -3}, {"moisture_pct": 31.2, "temp_c": 0}],
)
def test_integer_values_are_stored_as_the_floats_pydantic_reads(values: object) -> None:
    # JSON integers are numbers too; both paths read them as floats (3 -> 3.0) and store,
    # sign and rebuild the same (_agree checks all three).
    assert _agree(_edit("readings.0.values", values))


def test_an_integer_value_past_a_float_is_left_to_pydantic() -> None:
    payload = _edit("readings.0.values", {"moisture_pct": 7}).replace(
        b'"moisture_pct":7', b'"moisture_pct":1' + b"0" * 400
    )
    assert plain_batch_lines("hlj-001", "gw-1", payload, 0, 2**63) is None
    assert isinstance(_reference("hlj-001", "gw-1", payload, 0, None), str)


@pytest.mark.parametrize("key", [b"gaps", b"readings", b"sig", b"boot"])
@pytest.mark.parametrize("depth", [300, 5_000])
def test_a_nested_copy_of_a_field_is_left_to_pydantic(key: bytes, depth: int) -> None:
    # The key twice, the nested copy first: each parser keeps the last copy, but pydantic's
    # parser refuses nesting past its limit, so the plain path must not take the batch.
    good = orjson.dumps(_GOOD)
    payload = good[:1] + b'"' + key + b'":' + b"[" * depth + b"]" * depth + b"," + good[1:]
    assert plain_batch_lines("hlj-001", "gw-1", payload, 0, 2**63) is None
    assert isinstance(_reference("hlj-001", "gw-1", payload, 0, None), str)


def test_plain_path_leaves_a_reading_with_eight_keys_but_one_misnamed() -> None:
    doc = orjson.loads(orjson.dumps(_GOOD))
    reading = doc["readings"][0]
    reading["calibration"] = reading.pop("cal")  # still eight keys
    assert len(reading) == 8
    assert plain_batch_lines("hlj-001", "gw-1", orjson.dumps(doc), 0, 2**62) is None


_THREE = orjson.loads(
    encode_batch(
        Batch(
            gateway="gw-1",
            boot="b",
            batch="b1",
            sent=5,
            readings=[
                _reading(seq=s, sensor=f"soil-{s}", values={"moisture_pct": 31.2, "temp_c": -1.5})
                for s in range(3)
            ],
        )
    )
)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ts", 1.5e18),
        ("ts", True),
        ("seq", -1),
        ("seq", 2**63),
        ("clock", "maybe"),
        ("clock", ["synced"]),
        ("sensor", "Soil"),
        ("sensor", ["soil-1"]),
        ("kind", "farmtel_gap"),
        ("cal", 5),
        ("cal", ["v1"]),
        ("cal", "c" * 129),
        ("values", {}),
        ("values", []),
        ("values", {f"v{i}": 1.0 for i in range(65)}),
        ("values", {"moisture_pct": True}),
        ("values", {"moisture_pct": "3.0"}),
        ("values", {"moisture_pct": 1.0, "temp_c": None}),
        ("values", {"Moisture": 1.0}),
        ("values", {"a-b": 1.0}),
        ("values", {"time": 1.0}),
        ("values", {"sensor": 1.0}),
        ("extra", 1),
    ],
)
def test_one_doubtful_reading_among_good_ones_leaves_the_batch_to_the_reference_path(
    key: str, value: object
) -> None:
    # The plain path checks the readings a column at a time: one bad value in the middle of
    # a column must be seen as surely as a lone one.
    doc = orjson.loads(orjson.dumps(_THREE))
    doc["readings"][1][key] = value
    if _agree(orjson.dumps(doc)):
        pytest.fail(f"readings.1.{key}={value!r} was taken; it should be left to pydantic")


def test_readings_in_the_middle_of_a_batch_are_written_in_order() -> None:
    doc = orjson.loads(orjson.dumps(_THREE))
    doc["readings"][1]["values"] = {"null": 1e-7, "x": 0.00001}  # odd but valid
    doc["readings"][2]["cal"] = "v2"
    assert _agree(orjson.dumps(doc))
    lines = plain_batch_lines("hlj-001", "gw-1", orjson.dumps(doc), 0, 2**63)
    assert lines is not None
    assert [line.split(" ")[1] for line in lines.lines[:3]] == [
        'moisture_pct=31.2,temp_c=-1.5,seq=0i,clock="synced"',
        'null=1e-7,x=0.00001,seq=1i,clock="synced"',
        'moisture_pct=31.2,temp_c=-1.5,seq=2i,clock="synced",cal="v2"',
    ]


@pytest.mark.parametrize(
    ("payload", "taken"),
    [
        (b"not json", False),
        (b"[1]", False),
        (orjson.dumps(_GOOD).replace(b'"moisture_pct":31.2', b'"moisture_pct":1e400'), False),
        (orjson.dumps(_GOOD)[:-1] + b',"x":1}', False),
        (b"{" + b" " * MAX_BATCH_BYTES + b"}", False),
        (orjson.dumps(_GOOD)[:-1] + b"  }", True),
        # A repeated key: orjson and pydantic both keep the last one.
        (orjson.dumps(_GOOD).replace(b'"ts":', b'"ts":1,"ts":'), True),
        # Keys in another order (another encoder): the same batch.
        (
            orjson.dumps(
                {
                    **{k: v for k, v in reversed(_GOOD.items())},
                    "readings": [dict(reversed(r.items())) for r in _GOOD["readings"]],
                }
            ),
            True,
        ),
    ],
)
def test_plain_path_on_odd_payloads(payload: bytes, taken: bool) -> None:
    assert _agree(payload) is taken  # _agree checks the lines whenever it is taken


def test_plain_path_quarantines_nothing_itself() -> None:
    future = _edit("readings.0.ts", 1_900_000_000_000_000_000)
    assert plain_batch_lines("hlj-001", "gw-1", future, 0, 1_800_000_000_000_000_000) is None
    early = _edit("readings.0.ts", 10)
    assert plain_batch_lines("hlj-001", "gw-1", early, 11, 2**63) is None
    assert plain_batch_lines("hlj-001", "gw-1", early, 10, 2**63) is not None


@settings(max_examples=200, deadline=None)
@given(
    readings=st.lists(
        st.builds(
            _reading,
            seq=st.integers(0, 2**63 - 1),
            values=st.dictionaries(NAMES, VALUES, min_size=1, max_size=4),
            cal=st.none() | st.just("v1"),
            clock=st.sampled_from(list(ClockQuality)),
        ),
        max_size=5,
    ),
    gaps=GAPS,
    sig=st.none() | st.just("ed25519:abc"),
)
def test_wire_encoding_and_signed_message_match_the_models(
    readings: list[Reading], gaps: list[Gap], sig: str | None
) -> None:
    batch = Batch(
        gateway="gw-1", boot="b", batch="b1", sent=5, readings=readings, gaps=gaps, sig=sig
    )
    wire = [wire_form(r) for r in readings]
    assert encode_wire_batch("gw-1", "b", "b1", 5, wire, gaps, sig) == encode_batch(batch)
    assert wire_batch_message("p", "gw-1", "b1", wire, gaps) == batch_message("p", batch)
    assert [reading_from_wire(w) for w in wire] == readings


# --- contract.wire.plain_reading_columns: plain_reading a column at a time (agent outbox) ----


def _columns(readings: list[tuple[object, ...]]) -> list[list[object]]:
    """Readings as (sensor, field, kind, ts, clock, seq, values, cal) -> the eight columns."""
    return [list(column) for column in zip(*readings, strict=True)] or [[]] * 8


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            ANY_ID,
            ANY_ID,
            ANY_ID,
            ANY_INT,
            ANY_CLOCK,
            ANY_INT,
            _mostly(
                st.dictionaries(ANY_NAME, ANY_VALUE, min_size=1, max_size=4),
                st.just({}) | st.just([1.0]) | st.just({f"v{i}": 1.0 for i in range(65)}),
            ),
            ANY_CAL,
        ),
        max_size=6,
    )
)
def test_plain_reading_columns_accepts_exactly_what_plain_reading_accepts(
    readings: list[tuple[object, ...]],
) -> None:
    accepted = [plain_reading(*r) is not None for r in readings]
    columns = plain_reading_columns(*_columns(readings))
    if columns:
        assert all(accepted)
    elif all(accepted):
        # Not sure only when the values' sum overflows (every value is finite then).
        assert not math.isfinite(sum(v for r in readings for v in r[6].values()))  # type: ignore[attr-defined]


_GOOD_READING = (
    "soil-1",
    "north",
    "soil",
    1_764_400_000_000_000_000,
    "synced",
    7,
    {"t_c": 1.5},
    None,
)
_ODD_FIELDS: list[tuple[int, object]] = [
    (0, "Soil"),
    (0, ["soil-1"]),
    (1, 7),
    (2, ""),
    (3, -1),
    (3, 2**63),
    (3, 5.0),
    (3, True),
    (4, "maybe"),
    (4, 1),
    (4, ["synced"]),
    (4, ClockQuality.SYNCED),  # a str, but not exactly: pydantic decides (and converts)
    (5, -1),
    (5, 2**63),
    (5, True),
    (6, {}),
    (6, [1.0]),
    (6, "t_c"),
    (6, OrderedDict({"t_c": 1.5})),  # a dict, but not exactly: pydantic decides
    (6, {f"v{i}": 1.0 for i in range(65)}),
    (6, {"t_c": 1.5, "seq": 1.0}),
    (6, {"t_c": 1.5, "Temp": 1.0}),
    (6, {"t_c": 1}),
    (6, {"t_c": True}),
    (6, {"t_c": "1.5"}),
    (6, {"t_c": math.nan}),
    (6, {"t_c": math.inf}),
    (6, {"t_c": -math.inf}),
    (7, "x" * 129),
    (7, 3),
    (7, b"v1"),
    (7, ["v1"]),
]


@pytest.mark.parametrize(("index", "odd"), _ODD_FIELDS)
def test_plain_reading_columns_is_not_sure_of_one_odd_reading_among_good_ones(
    index: int, odd: object
) -> None:
    bad = list(_GOOD_READING)
    bad[index] = odd
    assert plain_reading(*bad) is None
    readings = [_GOOD_READING, tuple(bad), _GOOD_READING]
    assert plain_reading_columns(*_columns(readings)) is False
    assert plain_reading_columns(*_columns([_GOOD_READING, _GOOD_READING])) is True


def test_plain_reading_columns_edges() -> None:
    assert plain_reading_columns(*_columns([])) is True
    edge = (
        "a",
        "b" * 63,
        "c",
        0,
        "stepped",
        2**63 - 1,
        {f"v{i}": -0.0 for i in range(64)},
        "x" * 128,
    )
    assert plain_reading(*edge) is not None
    assert plain_reading_columns(*_columns([edge, _GOOD_READING])) is True
    big = 1.7976931348623157e308
    overflow = (*_GOOD_READING[:6], {"a": big, "b": big}, None)
    assert plain_reading(*overflow) is not None
    assert plain_reading_columns(*_columns([overflow])) is False  # not sure: per reading then


def test_plain_reading_columns_leaves_changed_models_to_pydantic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire_module, "_FAST_ENCODE", False)
    assert plain_reading(*_GOOD_READING) is None
    assert plain_reading_columns(*_columns([_GOOD_READING])) is False
