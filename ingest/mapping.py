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
  unsigned), ``quarantined`` (how many of ``readings`` went to ``farmtel_quarantine``
  instead of being stored as data); time = when the gateway sent it. It describes the
  batch as the gateway signed it, quarantined readings included.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from math import isfinite
from operator import attrgetter

import msgspec
import orjson
from pydantic import ValidationError

from contract.wire import (
    MAX_BATCH_BYTES,
    SCHEMA_VERSION,
    Batch,
    ClockQuality,
    Gap,
    PlainGap,
    PlainReading,
    Reading,
    known_ident,
    known_value_name,
    plain_batch_decoder,
    plain_reading_dict,
    reading_from_wire,
)
from ingest.line_protocol import (
    MAX_TIME_NS,
    LineProtocolError,
    encode_point,
    encode_series,
    escape_field_key,
    float_text,
)

GAP_MEASUREMENT = "farmtel_gap"
BATCH_MEASUREMENT = "farmtel_batch"
INTERNAL_PREFIX = "farmtel_"
"""Measurements farmtel writes for itself (gaps, self-metrics); a reading kind may not use it."""
WHOLE_GATEWAY = "*"


class MappingError(ValueError):
    pass


_READING_TAG_KEYS = frozenset({"plantation", "field", "gateway", "sensor"})
_CACHE_LIMIT = 65_536
_heads: dict[tuple[str, str, str, str, str], str] = {}
"""(kind, plantation, field, gateway, sensor) -> the escaped series head of its lines."""
_value_keys: dict[str, str] = {}
"""Value name -> escaped field key, for names that are valid field keys and no tag key."""
_clock_fields = {c: f'clock="{c.value}"' for c in ClockQuality}


def _reading_line_slow(plantation: str, gateway: str, r: Reading) -> str:
    """The reference encoding of one reading: every check of encode_point, nothing cached."""
    if r.kind.startswith(INTERNAL_PREFIX):
        raise MappingError(f"reading kind {r.kind!r} uses the reserved prefix {INTERNAL_PREFIX}")
    fields: dict[str, float | int | str] = dict(r.values)
    fields["seq"] = r.seq
    fields["clock"] = r.clock.value
    if r.cal:
        fields["cal"] = r.cal
    return encode_point(
        r.kind,
        {"plantation": plantation, "field": r.field, "gateway": gateway, "sensor": r.sensor},
        fields,
        r.ts,
    )


def _reading_line(plantation: str, gateway: str, r: Reading) -> str:
    """One reading's line, the same text as :func:`_reading_line_slow` but ~4x faster.

    Profiles put encode_point at about half the ingest's CPU: a series head (measurement and
    sorted, escaped tags) and the escaped value names repeat in every batch, so they are
    checked once and cached; each value is still checked here. Anything unusual (a value
    name seen for the first time that is refused, a calibrated reading, a timestamp at the
    edge of the range, an unexpected type) goes through the slow path, which raises the
    errors.
    """
    key = (r.kind, plantation, r.field, gateway, r.sensor)
    head = _heads.get(key)
    if head is None:
        if r.kind.startswith(INTERNAL_PREFIX):
            raise MappingError(
                f"reading kind {r.kind!r} uses the reserved prefix {INTERNAL_PREFIX}"
            )
        head = encode_series(
            r.kind,
            {"plantation": plantation, "field": r.field, "gateway": gateway, "sensor": r.sensor},
        )
        if len(_heads) >= _CACHE_LIMIT:
            _heads.clear()
        _heads[key] = head
    ts = r.ts
    clock = _clock_fields.get(r.clock)
    if r.cal or clock is None or type(ts) is not int or not 0 <= ts <= MAX_TIME_NS:
        return _reading_line_slow(plantation, gateway, r)
    body = []
    for name, value in r.values.items():
        escaped = _value_keys.get(name)
        if escaped is None:
            escaped = _value_key(name)
            if escaped is None:
                return _reading_line_slow(plantation, gateway, r)
        if type(value) is not float or not isfinite(value):
            return _reading_line_slow(plantation, gateway, r)
        body.append(f"{escaped}={float_text(value)}")
    if not body or type(r.seq) is not int or not 0 <= r.seq < 2**63:
        return _reading_line_slow(plantation, gateway, r)
    return f"{head} {','.join(body)},seq={r.seq}i,{clock} {ts}"


def _value_key(name: str) -> str | None:
    """Cache and return ``name`` escaped, or None if the slow path must decide (and raise)."""
    if name in _READING_TAG_KEYS or name in ("seq", "clock", "cal"):
        return None
    try:
        escaped = escape_field_key(name)
    except LineProtocolError:
        return None
    if len(_value_keys) >= _CACHE_LIMIT:
        _value_keys.clear()
    _value_keys[name] = escaped
    return escaped


def batch_to_lines(plantation: str, batch: Batch, signed: Batch | None = None) -> list[str]:
    """Line protocol for every reading and gap of ``batch``; ``MappingError`` if unstorable.

    ``signed`` is the batch as the gateway sent and signed it when ``batch`` is that batch
    without its quarantined readings (ingest.quarantine.split_batch): the ``farmtel_batch``
    point then describes ``signed`` (seq range and count over all its readings) and counts
    the difference as ``quarantined``.
    """
    gateway = batch.gateway
    lines = [_reading_line(plantation, gateway, r) for r in batch.readings]
    lines += [_gap_line(plantation, gateway, batch.batch, g) for g in batch.gaps]
    whole = batch if signed is None else signed
    seqs = [r.seq for r in whole.readings]
    lines.append(
        _batch_line(
            plantation,
            gateway,
            batch,
            min(seqs) if seqs else -1,
            max(seqs) if seqs else -1,
            len(whole.readings),
            len(whole.readings) - len(batch.readings),
        )
    )
    return lines


def _gap_line(plantation: str, gateway: str, batch_id: str, g: Gap) -> str:
    gap_fields: dict[str, float | int | str] = {
        "end_ns": g.end,
        "duration_s": max(0, g.end - g.start) / 1e9,
        # Line protocol cannot carry a line break inside a string field.
        "detail": g.detail.replace("\r", " ").replace("\n", " "),
        "batch": batch_id,
    }
    if g.seq is not None:
        gap_fields["seq"] = g.seq
        gap_fields["count"] = g.count
    return encode_point(
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


def _batch_line(
    plantation: str,
    gateway: str,
    batch: Batch | WireBatch,
    first_seq: int,
    last_seq: int,
    readings: int,
    quarantined: int,
) -> str:
    return encode_point(
        BATCH_MEASUREMENT,
        {"plantation": plantation, "gateway": gateway},
        {
            "batch": batch.batch,
            "boot": batch.boot,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "readings": readings,
            "gaps": len(batch.gaps),
            "sig": batch.sig or "",
            "quarantined": quarantined,
        },
        batch.sent,
    )


# --- the plain path: payload -> lines without pydantic -------------------------------------


@dataclass(slots=True)
class WireBatch:
    """A batch taken by :func:`plain_batch_lines`: what the ingest needs of it, and its lines.

    Every check of ``contract.wire.decode_batch``, of :func:`batch_to_lines` and of the
    clock quarantine passed; the readings are as parsed (``contract.wire.PlainReading``).
    """

    gateway: str
    boot: str
    batch: str
    sent: int
    sig: str | None
    readings: list[PlainReading]
    gaps: list[Gap]
    lines: list[str]
    seqs: Sequence[int]
    """The readings' seq, one each; a ``range`` when they are consecutive and ascending.
    Its length is the number of readings, after ``readings`` are let go of too."""

    def let_go_of_readings(self) -> None:
        """Free the parsed readings once checked, for a caller that will not read them again.

        They are ~0.6 KB of objects a reading, against ~0.2 KB for its line: an ingest holding
        (write_concurrency + 2) writes of 10,000 lines while InfluxDB is down held ~50 MB
        more for them when they were dicts (~1 KB; tests/faults/test_faults.py).
        :meth:`model` refuses afterwards.
        """
        self.readings = []

    def model(self) -> Batch:
        """The :class:`Batch` (built on demand: alert rules want one)."""
        if len(self.readings) != len(self.seqs):
            raise RuntimeError(f"batch {self.batch}: its readings were let go of")
        return Batch.model_construct(
            gateway=self.gateway,
            boot=self.boot,
            batch=self.batch,
            sent=self.sent,
            readings=[reading_from_wire(plain_reading_dict(r)) for r in self.readings],
            gaps=self.gaps,
            sig=self.sig,
        )


_plain_heads: dict[tuple[str, str], dict[tuple[str, str, str], str]] = {}
"""(plantation, gateway) -> (kind, field, sensor) -> series head; valid ids only."""
_plain_value_keys: dict[str, str] = {}
"""Value name -> escaped field key, for names the contract and the mapping both accept."""
_plain_clocks = {c.value: f'clock="{c.value}"' for c in ClockQuality}
_plain_cals: dict[str, str] = {}
"""Calibration id -> ``,cal="..."`` (quoted), for ids that fit the contract and the line."""
_BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def _plain_head(
    heads: dict[tuple[str, str, str], str],
    key: tuple[str, str, str],
    plantation: str,
    gateway: str,
) -> str | None:
    kind, field, sensor = key
    if not (known_ident(kind) and known_ident(field) and known_ident(sensor)):
        return None
    if kind.startswith(INTERNAL_PREFIX):
        return None
    try:
        head = encode_series(
            kind, {"plantation": plantation, "field": field, "gateway": gateway, "sensor": sensor}
        )
    except LineProtocolError:
        return None
    if len(heads) >= _CACHE_LIMIT:
        heads.clear()
    heads[key] = head
    return head


def _plain_value_key(name: object) -> str | None:
    if not known_value_name(name) or not isinstance(name, str):
        return None
    escaped = _value_key(name)
    if escaped is None:
        return None
    if len(_plain_value_keys) >= _CACHE_LIMIT:
        _plain_value_keys.clear()
    _plain_value_keys[name] = escaped
    return escaped


def _plain_cal(cal: object) -> str | None:
    if type(cal) is not str or len(cal) > 128:
        return None
    try:
        quoted = encode_point("m", {}, {"cal": cal}, 0)
    except LineProtocolError:
        return None
    text = "," + quoted[2 : quoted.rindex(" ")]
    if len(_plain_cals) >= _CACHE_LIMIT:
        _plain_cals.clear()
    _plain_cals[cal] = text
    return text


def plain_batch_lines(
    plantation: str, gateway: str, payload: bytes, ts_low: int, ts_high: int
) -> WireBatch | None:
    """The batch in ``payload`` and its line protocol, if it takes no decision but "store".

    ``gateway`` is the topic's. Every reading must be dated within ``ts_low..ts_high`` (the
    clock quarantine's bounds). Returns None whenever anything is not plainly valid and
    storable (a batch that would be refused, dead-lettered or partly quarantined, or one in
    a form the agent does not send): the caller then takes the reference path
    (``decode_batch``, ``split_batch``, :func:`batch_to_lines`), which decides and says why.
    Where this returns a batch, that path stores the same lines (tests/test_fast_paths.py).

    It checks what pydantic, the line protocol and the quarantine would, a column of the
    readings at a time (:func:`_plain_reading_lines`), and writes the lines: profiles put
    pydantic and the line encoding at ~75 % of the ingest's CPU (docs/performance.md).
    """
    if len(payload) > MAX_BATCH_BYTES:
        return None
    try:
        raw = plain_batch_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):  # pydantic says what is wrong
        return None
    batch_id, rows = raw.batch, raw.readings
    if raw.v != SCHEMA_VERSION or raw.gateway != gateway or not _BATCH_ID_RE.match(batch_id):
        return None
    try:
        gaps: list[Gap] = []
        for g in raw.gaps:
            gap = _plain_gap(g)
            if gap is None:
                return None
            gaps.append(gap)
        heads = _plain_heads.get((plantation, gateway))
        if heads is None:
            if len(_plain_heads) >= _CACHE_LIMIT:
                _plain_heads.clear()
            heads = _plain_heads[(plantation, gateway)] = {}
        if rows:
            columns = _plain_reading_lines(
                rows, heads, plantation, gateway, max(ts_low, 0), min(ts_high, MAX_TIME_NS)
            )
            if columns is None:
                return None
            lines, seqs = columns
        else:
            lines, seqs = [], ()
        batch = WireBatch(gateway, raw.boot, batch_id, raw.sent, raw.sig, rows, gaps, lines, seqs)
        lines += [_gap_line(plantation, gateway, batch_id, g) for g in gaps]
        if seqs and seqs == tuple(range(seqs[0], seqs[0] + len(seqs))):
            batch.seqs = range(seqs[0], seqs[-1] + 1)
            first, last = seqs[0], seqs[-1]
        else:
            first, last = (min(seqs), max(seqs)) if seqs else (-1, -1)
        lines.append(_batch_line(plantation, gateway, batch, first, last, len(rows), 0))
    except (KeyError, TypeError, LineProtocolError):
        # An unstorable string, or anything else unforeseen: pydantic decides.
        return None
    return batch


_columns = tuple(map(attrgetter, ("ts", "clock", "seq", "values", "cal")))
"""One getter per field read as a column (half the time of one getter of them all and a zip)."""
_series_key = attrgetter("kind", "field", "sensor")
_VALUES_TO_FIELDS = bytes.maketrans(b":", b"=")


def _plain_reading_lines(
    rows: list[PlainReading],
    heads: dict[tuple[str, str, str], str],
    plantation: str,
    gateway: str,
    low: int,
    high: int,
) -> tuple[list[str], tuple[int, ...]] | None:
    """The lines and seqs of a batch's (non-empty) readings, or None to leave them to the
    reference path; the checks of :func:`plain_batch_lines`, made column by column.

    The decoder checked the types (strings, ints, ``seq`` in range, 1 to 64 float values);
    each other check runs over a whole column in C (``map``, ``set``, ``min``/``max``), and
    the values of all readings are formatted by one ``orjson.dumps``: a reading then costs a
    few hundred ns of Python, against ~3.5 us checked and formatted one at a time
    (``repr`` of three floats alone took 1.1 us; docs/performance.md).
    """
    stamps, clocks, seqs, values, cals = [tuple(map(get, rows)) for get in _columns]
    if min(stamps) < low or max(stamps) > high:
        return None
    # A value name must be one the contract and the line protocol both take unescaped: then
    # orjson's text of the values, without quotes and with '=' for ':', is their fields.
    value_keys = _plain_value_keys
    for name in set(chain.from_iterable(values)):
        if (value_keys.get(name) or _plain_value_key(name)) != name:
            return None
    text = orjson.dumps(values)
    if b":null" in text:  # orjson writes NaN and the infinities as null
        return None
    # '[{' + fields + '},{' + ... + '}]'; neither names nor numbers hold '{', '}' or '"'.
    bodies = text[2:-2].translate(_VALUES_TO_FIELDS, b'"').decode().split("},{")
    if len(bodies) != len(rows):
        return None
    clock_fields = list(map(_plain_clocks.get, clocks))
    if None in clock_fields:
        return None
    if not _NO_CAL.issuperset(cals):
        for i, cal in enumerate(cals):
            if cal is not None and cal != "":
                cal_field = _plain_cals.get(cal) or _plain_cal(cal)
                if cal_field is None:
                    return None
                clock_fields[i] = f"{clock_fields[i]}{cal_field}"
    series = list(map(heads.get, map(_series_key, rows)))
    if None in series:
        for i, key in enumerate(map(_series_key, rows)):
            if series[i] is None:
                head = _plain_head(heads, key, plantation, gateway)
                if head is None:
                    return None
                series[i] = head
    return [
        f"{head} {body},seq={seq}i,{clock} {ts}"
        for head, body, seq, clock, ts in zip(
            series, bodies, seqs, clock_fields, stamps, strict=True
        )
    ], seqs


_NO_CAL = frozenset({None, ""})


def _plain_gap(raw: PlainGap) -> Gap | None:
    """The :class:`Gap` of a gap as parsed, if plainly valid, else None."""
    if not (raw.sensor is None or known_ident(raw.sensor)):
        return None
    try:
        # Exact builtin types only, so pydantic's Python mode decides as on the JSON.
        return Gap.model_validate(msgspec.structs.asdict(raw))
    except ValidationError:
        return None
