"""The rows of a bundle's files: readings (CSV and JSON Lines), gaps, batches.

Export writes these and verify reads them back, so both import the formats from here.
Every reading row carries: plantation, field, gateway, sensor, kind, the UTC time
(RFC 3339 with nanoseconds) and ``ts_ns``, the clock flag, the gateway's sequence number,
the calibration version, the id of the signed batch it came in, and each value under its
own name, which holds the unit (``moisture_pct``, ``temp_c``). Values are written with
``repr(float)``: the shortest text that reads back to the same double, which is also what
the gateway signed (see contract/signing.py).
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

READING_FIXED_COLUMNS = (
    "plantation",
    "field",
    "gateway",
    "sensor",
    "kind",
    "time_utc",
    "ts_ns",
    "clock",
    "seq",
    "cal",
    "batch",
)
"""Leading columns of readings.csv; the value columns follow, sorted by name."""

GAP_COLUMNS = (
    "gateway",
    "sensor",
    "start_utc",
    "start_ns",
    "end_utc",
    "end_ns",
    "duration_s",
    "reason",
    "seq",
    "count",
    "batch",
    "detail",
)
"""Columns of gaps.csv. ``sensor`` is ``*`` for the whole gateway; ``seq``/``count`` are
empty when the gap skipped no sequence numbers."""


@dataclass(slots=True)
class ReadingRow:
    """One stored reading, as it goes into the bundle."""

    plantation: str
    field: str
    gateway: str
    sensor: str
    kind: str
    ts: int
    """Nanoseconds since the Unix epoch (the gateway clock)."""
    clock: str
    seq: int
    cal: str | None
    batch: str
    """Id of the batch record whose seq range holds this reading; "" when none does."""
    values: dict[str, float]
    """Value name (unit in the name) -> value; certify.source fills it in name order."""


@dataclass(slots=True)
class GapRow:
    """A declared period without data (measurement ``farmtel_gap``)."""

    gateway: str
    sensor: str
    """``*`` for the whole gateway."""
    start: int
    end: int
    reason: str
    seq: int | None
    count: int
    batch: str
    detail: str

    def overlaps(self, start: int, end: int) -> bool:
        """Whether the gap overlaps the period ``[start, end)``: what takes the batch that
        declared it into a bundle of that period (certify.export, checked by verify)."""
        return self.start < end and self.end >= start


@dataclass(slots=True)
class BatchRow:
    """A batch record (measurement ``farmtel_batch``): what a gateway signed."""

    batch: str
    gateway: str
    boot: str
    sent: int
    first_seq: int
    last_seq: int
    readings: int
    gaps: int
    sig: str
    quarantined: int = 0
    """How many of ``readings`` the ingest quarantined (in data/quarantined.jsonl)."""

    def meets(self, seqs: tuple[int, int] | None) -> bool:
        """Whether the batch's readings' seq range meets ``seqs`` (the lowest and highest seq
        of its gateway's readings dated in a period, None if it has none): what takes it
        into a bundle of that period (certify.export, checked by verify). A batch of gaps
        only (``first_seq`` < 0) meets none."""
        return (
            seqs is not None
            and self.first_seq >= 0
            and self.first_seq <= seqs[1]
            and self.last_seq >= seqs[0]
        )


_second_cache: dict[int, str] = {}


def rfc3339_ns(ts_ns: int) -> str:
    """``2026-11-29T08:15:06.123456789Z`` for a time in ns since the epoch (UTC)."""
    seconds, frac = divmod(ts_ns, 1_000_000_000)
    prefix = _second_cache.get(seconds)
    if prefix is None:
        if len(_second_cache) > 4096:
            _second_cache.clear()
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_cache[seconds] = prefix
    return f"{prefix}.{frac:09d}Z"


def csv_cell(text: str) -> str:
    """RFC 4180 quoting: only cells holding a comma, quote or line break are quoted."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_line(cells: Sequence[str]) -> str:
    return ",".join(csv_cell(c) for c in cells) + "\r\n"


def reading_csv_header(value_names: Sequence[str]) -> str:
    return csv_line([*READING_FIXED_COLUMNS, *value_names])


def reading_csv_line(row: ReadingRow, value_names: Sequence[str], time_utc: str = "") -> str:
    """One readings.csv line; absent values are empty cells. ``time_utc`` may be passed
    when the caller has already formatted ``row.ts``."""
    values = row.values
    cal = row.cal or ""
    if cal and any(c in cal for c in ',"\r\n'):
        cal = csv_cell(cal)
    cells = [
        row.plantation,
        row.field,
        row.gateway,
        row.sensor,
        row.kind,
        time_utc or rfc3339_ns(row.ts),
        str(row.ts),
        row.clock,
        str(row.seq),
        cal,
        row.batch,
    ]
    cells += [repr(values[n]) if n in values else "" for n in value_names]
    return ",".join(cells) + "\r\n"


def _in_order(values: dict[str, float]) -> bool:
    keys = list(values)
    return keys == sorted(keys)


def reading_json_line(row: ReadingRow, time_utc: str = "") -> bytes:
    """One readings.jsonl line (keys in a fixed order, values sorted by name)."""
    return (
        orjson.dumps(
            {
                "plantation": row.plantation,
                "field": row.field,
                "gateway": row.gateway,
                "sensor": row.sensor,
                "kind": row.kind,
                "time_utc": time_utc or rfc3339_ns(row.ts),
                "ts_ns": row.ts,
                "clock": row.clock,
                "seq": row.seq,
                "cal": row.cal,
                "batch": row.batch,
                "values": row.values if _in_order(row.values) else dict(sorted(row.values.items())),
            }
        )
        + b"\n"
    )


class RowError(ValueError):
    """A bundle row is malformed; the message says which part."""


def _int(obj: Mapping[str, Any], key: str) -> int:
    v = obj.get(key)
    if type(v) is not int:
        raise RowError(f"{key} is {v!r}, not an integer")
    return v


def _str(obj: Mapping[str, Any], key: str) -> str:
    v = obj.get(key)
    if type(v) is not str or not v:
        raise RowError(f"{key} is {v!r}, not a non-empty string")
    return v


READING_JSON_KEYS = (
    "plantation",
    "field",
    "gateway",
    "sensor",
    "kind",
    "time_utc",
    "ts_ns",
    "clock",
    "seq",
    "cal",
    "batch",
    "values",
)
"""The keys of a readings.jsonl row, in the order :func:`reading_json_line` writes them."""


def parse_reading_json(line: bytes) -> tuple[ReadingRow, str]:
    """A readings.jsonl line back into ``(row, time_utc)``; :class:`RowError` says what is
    wrong.

    Strict: exactly the keys of :func:`reading_json_line`, each of its type, and
    ``time_utc`` must be ``ts_ns`` formatted, so two texts never mean the same row.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise RowError(f"not JSON ({err})") from None
    if type(obj) is not dict or len(obj) != 12:
        raise RowError("not a JSON object with the 12 keys of a reading row")
    try:
        plantation, field, gateway, sensor, kind = (
            obj["plantation"],
            obj["field"],
            obj["gateway"],
            obj["sensor"],
            obj["kind"],
        )
        ts, clock, seq, cal, batch, values = (
            obj["ts_ns"],
            obj["clock"],
            obj["seq"],
            obj["cal"],
            obj["batch"],
            obj["values"],
        )
        time_utc = obj["time_utc"]
    except KeyError as err:
        raise RowError(f"has no {err.args[0]!r} key") from None
    if not (
        type(plantation) is str
        and type(field) is str
        and type(gateway) is str
        and type(sensor) is str
        and type(kind) is str
        and type(clock) is str
        and type(batch) is str
        and plantation
        and field
        and gateway
        and sensor
        and kind
        and clock
    ):
        raise RowError("plantation, field, gateway, sensor, kind, clock and batch must be text")
    if type(ts) is not int or type(seq) is not int:
        raise RowError(f"ts_ns {ts!r} and seq {seq!r} must be integers")
    if cal is not None and type(cal) is not str:
        raise RowError(f"cal is {cal!r}, not a string or null")
    if type(values) is not dict or not values:
        raise RowError("values is not a non-empty object")
    for k, v in values.items():
        if type(v) is not float:
            raise RowError(f"value {k} is {v!r}, not a float")
    if time_utc != rfc3339_ns(ts):
        raise RowError(f"time_utc {time_utc!r} does not match ts_ns {ts}")
    row = ReadingRow(plantation, field, gateway, sensor, kind, ts, clock, seq, cal, batch, values)
    return row, time_utc


def gap_csv_line(gap: GapRow) -> str:
    return csv_line(csv_cells(gap))


def parse_gap_cells(cells: Sequence[str]) -> GapRow:
    """A gaps.csv row (already split by the csv module) back into a gap."""
    if len(cells) != len(GAP_COLUMNS):
        raise RowError(f"has {len(cells)} cells, not {len(GAP_COLUMNS)}")
    try:
        gap = GapRow(
            gateway=cells[0],
            sensor=cells[1],
            start=int(cells[3]),
            end=int(cells[5]),
            reason=cells[7],
            seq=int(cells[8]) if cells[8] else None,
            count=int(cells[9]),
            batch=cells[10],
            detail=cells[11],
        )
    except ValueError as err:
        raise RowError(f"a number cell is not an integer ({err})") from None
    if not gap.gateway or not gap.sensor or not gap.reason or not gap.batch:
        raise RowError("gateway, sensor, reason and batch must not be empty")
    if list(cells) != list(csv_cells(gap)):
        raise RowError("cells are not in the canonical form (times, duration or spacing differ)")
    return gap


def csv_cells(gap: GapRow) -> list[str]:
    return [
        gap.gateway,
        gap.sensor,
        rfc3339_ns(gap.start),
        str(gap.start),
        rfc3339_ns(gap.end),
        str(gap.end),
        repr(max(0, gap.end - gap.start) / 1e9),
        gap.reason,
        "" if gap.seq is None else str(gap.seq),
        str(gap.count),
        gap.batch,
        gap.detail,
    ]


def batch_json_line(b: BatchRow) -> bytes:
    return (
        orjson.dumps(
            {
                "batch": b.batch,
                "gateway": b.gateway,
                "boot": b.boot,
                "sent_utc": rfc3339_ns(b.sent),
                "sent_ns": b.sent,
                "first_seq": b.first_seq,
                "last_seq": b.last_seq,
                "readings": b.readings,
                "gaps": b.gaps,
                "sig": b.sig,
                "quarantined": b.quarantined,
            }
        )
        + b"\n"
    )


def parse_batch_json(line: bytes) -> BatchRow:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise RowError(f"not JSON ({err})") from None
    if type(obj) is not dict:
        raise RowError("not a JSON object")
    sig = obj.get("sig")
    if type(sig) is not str:
        raise RowError(f"sig is {sig!r}, not a string")
    # Absent in bundles written before quarantined readings were exported.
    quarantined = _int(obj, "quarantined") if "quarantined" in obj else 0
    if not 0 <= quarantined <= _int(obj, "readings"):
        raise RowError(f"quarantined is {quarantined}, not between 0 and readings")
    return BatchRow(
        _str(obj, "batch"),
        _str(obj, "gateway"),
        _str(obj, "boot"),
        _int(obj, "sent_ns"),
        _int(obj, "first_seq"),
        _int(obj, "last_seq"),
        _int(obj, "readings"),
        _int(obj, "gaps"),
        sig,
        quarantined,
    )


def quarantine_json_line(row: ReadingRow, reason: str) -> bytes:
    """One quarantined.jsonl line: a readings.jsonl row plus ``quarantine_reason`` last."""
    line = reading_json_line(row)  # ends with b"}\n"
    return line[:-2] + b',"quarantine_reason":' + orjson.dumps(reason) + b"}\n"


def parse_quarantine_json(line: bytes) -> tuple[ReadingRow, str]:
    """A quarantined.jsonl line back into ``(row, reason)``; :class:`RowError` says what is
    wrong (as strict as :func:`parse_reading_json`, and the reason must be non-empty text)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise RowError(f"not JSON ({err})") from None
    if type(obj) is not dict:
        raise RowError("not a JSON object")
    reason = obj.pop("quarantine_reason", None)
    if type(reason) is not str or not reason:
        raise RowError(f"quarantine_reason is {reason!r}, not a non-empty string")
    row, _ = parse_reading_json(orjson.dumps(obj))
    return row, reason
