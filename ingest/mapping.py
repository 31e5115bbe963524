"""How a batch becomes InfluxDB points: the storage schema, in one place.

- Readings: measurement = the reading's ``kind`` (``soil``, ``weather`` ...); tags
  ``plantation`` (from the topic), ``field``, ``gateway``, ``sensor``; fields = the values
  (floats), ``seq`` (integer), ``clock`` (string), ``cal`` (string, when calibrated);
  time = the gateway's timestamp in ns. A replayed reading lands on the same series and
  time and overwrites itself with identical values: writes are idempotent.
- Gaps: measurement ``farmtel_gap``; tags ``plantation``, ``gateway``, ``sensor`` (``*``
  for the whole gateway), ``reason``; fields ``end_ns``, ``duration_s``, ``detail``,
  ``batch``, and ``seq``/``count`` when sequence numbers were skipped; time = the gap's
  start.
- Batches: measurement ``farmtel_batch``, one point per batch, so an export can rebuild
  what the gateway signed (see contract/signing.py); tags ``plantation``, ``gateway``;
  fields ``batch``, ``boot``, ``first_seq``/``last_seq`` (-1 without readings; a batch's
  readings are a contiguous sequence range), ``readings``, ``gaps``, ``sig`` ("" when
  unsigned); time = when the gateway sent it.
"""

from contract.wire import Batch
from ingest.line_protocol import encode_point

GAP_MEASUREMENT = "farmtel_gap"
BATCH_MEASUREMENT = "farmtel_batch"
INTERNAL_PREFIX = "farmtel_"
"""Measurements farmtel writes for itself (gaps, self-metrics); a reading kind may not use it."""
WHOLE_GATEWAY = "*"


class MappingError(ValueError):
    pass


def batch_to_lines(plantation: str, batch: Batch) -> list[str]:
    """Line protocol for every reading and gap of ``batch``; ``MappingError`` if unstorable."""
    lines = []
    gateway = batch.gateway
    for r in batch.readings:
        if r.kind.startswith(INTERNAL_PREFIX):
            raise MappingError(
                f"reading kind {r.kind!r} uses the reserved prefix {INTERNAL_PREFIX}"
            )
        fields: dict[str, float | int | str] = dict(r.values)
        fields["seq"] = r.seq
        fields["clock"] = r.clock.value
        if r.cal:
            fields["cal"] = r.cal
        lines.append(
            encode_point(
                r.kind,
                {
                    "plantation": plantation,
                    "field": r.field,
                    "gateway": gateway,
                    "sensor": r.sensor,
                },
                fields,
                r.ts,
            )
        )
    for g in batch.gaps:
        gap_fields: dict[str, float | int | str] = {
            "end_ns": g.end,
            "duration_s": max(0, g.end - g.start) / 1e9,
            # Line protocol cannot carry a line break inside a string field.
            "detail": g.detail.replace("\r", " ").replace("\n", " "),
            "batch": batch.batch,
        }
        if g.seq is not None:
            gap_fields["seq"] = g.seq
            gap_fields["count"] = g.count
        lines.append(
            encode_point(
                GAP_MEASUREMENT,
                {
                    "plantation": plantation,
                    "gateway": gateway,
                    "sensor": g.sensor or WHOLE_GATEWAY,
                    "reason": g.reason,
                },
                gap_fields,
                g.start,
            )
        )
    seqs = [r.seq for r in batch.readings]
    lines.append(
        encode_point(
            BATCH_MEASUREMENT,
            {"plantation": plantation, "gateway": gateway},
            {
                "batch": batch.batch,
                "boot": batch.boot,
                "first_seq": min(seqs) if seqs else -1,
                "last_seq": max(seqs) if seqs else -1,
                "readings": len(batch.readings),
                "gaps": len(batch.gaps),
                "sig": batch.sig or "",
            },
            batch.sent,
        )
    )
    return lines
