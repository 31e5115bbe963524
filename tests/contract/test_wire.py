"""The wire contract: what is accepted, what is refused, and the messages for each."""

import orjson
import pytest

from contract import (
    MAX_BATCH_BYTES,
    Batch,
    InvalidIdentifier,
    PayloadError,
    Reading,
    Receipt,
    ReceiptStatus,
    check_ident,
    decode_batch,
    decode_receipt,
    encode_batch,
    encode_receipt,
    parse_topic,
    telemetry_subscription,
    telemetry_topic,
)
from contract.topics import parse_seq_share_topic, seq_share_subscription, seq_share_topic


def _reading(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sensor": "soil-1",
        "field": "north",
        "kind": "soil",
        "ts": 1_790_000_000_000_000_000,
        "clock": "synced",
        "seq": 7,
        "values": {"moisture_pct": 31.25, "temp_c": -4.5},
    }
    base.update(over)
    return base


def _batch(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "v": 1,
        "gateway": "gw-1",
        "boot": "b00t",
        "batch": "abc123",
        "sent": 1,
        "readings": [_reading()],
    }
    base.update(over)
    return base


def test_round_trip_keeps_every_value_exactly() -> None:
    batch = Batch.model_validate(_batch())
    again = decode_batch(encode_batch(batch))
    assert again == batch
    assert again.readings[0].values == {"moisture_pct": 31.25, "temp_c": -4.5}


@pytest.mark.parametrize("bad", ["GW-1", "gw 1", "", "-gw", "g" * 64, "gw/1", "gw+", "gé"])
def test_identifiers_outside_the_pattern_are_refused_with_the_pattern(bad: str) -> None:
    with pytest.raises(InvalidIdentifier, match=r"must match \^\[a-z0-9\]"):
        check_ident(bad, "gateway id")


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"not json at all", "not JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (orjson.dumps(_batch(v=2)), "schema version 2 is not supported"),
        (orjson.dumps(_batch(gateway="GW 1")), "gateway"),
        (orjson.dumps(_batch(readings=[_reading(values={})])), "readings.0.values"),
        (orjson.dumps(_batch(readings=[_reading(values={"seq": 1.0})])), "reserved"),
        (orjson.dumps(_batch(readings=[_reading(values={"Temp C": 1.0})])), "values"),
        (orjson.dumps(_batch(readings=[_reading(ts=-1)])), "readings.0.ts"),
        (orjson.dumps(_batch(readings=[_reading(clock="maybe")])), "readings.0.clock"),
        (orjson.dumps(_batch(extra_key=1)), "extra_key"),
        (orjson.dumps({"v": 1}), "gateway"),
    ],
)
def test_malformed_payloads_are_refused_with_the_reason(payload: bytes, needle: str) -> None:
    with pytest.raises(PayloadError, match=needle):
        decode_batch(payload)


def test_non_finite_values_are_refused() -> None:
    raw = encode_batch(Batch.model_validate(_batch())).replace(b"31.25", b"NaN")
    with pytest.raises(PayloadError):
        decode_batch(raw)


def test_huge_payload_is_refused_before_parsing() -> None:
    with pytest.raises(PayloadError, match=f"over the {MAX_BATCH_BYTES} limit"):
        decode_batch(b"{" + b" " * MAX_BATCH_BYTES + b"}")


def test_too_many_readings_are_refused() -> None:
    many = [_reading(seq=i) for i in range(5001)]
    with pytest.raises(PayloadError, match="readings"):
        decode_batch(orjson.dumps(_batch(readings=many)))


def test_topics_round_trip_and_refuse_strangers() -> None:
    topic = telemetry_topic("hlj-001", "gw-1")
    assert topic == "farmtel/v1/hlj-001/gw-1/telemetry"
    assert parse_topic(topic) == ("hlj-001", "gw-1", "telemetry")
    assert telemetry_subscription() == "$share/farmtel-ingest/farmtel/v1/+/+/telemetry"
    for bad in [
        "farmtel/v1/HLJ/gw/telemetry",
        "farmtel/v2/a/b/telemetry",
        "farmtel/v1/a/b/c/d",
        "farmtel/v1/a/b/other",
    ]:
        with pytest.raises(ValueError):
            parse_topic(bad)
    with pytest.raises(InvalidIdentifier):
        telemetry_topic("a/b", "gw")


def test_seq_share_topics_round_trip_and_refuse_strangers() -> None:
    topic = seq_share_topic("g-1", "hlj-001", "gw-1")
    assert topic == "farmtel/ingest/v1/g-1/seq/hlj-001/gw-1"
    assert seq_share_subscription("g-1") == "farmtel/ingest/v1/g-1/seq/+/+"
    assert parse_seq_share_topic("g-1", topic) == ("hlj-001", "gw-1")
    for bad, says in [
        ("farmtel/ingest/v1/g-2/seq/hlj-001/gw-1", "does not start with"),
        ("farmtel/ingest/v1/g-1/seq/hlj-001/gw-1/x", "is not farmtel/ingest/v1/g-1/seq/"),
        ("farmtel/ingest/v1/g-1/seq/hlj-001", "is not farmtel/ingest/v1/g-1/seq/"),
        ("farmtel/ingest/v1/g-1/seq/HLJ/gw-1", "plantation id in topic"),
        ("farmtel/ingest/v1/g-1/seq/hlj-001/gw 1", "gateway id in topic"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_seq_share_topic("g-1", bad)


def test_receipt_round_trip() -> None:
    r = Receipt(batch="abc", status=ReceiptStatus.STORED, stored=3)
    assert decode_receipt(encode_receipt(r)) == r
    with pytest.raises(PayloadError):
        decode_receipt(b'{"v": 1, "batch": "", "status": "stored"}')


def test_reading_model_refuses_reserved_and_nan() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Reading.model_validate(_reading(values={"clock": 1.0}))
    with pytest.raises(ValueError, match="finite"):
        Reading.model_validate(_reading(values={"x": float("inf")}))
