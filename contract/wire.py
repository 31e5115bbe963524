"""The batch envelope that travels agent -> ingest, and the receipt that travels back.

A batch is JSON::

    {"v": 1, "gateway": "gw-01", "boot": "<uuid>", "batch": "<id>", "sent": <ns>,
     "readings": [{"sensor": "soil-1", "field": "north", "kind": "soil",
                   "ts": 1764400000000000000, "clock": "synced", "seq": 41,
                   "values": {"moisture_pct": 31.2, "temp_c": -1.5}, "cal": null}],
     "gaps": [{"sensor": "soil-1", "start": <ns>, "end": <ns>, "reason": "sensor_silent",
               "detail": "no answer for 180 s"}],
     "sig": null}

- ``ts`` is nanoseconds since the epoch from the gateway clock; ``clock`` says how far that
  clock can be trusted (see :class:`ClockQuality`).
- ``seq`` numbers every reading of a gateway, across reboots, without holes; ingest uses it
  to count duplicates and holes.
- ``values`` are finite numbers; the unit is in the name (``temp_c``, ``ec_us_cm``).
- There is no plantation in the payload: ingest takes it from the topic and checks it
  against its registry.
"""

import re
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from contract.ids import Ident

SCHEMA_VERSION: Final = 1
MAX_BATCH_BYTES = 1_048_576
"""Ingest dead-letters larger payloads; the agent never builds one this big."""
MAX_READINGS_PER_BATCH = 5_000

VALUE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
_VALUE_NAME_RE = re.compile(VALUE_NAME_PATTERN)
RESERVED_VALUE_NAMES = frozenset({"seq", "clock", "cal", "batch", "time"})
"""Names the store uses for bookkeeping; a sensor value may not take them."""


class PayloadError(ValueError):
    """A payload is not a valid farmtel message; the message says why."""


class ClockQuality(StrEnum):
    """How far a reading's timestamp can be trusted."""

    SYNCED = "synced"
    """The kernel says the clock is synchronised (NTP/GPS) and no jump was seen."""
    UNSYNCED = "unsynced"
    """The clock has not been synchronised since boot; it may be right or free-running."""
    STEPPED = "stepped"
    """The wall clock jumped against the monotonic clock since the last reading."""
    INVALID = "invalid"
    """The clock reads a time before this software was built: certainly wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=4096)


ValueName = Annotated[str, StringConstraints(pattern=VALUE_NAME_PATTERN)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def check_value_name(name: str) -> str:
    """Raise ``ValueError`` unless ``name`` can name a sensor value."""
    if not _VALUE_NAME_RE.fullmatch(name):
        raise ValueError(
            f"value name {name!r} must match {VALUE_NAME_PATTERN} "
            "(put the unit in the name: temp_c, moisture_pct, ec_us_cm)"
        )
    if name in RESERVED_VALUE_NAMES:
        raise ValueError(f"value name {name!r} is reserved for farmtel's own bookkeeping")
    return name


class Reading(_Strict):
    """One measurement of one sensor at one instant."""

    sensor: Ident
    field: Ident
    """The plantation field (plot) the sensor stands in."""
    kind: Ident
    """What is measured: ``soil``, ``weather``, ``env`` ...; becomes the measurement name."""
    ts: Annotated[int, Field(ge=0, lt=2**63)]
    """Nanoseconds since the Unix epoch, from the gateway clock."""
    clock: ClockQuality
    seq: Annotated[int, Field(ge=0, lt=2**63)]
    values: Annotated[dict[ValueName, FiniteFloat], Field(min_length=1, max_length=64)]
    cal: Annotated[str, Field(max_length=128)] | None = None
    """Calibration version that produced the values, if any."""

    @field_validator("values")
    @classmethod
    def _no_reserved(cls, values: dict[str, float]) -> dict[str, float]:
        if not RESERVED_VALUE_NAMES.isdisjoint(values):
            raise ValueError(
                f"value names {sorted(RESERVED_VALUE_NAMES & set(values))} are reserved"
            )
        return values


GapReason = Literal[
    "sensor_silent", "sensor_error", "outbox_full", "agent_down", "clock", "storage_corrupt"
]


class Gap(_Strict):
    """A declared period without data: certifiers see "no data, because ..."."""

    sensor: Ident | None = None
    """None means the whole gateway."""
    start: Annotated[int, Field(ge=0, lt=2**63)]
    end: Annotated[int, Field(ge=0, lt=2**63)]
    reason: GapReason
    detail: Annotated[str, Field(max_length=500)] = ""
    seq: Annotated[int, Field(ge=0, lt=2**63)] | None = None
    """Sequence numbers skipped by this gap start here (``count`` of them), if any."""
    count: Annotated[int, Field(ge=0)] = 0


class Batch(_Strict):
    v: Literal[1] = SCHEMA_VERSION
    gateway: Ident
    boot: Annotated[str, Field(min_length=1, max_length=64)]
    batch: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    sent: Annotated[int, Field(ge=0, lt=2**63)]
    readings: Annotated[list[Reading], Field(max_length=MAX_READINGS_PER_BATCH)] = []
    gaps: Annotated[list[Gap], Field(max_length=1000)] = []
    sig: Annotated[str, Field(max_length=256)] | None = None


_READING_FIELDS = ("sensor", "field", "kind", "ts", "clock", "seq", "values", "cal")
_BATCH_FIELDS = ("v", "gateway", "boot", "batch", "sent", "readings", "gaps", "sig")
# The hand-built encoding below is only right while the models have exactly these fields.
_FAST_ENCODE = (
    tuple(Reading.model_fields) == _READING_FIELDS and tuple(Batch.model_fields) == _BATCH_FIELDS
)


def encode_batch(batch: Batch) -> bytes:
    """The batch as JSON bytes (the same bytes as ``orjson.dumps(batch.model_dump(mode="json"))``).

    Readings are turned into dicts here rather than by ``model_dump``, which costs twice as
    much per reading (measured 1.6 vs 0.85 us, bench/ and docs/performance.md); orjson
    writes enum members as their value.
    """
    if not _FAST_ENCODE:
        return orjson.dumps(batch.model_dump(mode="json"))
    return orjson.dumps(
        {
            "v": batch.v,
            "gateway": batch.gateway,
            "boot": batch.boot,
            "batch": batch.batch,
            "sent": batch.sent,
            "readings": [
                {
                    "sensor": r.sensor,
                    "field": r.field,
                    "kind": r.kind,
                    "ts": r.ts,
                    "clock": r.clock,
                    "seq": r.seq,
                    "values": r.values,
                    "cal": r.cal,
                }
                for r in batch.readings
            ],
            "gaps": [g.model_dump(mode="json") for g in batch.gaps],
            "sig": batch.sig,
        }
    )


def _first_error(err: ValidationError) -> str:
    problems = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "payload"
        problems.append(f"{loc}: {e['msg']}")
    more = err.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def decode_batch(payload: bytes) -> Batch:
    """Parse and validate a telemetry payload; raise :class:`PayloadError` with the reason."""
    if len(payload) > MAX_BATCH_BYTES:
        raise PayloadError(f"payload is {len(payload)} bytes, over the {MAX_BATCH_BYTES} limit")
    try:
        # A valid batch is parsed once; only a refused one is parsed again below to say why
        # (profiles put the extra orjson pass at ~20 % of decoding).
        return Batch.model_validate_json(payload)
    except ValidationError:
        pass
    try:
        raw: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise PayloadError(f"payload is not JSON: {err}") from None
    if not isinstance(raw, dict):
        raise PayloadError(f"payload is a JSON {type(raw).__name__}, not an object")
    if raw.get("v") != SCHEMA_VERSION:
        raise PayloadError(
            f"schema version {raw.get('v')!r} is not supported "
            f"(this ingest speaks v{SCHEMA_VERSION})"
        )
    try:
        return Batch.model_validate_json(payload)
    except ValidationError as err:
        raise PayloadError(
            f"payload does not match the batch schema: {_first_error(err)}"
        ) from None


class ReceiptStatus(StrEnum):
    STORED = "stored"
    """Every reading and gap is in InfluxDB."""
    DEAD_LETTERED = "dead_lettered"
    """The batch was refused and kept aside by ingest with the reason; do not resend."""


class Receipt(_Strict):
    v: Literal[1] = SCHEMA_VERSION
    batch: Annotated[str, Field(min_length=1, max_length=64)]
    status: ReceiptStatus
    stored: Annotated[int, Field(ge=0)] = 0
    reason: Annotated[str, Field(max_length=500)] = ""


def encode_receipt(receipt: Receipt) -> bytes:
    return orjson.dumps(receipt.model_dump(mode="json"))


def decode_receipt(payload: bytes) -> Receipt:
    try:
        return Receipt.model_validate_json(payload)
    except ValidationError as err:
        raise PayloadError(f"receipt is not valid: {_first_error(err)}") from None
