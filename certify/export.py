"""``farmtel export``: a plantation's history as a sealed BagIt bundle.

What goes in (all under ``data/``): readings.csv and readings.jsonl (one row per reading,
time order), gaps.csv, batches.jsonl (the gateways' signed batch records), registry.json
(gateways, keys, history, calibration versions in use), completeness.csv and report.html,
and quarantined.jsonl: the readings of the exported batches that the ingest quarantined
(an impossible timestamp, see ingest/quarantine.py). They are not data (not in readings or
completeness) but the gateway signed them with their batch, so verify needs them.

Which rows: every reading dated inside ``[from, to)``; every batch record whose sequence
range holds one of them, or that declared a gap overlapping the period; and, so that every
batch signature can be checked, the few readings of those batches that lie just outside
the period (marked by their time) and every gap they declared. Readings of a batch dated
outside the period away from its edges (a gateway clock that stepped) are appended last.
Batch records and gaps are looked for from ``LOOKBACK_NS`` before the period to
``LOOKAHEAD_NS`` after it (a gateway that was offline sends its backlog late); a chosen
batch's gaps that start earlier still (the first pieces of a downtime of months) are looked
up by its batch id.

Memory stays flat: readings stream from InfluxDB a time slice at a time (certify.source),
formatted a column at a time (certify.columns) into the files, hashed as they are written
by a writer thread; what is kept is per sensor and per day (statistics), per batch
(records) and per gap.
"""

import bisect
import contextlib
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certify import source
from certify.bag import BagWriter, HashingWriter
from certify.columns import BatchSteps, ColumnError, SliceFormatter
from certify.report import ExportStats, render_html
from certify.rows import (
    GAP_COLUMNS,
    BatchRow,
    GapRow,
    ReadingRow,
    batch_json_line,
    csv_line,
    gap_csv_line,
    quarantine_json_line,
    reading_csv_header,
    reading_csv_line,
    reading_json_line,
    rfc3339_ns,
)
from certify.source import Span
from contract import signing
from contract.ids import check_ident
from contract.wire import iso_utc
from ingest.influx import InfluxQuery
from ingest.line_protocol import MAX_TIME_NS

LOOKBACK_NS = 31 * 86_400 * 1_000_000_000
LOOKAHEAD_NS = 31 * 86_400 * 1_000_000_000
BUNDLE_FORMAT = "farmtel-bundle-v1"
MAX_SHORT_BATCHES = 1_000
"""Batches whose missing readings are searched for outside the period, at most."""


@dataclass
class ExportSummary:
    """What an export wrote, and what a certifier will find wrong with it."""

    out: Path
    readings: int = 0
    outside_period: int = 0
    gaps: int = 0
    batches: int = 0
    unsigned_batches: int = 0
    unbatched_readings: int = 0
    quarantined: int = 0
    """Readings written to data/quarantined.jsonl (not counted in ``readings``)."""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


class _BatchIndex:
    """Finds the batch record whose seq range holds a gateway's seq."""

    def __init__(self, batches: Iterable[BatchRow]) -> None:
        self._by_gw: dict[str, tuple[list[int], list[BatchRow]]] = {}
        for b in sorted(batches, key=lambda b: (b.gateway, b.first_seq)):
            if b.first_seq < 0:
                continue
            firsts, rows = self._by_gw.setdefault(b.gateway, ([], []))
            firsts.append(b.first_seq)
            rows.append(b)

    def steps(self) -> dict[str, BatchSteps]:
        """The same lookup per gateway, as step functions for whole columns of seqs."""
        return {gw: BatchSteps.build(rows) for gw, (_, rows) in self._by_gw.items()}

    def find(self, gateway: str, seq: int) -> BatchRow | None:
        entry = self._by_gw.get(gateway)
        if entry is None:
            return None
        i = bisect.bisect_right(entry[0], seq) - 1
        if i >= 0 and entry[1][i].last_seq >= seq:
            return entry[1][i]
        return None


class _Writers:
    """readings.csv and readings.jsonl, written and hashed by a thread: hashing and disk
    writes (which release the GIL) overlap the formatting of the next slice."""

    def __init__(self, csv: HashingWriter, jsonl: HashingWriter) -> None:
        self._csv = csv
        self._jsonl = jsonl
        self._queue: queue.Queue[tuple[list[bytes], list[bytes]] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bundle-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain until close()
            try:
                for data in item[0]:
                    self._csv.write(data)
                for data in item[1]:
                    self._jsonl.write(data)
            except BaseException as err:  # raised in the exporting thread
                self._error = err

    def write(self, csv: list[bytes], jsonl: list[bytes]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((csv, jsonl))

    def close(self) -> None:
        """Wait for every write; raise the first that failed."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


class Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("export readings", total=total)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _edge_readings(
    client: InfluxQuery,
    plantation: str,
    kinds: list[str],
    gateway: str,
    seq_lo: int,
    seq_hi: int,
    span: Span,
) -> list[ReadingRow]:
    """Readings of ``gateway`` with seq in ``[seq_lo, seq_hi]`` dated in ``span``."""
    rows: list[ReadingRow] = []
    for kind in kinds:
        rows.extend(
            source.readings(
                client,
                plantation,
                kind,
                span,
                where_extra=" AND gateway = $gw AND seq >= $slo AND seq <= $shi",
                params_extra={"gw": gateway, "slo": seq_lo, "shi": seq_hi},
            )
        )
    rows.sort(key=lambda r: (r.ts, r.gateway, r.seq))
    return rows


def export_bundle(
    client: InfluxQuery,
    plantation: str,
    span: Span,
    out: Path,
    org_key: Ed25519PrivateKey,
    registry: dict[str, Any],
    progress: bool = False,
    page_rows: int = source.SLICE_ROWS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ExportSummary:
    """Write the bundle for ``plantation`` over ``span`` into the new folder ``out``.

    Raises ``ValueError`` for a bad plantation id, certify.bag.BagError when ``out`` is not
    a new or empty folder, ingest.influx.InfluxError when the server fails, and
    certify.source.SourceError for points farmtel did not write.
    """
    check_ident(plantation, "--plantation")
    bag = BagWriter(out)
    try:
        return _export(client, plantation, span, bag, org_key, registry, progress, page_rows, now)
    except BaseException:
        bag.abort()
        raise


def _gaps_before_lookback(
    client: InfluxQuery, plantation: str, chosen: list[BatchRow], found: list[GapRow]
) -> list[GapRow]:
    """The gaps of ``chosen`` batches that start before the lookback (the early pieces of a
    downtime of months): every gap a batch signed must be in the bundle for its signature
    to check. Looked up by batch id, only for batches short of their record's count."""

    def key(g: GapRow) -> tuple[str, int, str, str]:
        return (g.gateway, g.start, g.sensor, g.reason)  # a gap point's series and time

    have = Counter(g.batch for g in found)
    keys = set(map(key, found))
    extra: list[GapRow] = []
    for b in chosen:
        if b.gaps <= have[b.batch]:
            continue
        for g in source.gaps(client, plantation, Span(0, MAX_TIME_NS), batch=b.batch):
            if key(g) not in keys:
                keys.add(key(g))
                extra.append(g)
    return extra


def _export(
    client: InfluxQuery,
    plantation: str,
    span: Span,
    bag: BagWriter,
    org_key: Ed25519PrivateKey,
    registry: dict[str, Any],
    progress: bool,
    page_rows: int,
    now: Callable[[], datetime],
) -> ExportSummary:
    started = time.monotonic()
    out = bag.root
    summary = ExportSummary(out)
    kinds = source.reading_kinds(client)
    names = source.value_names(client, kinds)
    bounds = source.seq_bounds(client, plantation, kinds, span)
    plan = source.plan_slices(client, plantation, kinds, span, page_rows)
    wide = Span(span.start_ns - LOOKBACK_NS, span.end_ns + LOOKAHEAD_NS)

    # Gaps (few) first: the batches that declared a gap in the period belong in the bundle.
    # Looked for up to the end of the wide span too: a chosen batch's gaps that start after
    # the period (the later pieces of a long gap) are signed with it.
    wide_gaps = list(source.gaps(client, plantation, wide))
    gap_batches = {g.batch for g in wide_gaps if g.overlaps(span.start_ns, span.end_ns)}
    chosen: list[BatchRow] = []
    for b in source.batches(client, plantation, wide):
        if b.meets(bounds.get(b.gateway)) or b.batch in gap_batches:
            chosen.append(b)
    chosen_ids = {b.batch for b in chosen}
    chosen_gaps = [g for g in wide_gaps if g.batch in chosen_ids or g.batch in gap_batches]
    chosen_gaps += _gaps_before_lookback(client, plantation, chosen, chosen_gaps)
    chosen_gaps.sort(key=lambda g: (g.gateway, g.start, g.sensor))
    index = _BatchIndex(chosen)
    held = _quarantined(client, plantation, chosen, index, summary)

    # Readings of edge batches that lie outside the period, so their signatures check.
    before: list[ReadingRow] = []
    after: list[ReadingRow] = []
    for gw, (lo, hi) in sorted(bounds.items()):
        first = index.find(gw, lo)
        if first is not None and first.first_seq < lo:
            before += _edge_readings(
                client,
                plantation,
                kinds,
                gw,
                first.first_seq,
                lo - 1,
                Span(wide.start_ns, span.start_ns),
            )
        last = index.find(gw, hi)
        if last is not None and last.last_seq > hi:
            after += _edge_readings(
                client,
                plantation,
                kinds,
                gw,
                hi + 1,
                last.last_seq,
                Span(span.end_ns, wide.end_ns),
            )
    before.sort(key=lambda r: (r.ts, r.gateway, r.seq))
    after.sort(key=lambda r: (r.ts, r.gateway, r.seq))

    progress = progress and sys.stderr.isatty()
    bar = Progress(progress, plan.readings)
    stats = ExportStats(span.start_ns, span.end_ns)
    out_files = _Writers(bag.payload("readings.csv"), bag.payload("readings.jsonl"))
    try:
        out_files.write([reading_csv_header(names).encode()], [])
        written: dict[str, int] = {}
        for r, _ in held:
            written[r.batch] = written.get(r.batch, 0) + 1

        def emit(rows: Iterable[ReadingRow]) -> None:
            """Rows one by one (the few outside the period)."""
            csv_lines: list[str] = []
            json_lines: list[bytes] = []
            find = index.find
            add = stats.add
            for r in rows:
                home = find(r.gateway, r.seq)
                if home is None:
                    summary.unbatched_readings += 1
                else:
                    r.batch = home.batch
                    written[home.batch] = written.get(home.batch, 0) + 1
                when = rfc3339_ns(r.ts)
                csv_lines.append(reading_csv_line(r, names, when))
                json_lines.append(reading_json_line(r, when))
                add(r)
            out_files.write(["".join(csv_lines).encode()], json_lines)
            bar.advance(len(json_lines))

        formatter = SliceFormatter(
            plantation, names, index.steps(), source.clock_kinds(client, kinds)
        )
        try:
            emit(before)
            slices = source.reading_slices(client, plantation, kinds, plan.slices)
            for sl, counted, series in zip(plan.slices, plan.counts, slices, strict=True):
                try:
                    text = formatter.format_slice(series)
                except ColumnError as err:
                    raise source.SourceError(str(err)) from None
                del series
                if text.rows < counted:
                    raise source.SourceError(
                        f"InfluxDB answered {text.rows} of the {counted} readings it counted "
                        f"from {rfc3339_ns(sl.start_ns)} to {rfc3339_ns(sl.end_ns)}: is its "
                        "[http] max-row-limit set? Set it to 0 (no limit) for exports"
                    )
                out_files.write(text.csv, text.jsonl)
                for batch_id, n in text.per_batch.items():
                    written[batch_id] = written.get(batch_id, 0) + n
                summary.unbatched_readings += text.unbatched
                stats.add_runs(text.runs)
                bar.advance(text.rows)
                del text
            emit(after)
        finally:
            bar.close()
        # Batches still short of readings had some dated outside the period without being at its
        # edge (a gateway clock stepped back or forward): fetch those few and append them, so
        # every signature can be checked.
        seen = {(r.gateway, r.seq) for r in (*before, *after)}
        short = [b for b in chosen if b.first_seq >= 0 and written.get(b.batch, 0) < b.readings]
        stragglers: list[ReadingRow] = []
        for b in short[:MAX_SHORT_BATCHES]:
            for part in (Span(wide.start_ns, span.start_ns), Span(span.end_ns, wide.end_ns)):
                stragglers += (
                    r
                    for r in _edge_readings(
                        client, plantation, kinds, b.gateway, b.first_seq, b.last_seq, part
                    )
                    if (r.gateway, r.seq) not in seen
                )
        stragglers.sort(key=lambda r: (r.ts, r.gateway, r.seq))
        emit(stragglers)
    except BaseException:
        with contextlib.suppress(BaseException):
            out_files.close()
        raise
    out_files.close()
    if len(short) > MAX_SHORT_BATCHES:
        summary.warnings.append(
            f"{len(short)} batches lack readings in InfluxDB; only the first "
            f"{MAX_SHORT_BATCHES} were searched outside the period"
        )
    bag.close_payload("readings.csv")
    bag.close_payload("readings.jsonl")
    quarantine_out = bag.payload("quarantined.jsonl")
    quarantine_out.write(b"".join(quarantine_json_line(r, reason) for r, reason in held))
    bag.close_payload("quarantined.jsonl")
    # Per-day counts and chart windows were gathered from the stream (add_runs): the same
    # figures as InfluxDB's count/mean/min/max per day and window, without reading it all
    # a second and third time.
    stats.add_stream_windows(kinds)

    gaps_out = bag.payload("gaps.csv")
    gaps_out.write(csv_line(GAP_COLUMNS).encode())
    for g in chosen_gaps:
        gaps_out.write(gap_csv_line(g).encode())
    bag.close_payload("gaps.csv")

    batches_out = bag.payload("batches.jsonl")
    per_gw: dict[str, list[int]] = {}
    for b in sorted(chosen, key=lambda b: (b.gateway, b.first_seq, b.sent)):
        batches_out.write(batch_json_line(b))
        counts = per_gw.setdefault(b.gateway, [0, 0])
        counts[0] += 1
        if b.sig:
            counts[1] += 1
        else:
            summary.unsigned_batches += 1
    bag.close_payload("batches.jsonl")

    exported_at = now().isoformat(timespec="seconds")
    reg = dict(registry)
    reg["calibrations"] = stats.calibration_history()
    bag.add_payload("registry.json", orjson.dumps(reg, option=orjson.OPT_INDENT_2) + b"\n")
    bag.add_payload("completeness.csv", stats.completeness_csv())
    org_kid = signing.key_id(org_key.public_key())
    seq_range = {gw: [lo, hi] for gw, (lo, hi) in bounds.items()}
    for r in (*before, *after, *stragglers):
        rng = seq_range.setdefault(r.gateway, [r.seq, r.seq])
        rng[0], rng[1] = min(rng[0], r.seq), max(rng[1], r.seq)
    batch_summary = [
        (
            gw,
            *seq_range.get(gw, (-1, -1)),
            per_gw.get(gw, [0, 0])[0],
            per_gw.get(gw, [0, 0])[1],
        )
        for gw in sorted(set(per_gw) | set(seq_range))
    ]
    bag.add_payload(
        "report.html",
        render_html(plantation, stats, chosen_gaps, batch_summary, org_kid, exported_at, held),
    )
    bag.finish(
        {
            "Source-Organization": str(registry.get("organisation") or "farmtel operator"),
            "Bagging-Date": exported_at[:10],
            "External-Description": (
                f"farmtel sensor history of plantation {plantation}; see data/report.html"
            ),
            "Farmtel-Format": BUNDLE_FORMAT,
            "Farmtel-Plantation": plantation,
            "Farmtel-Period-Start": rfc3339_ns(span.start_ns),
            "Farmtel-Period-End": rfc3339_ns(span.end_ns),
            "Farmtel-Exported-At": exported_at,
            "Farmtel-Readings": str(stats.readings),
            "Farmtel-Batches": str(len(chosen)),
            "Farmtel-Gaps": str(len(chosen_gaps)),
            "Farmtel-Quarantined": str(len(held)),
            "Farmtel-Org-Key-Id": org_kid,
        },
        org_key,
    )
    summary.readings = stats.readings
    summary.outside_period = len(before) + len(after) + len(stragglers)
    summary.gaps = len(chosen_gaps)
    summary.batches = len(chosen)
    summary.seconds = time.monotonic() - started
    if summary.unsigned_batches:
        summary.warnings.append(
            f"{summary.unsigned_batches} batch(es) are not signed: verify will reject the "
            "bundle (turn on [gateway] signing_key_file on the gateways)"
        )
    if summary.unbatched_readings:
        summary.warnings.append(
            f"{summary.unbatched_readings} reading(s) have no batch record: verify will "
            "reject the bundle (they were stored before batch records existed?)"
        )
    if not summary.readings and not summary.gaps:
        summary.warnings.append(
            f"the bundle is empty: InfluxDB holds no readings and no gaps of plantation "
            f"{plantation!r} from {iso_utc(span.start_ns)} to {iso_utc(span.end_ns)}; check "
            "--plantation, --from and --to (local time unless they carry an offset) and "
            "--database"
        )
    return summary


def _quarantined(
    client: InfluxQuery,
    plantation: str,
    chosen: list[BatchRow],
    index: _BatchIndex,
    summary: ExportSummary,
) -> list[tuple[ReadingRow, str]]:
    """``(row, reason)`` of the quarantined readings of the ``chosen`` batches, by gateway and
    seq, each with its batch id set; a warning in ``summary`` for every batch whose record
    counts a different number of them than InfluxDB holds (verify will reject it)."""
    ranges: dict[str, tuple[int, int]] = {}
    expected: dict[str, int] = {}
    for b in chosen:
        if b.quarantined > 0 and b.first_seq >= 0:
            lo, hi = ranges.get(b.gateway, (b.first_seq, b.last_seq))
            ranges[b.gateway] = (min(lo, b.first_seq), max(hi, b.last_seq))
            expected[b.batch] = b.quarantined
    held: list[tuple[ReadingRow, str]] = []
    found: dict[str, int] = {}
    for r, reason in source.quarantined_rows(client, plantation, ranges):
        home = index.find(r.gateway, r.seq)
        if home is None or home.batch not in expected or r.batch not in ("", home.batch):
            continue  # a reading of a batch outside the bundle
        r.batch = home.batch
        found[home.batch] = found.get(home.batch, 0) + 1
        held.append((r, reason))
    for batch_id, n in sorted(expected.items()):
        if found.get(batch_id, 0) != n:
            summary.warnings.append(
                f"batch {batch_id} counts {n} quarantined reading(s) but farmtel_quarantine "
                f"holds {found.get(batch_id, 0)} of it: verify will reject that batch"
            )
    summary.quarantined = len(held)
    return held
