"""The fast paths from the profiles write exactly what the reference code writes: the cached
reading encoder of ingest/mapping.py and the hand-built encode_batch of contract/wire.py."""

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.wire import Batch, ClockQuality, Gap, Reading, decode_batch, encode_batch
from ingest import mapping
from ingest.line_protocol import LineProtocolError
from ingest.mapping import MappingError, batch_to_lines

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
