"""Streaming reads from InfluxDB for an export: readings, gaps and batch records.

The readings of a period are read in time slices (:func:`reading_slices`): InfluxDB counts
the readings per time bucket, the period is cut where a slice would pass ``SLICE_ROWS``,
and each slice is one request of ``SELECT * FROM <kind> WHERE time >= $start AND time < $end
GROUP BY *`` per kind: its answer is one series per sensor with the tags said once, cheaper
for the server to write and for us to read than rows that repeat them (measured on 1M
readings: about 40 % of InfluxDB's CPU time for the pages below, and a third of the JSON
decoding). Slices do not
overlap, so no row is read twice or missed whatever timestamps the series share; the next
two slices are fetched in parallel while one is written, so the server uses both cores.

Other raw InfluxQL queries come back as one JSON document, so a large range is read in pages:
``WHERE time >= $cursor ... ORDER BY time LIMIT n`` per reading kind (measurement), with
the cursor moved to the last timestamp of a full page. Rows at that last timestamp are held
back and read again with the next page, so no row is lost or doubled when several series
share a timestamp. Memory stays at one page per kind whatever the period.

Every user-given value is a bound parameter; measurement names come from the server and
are quoted.
"""

import bisect
import itertools
import queue
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from certify.rows import BatchRow, GapRow, ReadingRow
from ingest.influx import InfluxQuery, RawAnswer, Series, quote_ident
from ingest.mapping import BATCH_MEASUREMENT, GAP_MEASUREMENT, INTERNAL_PREFIX, WHOLE_GATEWAY
from ingest.quarantine import QUARANTINE_MEASUREMENT

TAG_KEYS = ("plantation", "field", "gateway", "sensor")
BOOKKEEPING = frozenset({"time", "seq", "clock", "cal", *TAG_KEYS})
PAGE_ROWS = 10_000
"""Rows per query page: about 2.5 MB of JSON, a fraction of a second for the server. With
one page being written and one fetched ahead per kind, this bounds an export's memory."""
SLICE_ROWS = 40_000
"""Readings per time slice, at most (unless more share one nanosecond): about 2.5 MB of
JSON, 12 MB parsed and 40 MB while being formatted; an export of 1M readings peaked at
~150 MB RSS (~180 MB with 50,000). A query costs InfluxDB a fixed part besides its rows
(measured on a 2-core x86 box, 1M readings: 20 slices of 50,000 cost it about 8 CPU s,
100 slices of 10,000 about 16): much smaller slices cost it far more."""
PLAN_BUCKETS = 256
"""Time buckets per count query when planning slices."""
SLICES_AHEAD = 2
"""Slices fetched (in parallel) while one is written."""


class SourceError(RuntimeError):
    """The store holds something an export cannot represent; the message says what."""


@dataclass(frozen=True)
class Span:
    """``[start_ns, end_ns)`` in ns since the epoch."""

    start_ns: int
    end_ns: int


def reading_kinds(client: InfluxQuery) -> list[str]:
    """Measurements that hold readings (every measurement not named ``farmtel_...``)."""
    names: list[str] = []
    for s in client.query("SHOW MEASUREMENTS"):
        names.extend(str(v[0]) for v in s.values)
    return sorted(n for n in names if not n.startswith(INTERNAL_PREFIX))


def value_names(client: InfluxQuery, kinds: list[str]) -> list[str]:
    """Every float field of the reading kinds: the value columns of readings.csv."""
    names: set[str] = set()
    for kind in kinds:
        for s in client.query(f"SHOW FIELD KEYS FROM {quote_ident(kind)}"):
            for name, ftype in s.values:
                if name not in BOOKKEEPING and ftype in ("float", "integer"):
                    names.add(str(name))
    return sorted(names)


def clock_kinds(client: InfluxQuery, kinds: list[str]) -> list[str]:
    """The reading kinds that have a ``clock`` field (farmtel's ingest writes one always)."""
    return [
        kind
        for kind in kinds
        if any(
            row[0] == "clock"
            for s in client.query(f"SHOW FIELD KEYS FROM {quote_ident(kind)}")
            for row in s.values
        )
    ]


def seq_bounds(
    client: InfluxQuery, plantation: str, kinds: list[str], span: Span
) -> dict[str, tuple[int, int]]:
    """``gateway -> (lowest seq, highest seq)`` of the readings in ``span``."""
    bounds: dict[str, tuple[int, int]] = {}
    for kind in kinds:
        for s in client.query(
            f"SELECT min(seq), max(seq) FROM {quote_ident(kind)} WHERE plantation = $p "
            'AND time >= $start AND time < $end GROUP BY "gateway"',
            params={"p": plantation, "start": span.start_ns, "end": span.end_ns},
        ):
            gw = s.tags.get("gateway", "")
            for row in s.values:
                lo, hi = row[1], row[2]
                if lo is None or hi is None:
                    continue
                old = bounds.get(gw)
                bounds[gw] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return bounds


def _fetch_pages(
    client: InfluxQuery,
    measurement: str,
    where: str,
    params: Mapping[str, str | int | float],
    span: Span,
    page_rows: int,
) -> Iterator[tuple[list[str], list[list[Any]]]]:
    """``(columns, rows)`` pages of every point of ``measurement`` in ``span`` that ``where``
    keeps, in time order. The rows at a full page's last timestamp are held back and read
    again at the start of the next page, so none is lost or doubled."""
    cursor = span.start_ns
    offset = 0
    q = (
        f"SELECT * FROM {quote_ident(measurement)} WHERE {where} AND time >= $cursor "
        f"AND time < $end ORDER BY time ASC LIMIT {page_rows}"
    )
    while True:
        bound = {**params, "cursor": cursor, "end": span.end_ns}
        series: list[Series] = client.query(
            q + (f" OFFSET {offset}" if offset else ""), params=bound
        )
        values = series[0].values if series else []
        columns = series[0].columns if series else []
        if len(values) < page_rows:
            if values:
                yield columns, values
            return
        last = values[-1][0]
        if values[0][0] == last:
            # A whole page at one timestamp: step through it with OFFSET (more series than
            # a page at one nanosecond; rare).
            yield columns, values
            offset += len(values)
            continue
        offset = 0
        cut = len(values) - 1
        while values[cut][0] == last:
            cut -= 1
        yield columns, values[: cut + 1]
        cursor = last


def _kinds_from(kinds: list[str]) -> str:
    return ", ".join(quote_ident(k) for k in kinds)


def _bucket_counts(
    client: InfluxQuery, plantation: str, kinds: list[str], span: Span, width_ns: int
) -> list[tuple[int, int]]:
    """``(bucket start, readings)`` of the non-empty ``width_ns`` buckets of ``span``."""
    counts: dict[int, int] = {}
    for s in client.query(
        f"SELECT count(seq) FROM {_kinds_from(kinds)} WHERE plantation = $p "
        f"AND time >= $start AND time < $end GROUP BY time({int(width_ns)}ns) fill(none)",
        params={"p": plantation, "start": span.start_ns, "end": span.end_ns},
    ):
        for t, n in s.values:
            if n:
                counts[int(t)] = counts.get(int(t), 0) + int(n)
    return sorted(counts.items())


@dataclass(frozen=True)
class SlicePlan:
    """How an export reads a period's readings (:func:`plan_slices`)."""

    slices: list[Span]
    """Consecutive, covering the period exactly (none when there is no reading kind)."""
    readings: int
    """Readings (points with a seq) in the period."""
    counts: list[int]
    """Readings in each slice, as InfluxDB counted them: a slice that comes back with
    fewer was cut short (an ``[http] max-row-limit`` below the slice size)."""


def plan_slices(
    client: InfluxQuery,
    plantation: str,
    kinds: list[str],
    span: Span,
    rows: int = SLICE_ROWS,
) -> SlicePlan:
    """Consecutive slices that cover ``span`` exactly, each holding at most ``rows``
    readings unless more share one nanosecond; and the number of readings.

    InfluxDB counts the readings in ``PLAN_BUCKETS`` buckets; a bucket holding more than
    ``rows`` is counted again in finer buckets. Slices are cut at bucket edges only, so they
    cover the span whatever the counts say.
    """
    if not kinds:
        return SlicePlan([], 0, [])
    cuts: list[int] = []
    counted: list[tuple[int, int]] = []
    total = _plan(client, plantation, kinds, span, max(1, rows), cuts, counted)
    edges = [span.start_ns, *cuts, span.end_ns]
    slices = [Span(a, b) for a, b in itertools.pairwise(edges) if a < b]
    counts = [0] * len(slices)
    starts = [sl.start_ns for sl in slices]
    for t, n in counted:  # each counted bucket lies inside one slice
        counts[bisect.bisect_right(starts, t) - 1] += n
    return SlicePlan(slices, total, counts)


def _plan(
    client: InfluxQuery,
    plantation: str,
    kinds: list[str],
    span: Span,
    rows: int,
    cuts: list[int],
    counted: list[tuple[int, int]],
) -> int:
    """Append to ``cuts`` the times inside ``span`` where a slice starts, and to
    ``counted`` ``(start, readings)`` of the buckets not counted again; return the number
    of readings in ``span``."""
    width = max(1, -(-(span.end_ns - span.start_ns) // PLAN_BUCKETS))
    total = 0
    held = 0  # readings since the last cut
    for t, n in _bucket_counts(client, plantation, kinds, span, width):
        lo, hi = max(t, span.start_ns), min(t + width, span.end_ns)
        total += n
        if n > rows and hi - lo > 1:
            if held and lo > span.start_ns:
                cuts.append(lo)
            _plan(client, plantation, kinds, Span(lo, hi), rows, cuts, counted)
            if hi < span.end_ns:
                cuts.append(hi)
            held = 0
            continue
        if held and held + n > rows:
            cuts.append(lo)
            held = 0
        held += n
        counted.append((lo, n))
    return total


def _slice_query(kinds: list[str]) -> str:
    # One statement per kind, in one request: each kind's series then have only its own
    # columns (a statement over several measurements gives every series the union of
    # their fields, nulls included), and InfluxDB answers about a quarter faster.
    return "; ".join(
        f"SELECT * FROM {quote_ident(kind)} WHERE plantation = $p AND time >= $start "
        "AND time < $end GROUP BY *"
        for kind in kinds
    )


def fetch_slice(client: InfluxQuery, plantation: str, kinds: list[str], span: Span) -> list[Series]:
    """Every point of the reading ``kinds`` in ``span``: one series per measurement and
    tag set, each in time order."""
    return client.query(
        _slice_query(kinds),
        params={"p": plantation, "start": span.start_ns, "end": span.end_ns},
    )


def reading_slices(
    client: InfluxQuery,
    plantation: str,
    kinds: list[str],
    slices: list[Span],
    ahead: int = SLICES_AHEAD,
) -> Iterator[list[Series]]:
    """What :func:`fetch_slice` gives for each slice, in order. The next ``ahead`` slices
    are fetched in parallel while the caller works on one, and kept as JSON until their
    turn (parsed, a slice takes about five times the room)."""
    if not kinds or not slices:
        return
    ahead = max(1, ahead)
    q = _slice_query(kinds)

    def fetch(span: Span) -> RawAnswer:
        return client.query_raw(
            q, params={"p": plantation, "start": span.start_ns, "end": span.end_ns}
        )

    pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="influx-slice")
    pending: deque[Future[RawAnswer]] = deque()
    todo = iter(slices)
    try:
        for sl in itertools.islice(todo, ahead):
            pending.append(pool.submit(fetch, sl))
        while pending:
            raw = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(fetch, nxt))
            series = client.parse(raw)
            del raw
            yield series
            del series
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


_DONE = object()


def _prefetched(pages: Iterator[Any], depth: int = 1) -> Iterator[Any]:
    """Run ``pages`` in a thread, ``depth`` pages ahead: InfluxDB prepares the next page
    (on another core) while this process writes the current one."""
    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                while not stop.is_set():
                    try:
                        box.put(page, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(_DONE)
        except BaseException as err:  # handed to the consumer, which raises it
            box.put(err)

    worker = threading.Thread(target=produce, name="influx-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _paged(
    client: InfluxQuery,
    measurement: str,
    where: str,
    params: Mapping[str, str | int | float],
    span: Span,
    page_rows: int = PAGE_ROWS,
) -> Iterator[tuple[list[str], list[Any]]]:
    """``(columns, row)`` of every point, in time order, one or two pages in memory."""
    for columns, rows in _prefetched(
        _fetch_pages(client, measurement, where, params, span, page_rows)
    ):
        for v in rows:
            yield columns, v


def readings(
    client: InfluxQuery,
    plantation: str,
    kind: str,
    span: Span,
    where_extra: str = "",
    params_extra: Mapping[str, str | int | float] | None = None,
    page_rows: int = PAGE_ROWS,
) -> Iterator[ReadingRow]:
    """The readings of one kind in ``span``, in time order (``batch`` left empty).

    Raises :class:`SourceError` for a point without an integer ``seq`` (not farmtel's).
    """
    where = "plantation = $p" + where_extra
    params: dict[str, str | int | float] = {"p": plantation, **(params_extra or {})}
    pages = _prefetched(_fetch_pages(client, kind, where, params, span, page_rows))
    for columns, rows in pages:
        index = {c: i for i, c in enumerate(columns)}
        # Sorted by name: a row's values dict is then in the order the files list them.
        value_cols = sorted((c, i) for c, i in index.items() if c not in BOOKKEEPING)
        i_seq = index.get("seq")
        i_gw = index.get("gateway")
        i_field = index.get("field")
        i_sensor = index.get("sensor")
        i_clock = index.get("clock")
        i_cal = index.get("cal")
        if None in (i_seq, i_gw, i_field, i_sensor, i_clock):
            raise SourceError(
                f"measurement {kind} lacks the seq, clock, field, gateway or sensor column; "
                "it was not written by farmtel's ingest"
            )
        assert i_seq is not None and i_gw is not None and i_field is not None
        assert i_sensor is not None and i_clock is not None
        for v in rows:
            seq = v[i_seq]
            if type(seq) is not int:
                raise SourceError(
                    f"a {kind} point at {v[0]} ns of gateway {v[i_gw]} has no integer seq "
                    "field; it was not written by farmtel's ingest"
                )
            cal = v[i_cal] if i_cal is not None else None
            yield ReadingRow(
                plantation,
                v[i_field] or "",
                v[i_gw] or "",
                v[i_sensor] or "",
                kind,
                v[0],
                v[i_clock] or "",
                seq,
                cal or None,
                "",
                {
                    c: float(x)
                    for c, i in value_cols
                    if (x := v[i]) is not None and not isinstance(x, str | bool)
                },
            )


def gaps(
    client: InfluxQuery, plantation: str, span: Span, batch: str | None = None
) -> Iterator[GapRow]:
    """Gap points whose start lies in ``span`` (of batch ``batch`` only, if given), in time
    order."""
    where = "plantation = $p"
    params: dict[str, str | int | float] = {"p": plantation}
    if batch is not None:
        where += ' AND "batch" = $b'
        params["b"] = batch
    for columns, v in _paged(client, GAP_MEASUREMENT, where, params, span):
        rec = dict(zip(columns, v, strict=True))
        seq = rec.get("seq")
        yield GapRow(
            gateway=str(rec.get("gateway") or ""),
            sensor=str(rec.get("sensor") or WHOLE_GATEWAY),
            start=int(v[0]),
            end=int(rec.get("end_ns") or v[0]),
            reason=str(rec.get("reason") or ""),
            seq=seq if type(seq) is int else None,
            count=int(rec.get("count") or 0),
            batch=str(rec.get("batch") or ""),
            detail=str(rec.get("detail") or ""),
        )


def batches(client: InfluxQuery, plantation: str, span: Span) -> Iterator[BatchRow]:
    """Batch records sent in ``span``, in time order."""
    for columns, v in _paged(client, BATCH_MEASUREMENT, "plantation = $p", {"p": plantation}, span):
        rec = dict(zip(columns, v, strict=True))
        yield BatchRow(
            batch=str(rec.get("batch") or ""),
            gateway=str(rec.get("gateway") or ""),
            boot=str(rec.get("boot") or ""),
            sent=int(v[0]),
            first_seq=int(rec.get("first_seq", -1) if rec.get("first_seq") is not None else -1),
            last_seq=int(rec.get("last_seq", -1) if rec.get("last_seq") is not None else -1),
            readings=int(rec.get("readings") or 0),
            gaps=int(rec.get("gaps") or 0),
            sig=str(rec.get("sig") or ""),
            quarantined=int(rec.get("quarantined") or 0),
        )


QUARANTINE_BOOKKEEPING = frozenset(
    {"time", "seq", "ts_ns", "clock", "kind", "cal", "batch", "reason", *TAG_KEYS}
)
"""Columns of ``farmtel_quarantine`` that are not reading values."""


def quarantined_rows(
    client: InfluxQuery, plantation: str, ranges: Mapping[str, tuple[int, int]]
) -> Iterator[tuple[ReadingRow, str]]:
    """``(row, reason)`` for every quarantined reading (measurement ``farmtel_quarantine``)
    of a gateway in ``ranges`` (gateway -> inclusive seq range), by gateway then seq.

    Their time is wrong by definition, so there is no time bound. ``row.batch`` is the
    point's ``batch`` field ("" for points written before it was stored); ``row.ts`` is
    the original timestamp. Raises :class:`SourceError` for a point without an integer
    ``seq`` or without ``kind``/``field``/``clock``.
    """
    for gw, (lo, hi) in sorted(ranges.items()):
        found: list[tuple[ReadingRow, str]] = []
        for s in client.query(
            f"SELECT * FROM {quote_ident(QUARANTINE_MEASUREMENT)} WHERE plantation = $p "
            "AND gateway = $g AND seq >= $lo AND seq <= $hi",
            params={"p": plantation, "g": gw, "lo": lo, "hi": hi},
        ):
            for v in s.values:
                rec = dict(zip(s.columns, v, strict=True))
                seq, kind = rec.get("seq"), rec.get("kind")
                field_, clock = rec.get("field"), rec.get("clock")
                if type(seq) is not int or not kind or not field_ or not clock:
                    raise SourceError(
                        f"a {QUARANTINE_MEASUREMENT} point of gateway {gw} at {v[0]} ns lacks "
                        "an integer seq, kind, field or clock; it was not written by farmtel's "
                        "ingest"
                    )
                ts = rec.get("ts_ns")
                row = ReadingRow(
                    plantation,
                    str(field_),
                    gw,
                    str(rec.get("sensor") or ""),
                    str(kind),
                    ts if type(ts) is int else int(v[0]),
                    str(clock),
                    seq,
                    str(rec["cal"]) if rec.get("cal") else None,
                    str(rec.get("batch") or ""),
                    {
                        c: float(x)
                        for c, x in sorted(rec.items())
                        if c not in QUARANTINE_BOOKKEEPING
                        and x is not None
                        and not isinstance(x, str | bool)
                    },
                )
                found.append((row, str(rec.get("reason") or "")))
        found.sort(key=lambda rr: rr[0].seq)
        yield from found
