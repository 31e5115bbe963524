"""Readings whose timestamp cannot be true are kept aside, not stored as data.

A gateway without a battery clock can stamp readings in 1970, or (a bad NTP answer, a GPS
week rollover) years ahead. Such a reading stored as data would land in the wrong place of
a certified history. The ingest judges each reading's time against its own clock:

- ``future``: more than ``[ingest] max_future_skew`` seconds ahead of the ingest clock;
- ``before_registration``: before the gateway's ``not_before`` (its registration time from
  the device registry when there is one, else ``[ingest] not_before``).

A quarantined reading is written to measurement ``farmtel_quarantine`` (tags plantation,
gateway, sensor, reason; fields: its values, ``seq``, ``ts_ns`` (the original timestamp),
``clock``, ``kind``, ``field``, ``cal`` (when set) and ``batch`` (the id of the batch it came
in); time: the original timestamp too, so a redelivered reading overwrites itself like any
other point), so nothing is lost, a certifier can see it, its seq still counts as delivered
and the batch signature, which covers it, can still be checked (certify/export.py puts it in
a bundle's ``data/quarantined.jsonl``). Its batch is receipted as stored, and its
``farmtel_batch`` point still counts it (field ``quarantined``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from contract.wire import Batch, Reading
from ingest.line_protocol import encode_point

QUARANTINE_MEASUREMENT = "farmtel_quarantine"
FUTURE = "future"
BEFORE_REGISTRATION = "before_registration"


def judge(
    reading_ts_ns: int, now_ns: int, not_before_ns: int | None, max_future_ns: int = 300 * 10**9
) -> str | None:
    """Why the reading stamped ``reading_ts_ns`` must be quarantined, or None to store it.

    All arguments are nanoseconds (Unix epoch for times). ``not_before_ns`` None means no
    lower bound is known for this gateway.
    """
    if reading_ts_ns > now_ns + max_future_ns:
        return FUTURE
    if not_before_ns is not None and reading_ts_ns < not_before_ns:
        return BEFORE_REGISTRATION
    return None


def config_not_before_ns(value: date | datetime | None) -> int | None:
    """``[ingest] not_before`` as ns since the epoch (a date means its 00:00 UTC)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1000


def quarantine_line(
    plantation: str, gateway: str, reading: Reading, reason: str, batch_id: str = ""
) -> str:
    """The ``farmtel_quarantine`` point for ``reading``, stamped with its own (doubtful) time.

    The original time keeps the write idempotent (a redelivery overwrites the same point);
    ``ts_ns`` repeats it as a field so a query over the ingest's own time range can show it.
    ``batch_id`` (stored as field ``batch`` when not empty) ties it to its signed batch.
    """
    fields: dict[str, float | int | str] = dict(reading.values)
    fields["seq"] = reading.seq
    fields["ts_ns"] = reading.ts
    fields["clock"] = reading.clock.value
    fields["kind"] = reading.kind
    fields["field"] = reading.field
    if reading.cal:
        fields["cal"] = reading.cal
    if batch_id:
        fields["batch"] = batch_id
    return encode_point(
        QUARANTINE_MEASUREMENT,
        {
            "plantation": plantation,
            "gateway": gateway,
            "sensor": reading.sensor,
            "reason": reason,
        },
        fields,
        reading.ts,
    )


def split_batch(
    plantation: str,
    batch: Batch,
    now_ns: int,
    not_before: int | None,
    max_future_ns: int,
) -> tuple[Batch, list[str]]:
    """``batch`` without its quarantined readings, and the quarantine lines for those.

    Returns ``batch`` itself (no copy) when every reading passes. Store the kept batch with
    ``batch_to_lines(plantation, kept, signed=batch)`` so its ``farmtel_batch`` point still
    describes what the gateway signed.
    """
    lines: list[str] = []
    kept: list[Reading] = []
    for r in batch.readings:
        reason = judge(r.ts, now_ns, not_before, max_future_ns)
        if reason is None:
            kept.append(r)
        else:
            lines.append(quarantine_line(plantation, batch.gateway, r, reason, batch.batch))
    if not lines:
        return batch, lines
    return batch.model_copy(update={"readings": kept}), lines
