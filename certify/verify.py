"""``farmtel verify``: check a bundle with nothing but the bundle and the organisation's key.

Checks, in order:

1. the bag: structure, every checksum, no unlisted file, Payload-Oxum (certify.bag);
2. the organisation's seal over the manifests, with the pinned key (``--pubkey``) or, with a
   loud note, the key inside the bundle;
3. readings.csv says the same as readings.jsonl, row for row;
4. every batch signature, against the gateway's keys in registry.json, over the canonical
   message (contract/signing.py) rebuilt from the batch's readings and quarantined readings
   (data/quarantined.jsonl; by gateway and seq range) and its declared gaps; a reading
   outside every signed batch is a failure, and so is a batch whose record counts a
   different number of quarantined readings than the bundle holds;
5. sequence continuity per gateway: every seq between a gateway's first and last exported
   reading is a reading, a quarantined reading (delivered, just not data) or skipped by a
   declared gap (``seq``/``count``), and no seq appears twice.

Readings stream through in one pass; memory holds the batch records, the gaps, the
readings of batches not yet complete, and per gateway a list of seq ranges.

To be fast, the checksums (1, 2) are computed in a thread while checks 3-5 run over chunks
of the readings files in worker processes (certify.verify_chunks), which can only show the
readings clean; when they do not, the sequential pass here runs and names each failure, in
file order. Either way the verdict is the same.
"""

import bisect
import csv
import io
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certify import verify_chunks
from certify.bag import BundleSource, FolderBundle, check_bag, iter_lines, parse_bag_info
from certify.devices import gateway_keys
from certify.rows import (
    GAP_COLUMNS,
    READING_FIXED_COLUMNS,
    BatchRow,
    GapRow,
    ReadingRow,
    RowError,
    csv_cells,
    csv_line,
    parse_batch_json,
    parse_gap_cells,
    parse_quarantine_json,
    parse_reading_json,
    reading_csv_line,
)
from contract import signing
from ingest.mapping import WHOLE_GATEWAY

REQUIRED = (
    "data/readings.csv",
    "data/readings.jsonl",
    "data/gaps.csv",
    "data/batches.jsonl",
    "data/registry.json",
    "data/completeness.csv",
    "data/report.html",
)
QUARANTINED = "data/quarantined.jsonl"
"""Optional: bundles written before quarantined readings were exported lack it."""
MAX_LISTED = 50
"""Failures of one kind listed by name before the rest are only counted."""
FAST_FROM_BYTES = 1 << 20
"""readings.jsonl from this size on goes the fast way first (a small bundle takes a few ms
either way, and one that is not valid would be read twice)."""
PARALLEL_FROM_BYTES = 8 << 20
"""readings.jsonl from this size on is checked in worker processes (below, starting them
costs more than they save)."""


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    readings: int = 0
    quarantined: int = 0
    batches: int = 0
    batches_verified: int = 0
    gaps: int = 0
    _suppressed: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self._suppressed

    def fail(self, text: str) -> None:
        if len(self.failures) < MAX_LISTED * 4:
            self.failures.append(text)
        else:
            self._suppressed += 1

    def render(self) -> str:
        """The plain verdict: one line, then the failures and notes."""
        lines = []
        if self.ok:
            lines.append(
                f"VERDICT: VALID. {self.readings} readings in {self.batches} batches, every "
                f"batch signature checks ({self.batches_verified}), {self.gaps} declared gaps "
                "cover every hole in the sequence numbers."
                + (
                    f" {self.quarantined} quarantined reading(s) (not data) are signed with "
                    "their batches."
                    if self.quarantined
                    else ""
                )
            )
        else:
            n = len(self.failures) + self._suppressed
            lines.append(f"VERDICT: NOT VALID. {n} failure(s):")
            lines.extend(f"  FAIL {f}" for f in self.failures)
            if self._suppressed:
                lines.append(f"  ... and {self._suppressed} more failure(s)")
        lines.extend(f"  NOTE {n}" for n in self.notes)
        return "\n".join(lines) + "\n"


class _SeqSet:
    """A gateway's seq numbers as sorted, disjoint, inclusive ranges."""

    def __init__(self) -> None:
        self.lo: list[int] = []
        self.hi: list[int] = []

    def add(self, seq: int) -> bool:
        """Add ``seq``; False when it was there already."""
        lo, hi = self.lo, self.hi
        if hi and seq == hi[-1] + 1:
            hi[-1] = seq
            return True
        i = bisect.bisect_right(lo, seq) - 1
        if i >= 0 and seq <= hi[i]:
            return False
        if i >= 0 and seq == hi[i] + 1:
            hi[i] = seq
            if i + 1 < len(lo) and lo[i + 1] == seq + 1:
                hi[i] = hi[i + 1]
                del lo[i + 1], hi[i + 1]
            return True
        if i + 1 < len(lo) and lo[i + 1] == seq + 1:
            lo[i + 1] = seq
            return True
        lo.insert(i + 1, seq)
        hi.insert(i + 1, seq)
        return True

    def holes(self) -> Iterator[tuple[int, int]]:
        """``(first, last)`` missing seq between the lowest and the highest."""
        for i in range(1, len(self.lo)):
            yield self.hi[i - 1] + 1, self.lo[i] - 1


@dataclass
class _OpenBatch:
    row: BatchRow
    readings: list[ReadingRow] = field(default_factory=list)
    quarantined: int = 0
    """How many of ``readings`` came from data/quarantined.jsonl."""
    done: bool = False


def verify_bundle(src: BundleSource, pinned: Ed25519PublicKey | None = None) -> Verdict:
    """Check everything in a bundle; the verdict lists every failure found.

    Never raises for bad bundle content: whatever is wrong becomes a failure.
    """
    verdict = Verdict()
    fast = _FastPath.start(src)  # before our thread: its workers fork
    try:
        # The checksums are computed in a thread (hashlib lets go of the GIL) while the
        # readings are checked.
        with ThreadPoolExecutor(1, thread_name_prefix="verify-bag") as hashing:
            bag_job = hashing.submit(check_bag, src, pinned)
            clean = fast.run() if fast is not None else None
            bag = bag_job.result()
    except OSError as err:
        verdict.fail(f"the bundle cannot be read: {err}")
        return verdict
    finally:
        if fast is not None:
            fast.close()
    for f in bag.failures:
        verdict.fail(f)
    verdict.notes.extend(bag.notes)
    present = set(src.names())
    missing = [n for n in REQUIRED if n not in present]
    for n in missing:
        verdict.fail(f"{n} is missing")
    if missing:
        return verdict
    plantation = bag.info.get("Farmtel-Plantation", "")
    if not plantation:
        verdict.fail("bag-info.txt has no Farmtel-Plantation")
    try:
        if clean is not None and clean.plantation == plantation:
            # The checks below, shown to find nothing: only their counts are left to give.
            verdict.readings = clean.readings
            verdict.quarantined = clean.quarantined
            verdict.batches = clean.batches
            verdict.batches_verified = clean.batches_verified
            verdict.gaps = clean.gaps
        else:
            _check_content(src, plantation, verdict)
    except Exception as err:  # any surprise in hostile input is a failure, not a crash
        verdict.fail(f"the bundle could not be read through: {type(err).__name__}: {err}")
    return verdict


def _load_registry(src: BundleSource, verdict: Verdict) -> dict[str, dict[str, Ed25519PublicKey]]:
    try:
        registry = orjson.loads(src.read("data/registry.json"))
    except orjson.JSONDecodeError as err:
        verdict.fail(f"data/registry.json is not JSON ({err})")
        return {}
    problems: list[str] = []
    keys = gateway_keys(registry, problems)
    for p in problems:
        verdict.fail(f"data/registry.json: {p}")
    return keys


def _load_batches(src: BundleSource, verdict: Verdict) -> dict[str, _OpenBatch]:
    batches: dict[str, _OpenBatch] = {}
    for n, line in enumerate(iter_lines(src, "data/batches.jsonl"), 1):
        if not line:
            continue
        try:
            b = parse_batch_json(line)
        except RowError as err:
            verdict.fail(f"data/batches.jsonl line {n}: {err}")
            continue
        if b.batch in batches:
            verdict.fail(f"data/batches.jsonl line {n}: batch {b.batch} is listed twice")
            continue
        batches[b.batch] = _OpenBatch(b)
    return batches


def _load_gaps(src: BundleSource, verdict: Verdict) -> list[GapRow]:
    text = src.read("data/gaps.csv").decode("utf-8", errors="strict")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != list(GAP_COLUMNS):
        verdict.fail(f"data/gaps.csv header is {header}, not {list(GAP_COLUMNS)}")
        return []
    gaps = []
    for n, cells in enumerate(reader, 2):
        try:
            gaps.append(parse_gap_cells(cells))
        except RowError as err:
            verdict.fail(f"data/gaps.csv line {n}: {err}")
    if text != csv_line(GAP_COLUMNS) + "".join(csv_line(csv_cells(g)) for g in gaps):
        verdict.fail("data/gaps.csv is not in its canonical form (extra text or quoting)")
    return gaps


def _check_batch(
    ob: _OpenBatch,
    plantation: str,
    keys: dict[str, dict[str, Ed25519PublicKey]],
    gaps_by_batch: dict[str, list[GapRow]],
    verdict: Verdict,
) -> None:
    ob.done = True
    b = ob.row
    gaps = gaps_by_batch.get(b.batch, [])
    where = f"batch {b.batch} (gateway {b.gateway}, seq {b.first_seq}..{b.last_seq})"
    if len(ob.readings) != b.readings or len(gaps) != b.gaps:
        verdict.fail(
            f"{where}: the bundle holds {len(ob.readings)} readings and {len(gaps)} gaps of it, "
            f"the record says {b.readings} and {b.gaps}"
        )
    if ob.quarantined != b.quarantined:
        verdict.fail(
            f"{where}: {QUARANTINED} holds {ob.quarantined} quarantined reading(s) of it, "
            f"the record says {b.quarantined}"
        )
    message = signing.canonical_message(
        plantation,
        b.gateway,
        b.batch,
        # A ReadingRow has every attribute canonical_message reads (seq, sensor, field, kind,
        # ts, clock, cal, values); a frozen SignedReading per row cost 4x as much to build.
        cast("list[signing.SignedReading]", ob.readings),
        _signed_gaps(gaps),
    )
    try:
        signing.verify(keys.get(b.gateway, {}), b.sig or None, message)
        verdict.batches_verified += 1
    except signing.SignatureError as err:
        verdict.fail(f"{where}: {err}")
    ob.readings = []


def _signed_gaps(gaps: Iterable[GapRow]) -> Iterator[signing.SignedGap]:
    for g in gaps:
        yield signing.SignedGap(
            None if g.sensor == WHOLE_GATEWAY else g.sensor,
            g.start,
            g.end,
            g.reason,
            g.seq,
            g.count,
        )


@dataclass
class _Loaded:
    """What the readings are checked against: registry keys, batches (with their
    quarantined readings), gaps, and the quarantined readings' seqs per gateway."""

    keys: dict[str, dict[str, Ed25519PublicKey]]
    batches: dict[str, _OpenBatch]
    gaps: list[GapRow]
    gaps_by_batch: dict[str, list[GapRow]]
    seqs: dict[str, _SeqSet]


def _load(src: BundleSource, plantation: str, verdict: Verdict) -> _Loaded:
    keys = _load_registry(src, verdict)
    batches = _load_batches(src, verdict)
    gaps = _load_gaps(src, verdict)
    verdict.batches = len(batches)
    verdict.gaps = len(gaps)
    gaps_by_batch: dict[str, list[GapRow]] = {}
    for g in gaps:
        ob = batches.get(g.batch)
        if ob is None:
            verdict.fail(
                f"gap of {g.gateway}/{g.sensor} at {g.start} names batch {g.batch}, "
                "which is not in data/batches.jsonl"
            )
        elif ob.row.gateway != g.gateway:
            verdict.fail(
                f"gap of {g.gateway} at {g.start} names batch {g.batch} of gateway {ob.row.gateway}"
            )
        gaps_by_batch.setdefault(g.batch, []).append(g)

    seqs: dict[str, _SeqSet] = {}
    if QUARANTINED in set(src.names()):
        _load_quarantined(src, plantation, batches, seqs, verdict)
    return _Loaded(keys, batches, gaps, gaps_by_batch, seqs)


def _value_names(header_line: bytes, verdict: Verdict) -> list[str]:
    """The value columns named by the readings.csv header; a failure when it is not ours."""
    header = header_line.decode("utf-8", errors="replace").rstrip("\r").split(",")
    fixed = list(READING_FIXED_COLUMNS)
    if header[: len(fixed)] != fixed:
        verdict.fail(f"data/readings.csv header starts {header[: len(fixed)]}, not {fixed}")
    value_names = header[len(fixed) :]
    if value_names != sorted(set(value_names)):
        verdict.fail("data/readings.csv value columns are not sorted and distinct")
    return value_names


def _check_content(src: BundleSource, plantation: str, verdict: Verdict) -> None:
    loaded = _load(src, plantation, verdict)
    keys, batches, gaps, gaps_by_batch, seqs = (
        loaded.keys,
        loaded.batches,
        loaded.gaps,
        loaded.gaps_by_batch,
        loaded.seqs,
    )
    csv_lines = iter_lines(src, "data/readings.csv")
    value_names = _value_names(next(csv_lines, b""), verdict)
    csv_done = False
    listed = 0
    n = 0
    for n, line in enumerate(iter_lines(src, "data/readings.jsonl"), 1):
        csv_text = next(csv_lines, None)
        try:
            r, when = parse_reading_json(line)
        except RowError as err:
            verdict.fail(f"data/readings.jsonl line {n}: {err}")
            continue
        verdict.readings += 1
        if csv_text is None:
            if not csv_done:
                verdict.fail(f"data/readings.csv ends before line {n} of data/readings.jsonl")
                csv_done = True
        elif (csv_text + b"\n").decode("utf-8", errors="replace") != reading_csv_line(
            r, value_names, when
        ):
            if listed < MAX_LISTED:
                verdict.fail(
                    f"data/readings.csv line {n + 1} differs from data/readings.jsonl line {n}"
                )
            listed += 1
        if r.plantation != plantation:
            verdict.fail(
                f"data/readings.jsonl line {n}: plantation {r.plantation}, the bundle "
                f"is for {plantation}"
            )
        s = seqs.get(r.gateway)
        if s is None:
            s = seqs[r.gateway] = _SeqSet()
        if not s.add(r.seq):
            verdict.fail(
                f"data/readings.jsonl line {n}: gateway {r.gateway} seq {r.seq} appears twice"
            )
        ob = batches.get(r.batch)
        if ob is None or ob.done:
            verdict.fail(
                f"data/readings.jsonl line {n}: reading {r.gateway} seq {r.seq} is in no "
                f"signed batch of the bundle (batch {r.batch!r})"
            )
            continue
        b = ob.row
        if b.gateway != r.gateway or not b.first_seq <= r.seq <= b.last_seq:
            verdict.fail(
                f"data/readings.jsonl line {n}: reading {r.gateway} seq {r.seq} is outside "
                f"batch {b.batch} ({b.gateway} seq {b.first_seq}..{b.last_seq})"
            )
            continue
        ob.readings.append(r)
        if len(ob.readings) == b.readings:
            _check_batch(ob, plantation, keys, gaps_by_batch, verdict)
    if listed > MAX_LISTED:
        verdict.fail(f"... {listed - MAX_LISTED} more readings.csv lines differ")
    extra = sum(1 for rest in csv_lines if rest)
    if extra:
        verdict.fail(f"data/readings.csv has {extra} line(s) more than data/readings.jsonl")
    for ob in batches.values():
        if not ob.done:
            _check_batch(ob, plantation, keys, gaps_by_batch, verdict)
    _check_continuity(seqs, gaps, verdict)


def _load_quarantined(
    src: BundleSource,
    plantation: str,
    batches: dict[str, _OpenBatch],
    seqs: dict[str, _SeqSet],
    verdict: Verdict,
) -> None:
    """Put each quarantined reading in its batch (for the signature) and its seq in
    ``seqs`` (for continuity), before the readings stream through."""
    for n, line in enumerate(iter_lines(src, QUARANTINED), 1):
        if not line:
            continue
        where = f"{QUARANTINED} line {n}"
        try:
            r, _reason = parse_quarantine_json(line)
        except RowError as err:
            verdict.fail(f"{where}: {err}")
            continue
        verdict.quarantined += 1
        if r.plantation != plantation:
            verdict.fail(f"{where}: plantation {r.plantation}, the bundle is for {plantation}")
        s = seqs.get(r.gateway)
        if s is None:
            s = seqs[r.gateway] = _SeqSet()
        if not s.add(r.seq):
            verdict.fail(f"{where}: gateway {r.gateway} seq {r.seq} appears twice")
        ob = batches.get(r.batch)
        if ob is None:
            verdict.fail(
                f"{where}: quarantined reading {r.gateway} seq {r.seq} is in no signed batch "
                f"of the bundle (batch {r.batch!r})"
            )
            continue
        b = ob.row
        if b.gateway != r.gateway or not b.first_seq <= r.seq <= b.last_seq:
            verdict.fail(
                f"{where}: quarantined reading {r.gateway} seq {r.seq} is outside batch "
                f"{b.batch} ({b.gateway} seq {b.first_seq}..{b.last_seq})"
            )
            continue
        ob.readings.append(r)
        ob.quarantined += 1


def _check_continuity(seqs: dict[str, _SeqSet], gaps: list[GapRow], verdict: Verdict) -> None:
    declared: dict[str, list[tuple[int, int]]] = {}
    for g in gaps:
        if g.seq is not None and g.count > 0:
            declared.setdefault(g.gateway, []).append((g.seq, g.seq + g.count - 1))
    for gw, s in sorted(seqs.items()):
        merged = _merge(declared.get(gw, []))
        starts = [lo for lo, _ in merged]
        for first, last in s.holes():
            i = bisect.bisect_right(starts, first) - 1
            if i < 0 or merged[i][1] < last:
                verdict.fail(
                    f"gateway {gw}: seq {first}..{last} ({last - first + 1} reading(s)) are "
                    "missing and no declared gap accounts for them"
                )


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges (touching ranges join)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


@dataclass
class _Clean:
    """Checks 3-5 found nothing; the counts the verdict gives."""

    plantation: str
    readings: int
    quarantined: int
    batches: int
    batches_verified: int
    gaps: int


class _FastPath:
    """Checks 3-5 over chunks of the readings files (certify.verify_chunks), in worker
    processes when the bundle is a folder large enough to be worth them."""

    def __init__(
        self,
        src: BundleSource,
        plantation: str,
        loaded: _Loaded,
        scratch: Verdict,
        ctx: verify_chunks.Context,
    ) -> None:
        self.src = src
        self.plantation = plantation
        self.loaded = loaded
        self.scratch = scratch
        self.ctx = ctx
        self.pool: verify_chunks.Pool | None = None
        self.chunk_bytes: int | None = None
        """readings.jsonl bytes per chunk; None: verify_chunks.CHUNK_BYTES."""

    @classmethod
    def start(cls, src: BundleSource) -> "_FastPath | None":
        """Load what the readings are checked against and start the workers; None when
        the sequential pass must run anyway (something is missing or already wrong)."""
        try:
            present = set(src.names())
            if any(n not in present for n in (*REQUIRED, "bag-info.txt")):
                return None
            with src.open(verify_chunks.JSONL) as f:
                size = f.seek(0, io.SEEK_END)
            if size < FAST_FROM_BYTES:
                return None
            plantation = parse_bag_info(src.read("bag-info.txt"), []).get("Farmtel-Plantation", "")
            if not plantation:
                return None
            scratch = Verdict()
            loaded = _load(src, plantation, scratch)
            with src.open("data/readings.csv") as f:
                value_names = _value_names(f.readline().rstrip(b"\n"), scratch)
            ctx = _chunk_context(plantation, loaded, value_names)
            if scratch.failures or ctx is None:
                return None
            fast = cls(src, plantation, loaded, scratch, ctx)
        except Exception:
            return None
        if isinstance(src, FolderBundle):
            try:
                workers = verify_chunks.worker_count()
                if size >= PARALLEL_FROM_BYTES and workers > 0:
                    fast.pool = verify_chunks.Pool(ctx, str(src.root), workers)
            except Exception:  # no processes to be had: check the chunks in this one
                fast.pool = None
        return fast

    def run(self) -> _Clean | None:
        """The counts when checks 3-5 find nothing, else None."""
        try:
            with (
                self.src.open(verify_chunks.JSONL) as fj,
                self.src.open(verify_chunks.CSV) as fc,
            ):
                summary = verify_chunks.check_readings(
                    self.ctx, fj, fc, self.pool, self.chunk_bytes
                )
            if summary is None:
                return None
            seqs: dict[str, _SeqSet] = {}
            for gw in summary.ranges.keys() | self.loaded.seqs.keys():
                ranges = list(summary.ranges.get(gw, []))
                quarantined = self.loaded.seqs.get(gw)
                if quarantined is not None:
                    ranges.extend(zip(quarantined.lo, quarantined.hi, strict=True))
                merged = verify_chunks.merge_ranges(ranges)
                if merged is None:
                    return None  # a seq twice
                s = seqs[gw] = _SeqSet()
                s.lo = [lo for lo, _ in merged]
                s.hi = [hi for _, hi in merged]
            _check_continuity(seqs, self.loaded.gaps, self.scratch)
            if self.scratch.failures:
                return None
            return _Clean(
                self.plantation,
                summary.readings,
                self.scratch.quarantined,
                self.scratch.batches,
                summary.batches_verified,
                self.scratch.gaps,
            )
        except Exception:
            return None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _chunk_context(
    plantation: str, loaded: _Loaded, value_names: list[str]
) -> verify_chunks.Context | None:
    """What each chunk is checked against; None when a batch record already disagrees with
    the bundle (the sequential pass says how)."""
    specs: dict[str, verify_chunks.BatchSpec] = {}
    for bid, ob in loaded.batches.items():
        b = ob.row
        gaps = loaded.gaps_by_batch.get(bid, [])
        if len(gaps) != b.gaps or ob.quarantined != b.quarantined or b.readings < ob.quarantined:
            return None
        head = signing.canonical_message(plantation, b.gateway, b.batch, [], [])
        whole = signing.canonical_message(plantation, b.gateway, b.batch, [], _signed_gaps(gaps))
        if not whole.startswith(head):
            return None
        extra = tuple(
            (
                r.seq,
                signing.canonical_message(
                    plantation, b.gateway, b.batch, cast("list[signing.SignedReading]", [r]), []
                )[len(head) :].decode("utf-8"),
            )
            for r in ob.readings
        )
        specs[bid] = verify_chunks.BatchSpec(
            b.gateway,
            b.first_seq,
            b.last_seq,
            b.readings - ob.quarantined,
            head,
            whole[len(head) :],
            b.sig,
            extra,
        )
    keys = {
        gw: {kid: signing.public_key_bytes(k) for kid, k in by_id.items()}
        for gw, by_id in loaded.keys.items()
    }
    return verify_chunks.Context(plantation, tuple(value_names), specs, keys)
