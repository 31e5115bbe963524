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
   declared gap (``seq``/``count``), and no seq appears twice;
6. what bag-info.txt declares: the plantation (registry.json's too), the period (a reading
   dated outside it must be in a batch the period cuts, as export takes them) and the counts
   of readings, batches, gaps and (in bundles that give it) quarantined readings.

Each root cause is named once: a reading that fails is not named again as missing from its
batch or its gateway's seqs, and a failure that repeats per reading, line or batch is listed
MAX_LISTED times, then counted.

Readings stream through in one pass; memory holds the batch records, the gaps, the
readings of batches not yet complete, and per gateway a list of seq ranges.

To be fast, the checksums (1, 2) are computed in a thread while checks 3-5 run over chunks
of the readings files in worker processes (certify.verify_chunks), which can only show the
readings clean; when they do not, the sequential pass here runs and names each failure, in
file order. Either way the verdict is the same.
"""

import bisect
import calendar
import csv
import io
import itertools
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certify import verify_chunks
from certify.bag import (
    BAG_INFO_NOT_UTF8,
    REQUIRED_FILES,
    BundleSource,
    FolderBundle,
    check_bag,
    iter_lines,
    parse_bag_info,
)
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
    rfc3339_ns,
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
MAX_LISTED = 10
"""Failures of one kind (per reading, line or batch) listed by name before the rest are
only counted."""
MAX_FAILURES = 200
"""Failures listed in all; the rest are only counted."""
DECLARED = (
    "Farmtel-Plantation",
    "Farmtel-Period-Start",
    "Farmtel-Period-End",
    "Farmtel-Readings",
    "Farmtel-Batches",
    "Farmtel-Gaps",
)
"""The bag-info.txt fields every export writes about the content, checked against it."""
DECLARED_COUNTS = (
    ("Farmtel-Readings", "data/readings.jsonl", "readings"),
    ("Farmtel-Batches", "data/batches.jsonl", "batch records"),
    ("Farmtel-Gaps", "data/gaps.csv", "gaps"),
    ("Farmtel-Quarantined", "data/quarantined.jsonl", "quarantined readings"),
)
"""Counts checked against the content when bag-info.txt gives them. Farmtel-Quarantined is
not in :data:`DECLARED`: bundles exported before it was written have none."""
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{9})Z", re.ASCII)
# Kinds of failure that can repeat (Verdict.fail_each), as the count line names them.
_NOT_A_ROW = "data/readings.jsonl lines that are not reading rows"
_CSV_DIFFERS = "data/readings.csv lines that differ from data/readings.jsonl"
_OTHER_PLANTATION = "readings of another plantation"
_TWICE = "seqs that appear twice"
_NO_BATCH = "readings in no batch of the bundle"
_BATCH_FAILS = "batch failures"
_HOLES = "holes in the sequence numbers"
_OUTSIDE_PERIOD = "batches with readings outside the period"
_BAD_QUARANTINED = "data/quarantined.jsonl failures"
_BAD_BATCH_LINE = "data/batches.jsonl failures"
_BAD_GAP = "data/gaps.csv failures"
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
    plantation: str = ""
    period: tuple[str, str] = ("", "")
    """Farmtel-Period-Start and -End, as bag-info.txt gives them."""
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    """gateway -> lowest and highest seq in the bundle (readings and quarantined)."""
    not_a_bundle: bool = False
    """The folder is no bundle at all (no bagit.txt): bad input, not a bundle that failed."""
    _found: int = 0
    _suppressed: int = 0
    _each: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures and not self._found

    @property
    def found(self) -> int:
        """Failures found, listed or only counted."""
        return self._found

    def fail(self, text: str) -> None:
        self._found += 1
        self._list(text)

    def _list(self, text: str) -> None:
        if len(self.failures) < MAX_FAILURES:
            self.failures.append(text)
        else:
            self._suppressed += 1

    def fail_each(self, kind: str, text: str) -> None:
        """A failure that can repeat per reading, line or batch: the first MAX_LISTED of a
        ``kind`` are listed, the others counted by :meth:`count_the_rest`."""
        n = self._each[kind] = self._each.get(kind, 0) + 1
        if n <= MAX_LISTED:
            self.fail(text)
        else:
            self._found += 1

    def count_the_rest(self) -> None:
        """One line per kind of repeated failure for those not listed."""
        for kind, n in self._each.items():
            if n > MAX_LISTED:
                self._list(f"... and {n - MAX_LISTED} more {kind}")
        self._each.clear()

    def render(self) -> str:
        """The plain verdict: one line, then the failures and notes."""
        lines = []
        if self.not_a_bundle:
            lines.append(f"VERDICT: NOT VALID. {self.failures[0]}")
        elif self.ok:
            lines.append(self._valid_line())
        else:
            lines.append(f"VERDICT: NOT VALID. {self._found} failure(s):")
            lines.extend(f"  FAIL {f}" for f in self.failures)
            if self._suppressed:
                lines.append(f"  ... and {self._suppressed} more failure(s)")
        lines.extend(f"  NOTE {n}" for n in self.notes)
        return "\n".join(lines) + "\n"

    def _valid_line(self) -> str:
        what = f"Plantation {self.plantation}, {self.period[0]} to {self.period[1]} (end excluded)"
        quarantined = (
            f" {self.quarantined} quarantined reading(s) (not data) are signed with their batches."
            if self.quarantined
            else ""
        )
        # Consecutive exports join up when each gateway's range meets the next one's.
        ranges = (
            " Sequence numbers per gateway: "
            + ", ".join(f"{gw} {lo}..{hi}" for gw, (lo, hi) in sorted(self.ranges.items()))
            + "."
            if self.ranges
            else ""
        )
        if not self.readings:
            return (
                f"VERDICT: VALID. THE BUNDLE HOLDS NO READINGS. {what}: {self.batches} "
                f"batches, {self.gaps} declared gaps.{quarantined}{ranges}"
            )
        return (
            f"VERDICT: VALID. {what}: {self.readings} readings in {self.batches} batches, "
            f"every batch signature checks ({self.batches_verified}), {self.gaps} declared "
            f"gaps cover every hole in the sequence numbers.{quarantined}{ranges}"
        )


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
    unreadable: int = 0
    """Lines of it that are not reading rows (each named): its count and signature cannot
    tell more."""
    done: bool = False


def verify_bundle(src: BundleSource, pinned: Ed25519PublicKey | None = None) -> Verdict:
    """Check everything in a bundle; the verdict lists every failure found.

    Never raises for bad bundle content: whatever is wrong becomes a failure.
    """
    verdict = Verdict()
    try:
        names = src.names()
    except OSError as err:
        verdict.fail(f"the bundle cannot be read: {err}")
        return verdict
    why = _not_a_bundle(src, names)
    if why is not None:
        verdict.not_a_bundle = True
        verdict.fail(why)
        return verdict
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
    present = set(names)
    missing = [n for n in REQUIRED if n not in present]
    for n in missing:
        if n not in bag.missing:  # else named by the bag check already
            verdict.fail(f"{n} is missing (every bundle has it)")
    if missing:
        return verdict
    # bag-info.txt's fields are named only when the file is there to be read.
    readable = "bag-info.txt" in present and BAG_INFO_NOT_UTF8 not in bag.failures
    declared = _Declared.read(bag.info, verdict if readable else None)
    verdict.plantation = declared.plantation
    verdict.period = declared.period_text
    try:
        plantation = _check_registry_plantation(src, declared.plantation, verdict)
        before = verdict.found
        if clean is not None and (clean.plantation, clean.period) == (
            plantation,
            declared.period,
        ):
            # The checks below, shown to find nothing: only their counts are left to give.
            verdict.readings = clean.readings
            verdict.quarantined = clean.quarantined
            verdict.batches = clean.batches
            verdict.batches_verified = clean.batches_verified
            verdict.gaps = clean.gaps
            verdict.ranges = clean.ranges
        else:
            _check_content(src, plantation, declared.period, verdict)
        verdict.count_the_rest()
        # When the readings, batches or gaps failed, the counts differ for a reason named.
        if verdict.found == before:
            _check_counts(declared, verdict)
    except Exception as err:  # any surprise in hostile input is a failure, not a crash
        verdict.fail(f"the bundle could not be read through: {type(err).__name__}: {err}")
    return verdict


def _not_a_bundle(src: BundleSource, names: list[str]) -> str | None:
    """Why the folder is no bundle at all (no bag file at its top), or None: then every
    file in it would be a failure of its own."""
    top = {n for n in names if "/" not in n}
    if top & set(REQUIRED_FILES):
        return None
    where = str(src.root) if isinstance(src, FolderBundle) else "the folder"
    why = f"{where} is not a bundle (no bagit.txt)"
    inner = sorted({n.removesuffix("/bagit.txt") for n in names if n.endswith("/bagit.txt")})
    if inner:
        shown = ", ".join(inner[:5]) + (f" and {len(inner) - 5} more" if len(inner) > 5 else "")
        why += f"; it holds bundles ({shown}): verify each one"
    elif {"readings.jsonl", "batches.jsonl"} & top:
        why += "; it looks like a bundle's data/ folder: give the folder that holds it"
    return why


@dataclass
class _Declared:
    """What bag-info.txt says of the content (the Farmtel-... fields export writes)."""

    plantation: str = ""
    period: tuple[int, int] | None = None
    """``[start, end)`` in ns; None when a field is absent or not a time."""
    period_text: tuple[str, str] = ("", "")
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, info: dict[str, str], verdict: Verdict | None) -> "_Declared":
        """The fields of ``info``; each one absent or malformed is a failure in ``verdict``
        (None: only read them)."""
        problems: list[str] = []
        out = cls(plantation=info.get("Farmtel-Plantation", ""))
        absent = [k for k in DECLARED if not info.get(k)]
        if absent:
            problems.append(f"bag-info.txt has no {', '.join(absent)} (every export writes it)")
        texts = (info.get("Farmtel-Period-Start", ""), info.get("Farmtel-Period-End", ""))
        out.period_text = texts
        times = [_parse_time(t) for t in texts]
        keys = ("Farmtel-Period-Start", "Farmtel-Period-End")
        for key, text, ns in zip(keys, texts, times, strict=True):
            if text and ns is None:
                problems.append(
                    f"bag-info.txt {key} is {text!r}, not a time as export writes it "
                    "(2026-01-01T00:00:00.000000000Z)"
                )
        start, end = times
        if start is not None and end is not None:
            if start < end:
                out.period = (start, end)
            else:
                problems.append(
                    f"bag-info.txt Farmtel-Period-Start {texts[0]} is not before "
                    f"Farmtel-Period-End {texts[1]}"
                )
        for key, _file, _what in DECLARED_COUNTS:
            text = info.get(key, "")
            if not text:
                continue
            if text.isascii() and text.isdigit() and (text == "0" or text[0] != "0"):
                out.counts[key] = int(text)
            else:
                problems.append(f"bag-info.txt {key} is {text!r}, not a whole number")
        if verdict is not None:
            for p in problems:
                verdict.fail(p)
        return out


def _parse_time(text: str) -> int | None:
    """ns since the epoch of a time as certify.rows.rfc3339_ns writes it; None otherwise."""
    m = _TIME.fullmatch(text)
    if m is None:
        return None
    try:
        seconds = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
        ns = seconds * 1_000_000_000 + int(m.group(2))
        return ns if rfc3339_ns(ns) == text else None
    except (ValueError, OverflowError, OSError):
        return None


def _check_registry_plantation(src: BundleSource, plantation: str, verdict: Verdict) -> str:
    """The plantation the content is checked for: bag-info.txt's, or registry.json's when
    bag-info.txt names none (that failure is named once, not once per reading). A registry
    of another plantation is a failure."""
    try:
        registry = orjson.loads(src.read("data/registry.json"))
    except orjson.JSONDecodeError:
        return plantation  # named when the registry is loaded
    theirs = registry.get("plantation") if isinstance(registry, dict) else None
    if not plantation:
        return theirs if isinstance(theirs, str) else ""
    if theirs is not None and theirs != plantation:
        verdict.fail(
            f"data/registry.json is for plantation {theirs!r}, the bundle (bag-info.txt "
            f"Farmtel-Plantation) for {plantation!r}"
        )
    return plantation


def _check_counts(declared: _Declared, verdict: Verdict) -> None:
    counted = {
        "Farmtel-Readings": verdict.readings,
        "Farmtel-Batches": verdict.batches,
        "Farmtel-Gaps": verdict.gaps,
        "Farmtel-Quarantined": verdict.quarantined,
    }
    for key, name, what in DECLARED_COUNTS:
        said = declared.counts.get(key)
        if said is not None and said != counted[key]:
            verdict.fail(f"bag-info.txt {key} is {said}, but {name} holds {counted[key]} {what}")


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
            verdict.fail_each(_BAD_BATCH_LINE, f"data/batches.jsonl line {n}: {err}")
            continue
        if b.batch in batches:
            verdict.fail_each(
                _BAD_BATCH_LINE, f"data/batches.jsonl line {n}: batch {b.batch} is listed twice"
            )
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
            verdict.fail_each(_BAD_GAP, f"data/gaps.csv line {n}: {err}")
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
    if ob.unreadable:
        ob.readings = []
        return
    b = ob.row
    gaps = gaps_by_batch.get(b.batch, [])
    where = f"batch {b.batch} (gateway {b.gateway}, seq {b.first_seq}..{b.last_seq})"
    if len(ob.readings) != b.readings or len(gaps) != b.gaps:
        verdict.fail_each(
            _BATCH_FAILS,
            f"{where}: the bundle holds {len(ob.readings)} readings and {len(gaps)} gaps of "
            f"it, the record says {b.readings} and {b.gaps}",
        )
    if ob.quarantined != b.quarantined:
        verdict.fail_each(
            _BATCH_FAILS,
            f"{where}: {QUARANTINED} holds {ob.quarantined} quarantined reading(s) of it, "
            f"the record says {b.quarantined}",
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
        verdict.fail_each(_BATCH_FAILS, f"{where}: {err}")
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
            verdict.fail_each(
                _BAD_GAP,
                f"gap of {g.gateway}/{g.sensor} at {g.start} names batch {g.batch}, "
                "which is not in data/batches.jsonl",
            )
        elif ob.row.gateway != g.gateway:
            verdict.fail_each(
                _BAD_GAP,
                f"gap of {g.gateway} at {g.start} names batch {g.batch} of gateway "
                f"{ob.row.gateway}",
            )
        gaps_by_batch.setdefault(g.batch, []).append(g)

    seqs: dict[str, _SeqSet] = {}
    if QUARANTINED in set(src.names()):
        _load_quarantined(src, plantation, batches, seqs, verdict)
    return _Loaded(keys, batches, gaps, gaps_by_batch, seqs)


@dataclass
class _CsvHeader:
    """What the readings.csv header says: its columns, the value columns (None when the
    lines cannot be compared with readings.jsonl), and whether lines end in LF only."""

    columns: list[str]
    values: list[str] | None
    lf: bool


def _csv_header(line: bytes, first: bytes | None, verdict: Verdict) -> _CsvHeader:
    """The readings.csv header (``line``, without its ``\\n``); ``first`` is the line after
    it, to tell a file whose line ends were all changed. Each way it is not the export's is
    a failure, named once."""
    text = line.decode("utf-8", errors="replace")
    lf = not text.endswith("\r") and (first is None or not first.endswith(b"\r"))
    if lf and text:
        verdict.fail(
            "data/readings.csv has LF line endings; the export writes CRLF: was it opened "
            "and saved in an editor?"
        )
    elif not text.endswith("\r"):
        verdict.fail("data/readings.csv header line ends in LF; the export writes CRLF")
    header = text.removesuffix("\r").split(",")
    if header[0].startswith("\ufeff"):
        verdict.fail(
            "data/readings.csv starts with a byte order mark (BOM); the export writes none: "
            "was it opened and saved in an editor?"
        )
        header[0] = header[0][1:]
    fixed = list(READING_FIXED_COLUMNS)
    if header[: len(fixed)] != fixed:
        i = next(
            (i for i, (a, b) in enumerate(zip(header, fixed, strict=False)) if a != b),
            min(len(header), len(fixed)),
        )
        found = repr(header[i]) if i < len(header) else "missing"
        verdict.fail(
            f"data/readings.csv header differs from the export's: column {i + 1} is {found}, "
            f"expected {fixed[i]!r} (found {','.join(header[: len(fixed)])}; expected "
            f"{','.join(fixed)}, then one column per value): its lines were not compared with "
            "data/readings.jsonl"
        )
        return _CsvHeader(header, None, lf)
    values = header[len(fixed) :]
    if values != sorted(set(values)):
        verdict.fail(
            f"data/readings.csv value columns {','.join(values)} are not sorted by name and "
            "distinct, as the export writes them: its lines were not compared with "
            "data/readings.jsonl"
        )
        return _CsvHeader(header, None, lf)
    return _CsvHeader(header, values, lf)


def _csv_difference(got: str, want: str, columns: Sequence[str]) -> str:
    """What differs between a readings.csv line and the one export writes for the reading:
    the first column that differs, with both values."""
    if got.endswith("\n") and not got.endswith("\r\n") and got[:-1] == want[:-2]:
        return "it ends in LF; the export writes CRLF"
    try:
        have = next(csv.reader([got.removesuffix("\n").removesuffix("\r")]), [])
        should = next(csv.reader([want.removesuffix("\r\n")]), [])
    except csv.Error:
        return "it is not the line the export writes for that reading"
    for i, (a, b) in enumerate(zip(have, should, strict=False)):
        if a != b:
            name = columns[i] if i < len(columns) else f"column {i + 1}"
            return f"{name} is {_cell(a)} in the CSV, {_cell(b)} in the JSON Lines"
    if len(have) != len(should):
        return f"it has {len(have)} cells, the header {len(should)} columns"
    return "the cells are the same, written otherwise (quoting)"


def _cell(text: str) -> str:
    return repr(text) if text else "empty"


def _salvage(line: bytes, csv_text: bytes | None) -> tuple[ReadingRow | None, str, int, str] | None:
    """What can still be told of a readings.jsonl line that is not a reading row:
    ``(row, gateway, seq, batch)``, the row when only time_utc is wrong (ts_ns is what the
    gateway signed), else only where it belongs, from the line or the readings.csv line
    beside it; None when not even that. So the reading is not named again as missing from
    its batch and its gateway's seqs."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        ts = obj.get("ts_ns")
        if type(ts) is int and "time_utc" in obj:
            try:
                row, _ = parse_reading_json(orjson.dumps({**obj, "time_utc": rfc3339_ns(ts)}))
                return row, row.gateway, row.seq, row.batch
            except (RowError, ValueError, OverflowError, OSError):
                pass
        gateway, seq, batch = obj.get("gateway"), obj.get("seq"), obj.get("batch")
        if type(gateway) is str and gateway and type(seq) is int and type(batch) is str:
            return None, gateway, seq, batch
    if csv_text is not None:
        cells = csv_text.decode("utf-8", errors="replace").split(",")
        if len(cells) > 10 and cells[2] and cells[8].isascii() and cells[8].isdigit():
            return None, cells[2], int(cells[8]), cells[10]
    return None


def _check_content(
    src: BundleSource, plantation: str, period: tuple[int, int] | None, verdict: Verdict
) -> None:
    loaded = _load(src, plantation, verdict)
    keys, batches, gaps, gaps_by_batch, seqs = (
        loaded.keys,
        loaded.batches,
        loaded.gaps,
        loaded.gaps_by_batch,
        loaded.seqs,
    )
    csv_lines = iter_lines(src, "data/readings.csv")
    header_line = next(csv_lines, b"")
    first = next(csv_lines, None)
    if first is not None:
        csv_lines = itertools.chain([first], csv_lines)
    header = _csv_header(header_line, first, verdict)
    values = header.values
    ends = b"\r\n" if header.lf else b"\n"
    csv_done = False
    start, end = period or (0, 0)
    inside: dict[str, list[int]] = {}
    """gateway -> lowest and highest seq of its readings dated in the period."""
    outside: dict[str, list[int]] = {}
    """batch -> readings dated outside the period, and the first one's time."""
    n = 0
    for n, line in enumerate(iter_lines(src, "data/readings.jsonl"), 1):
        csv_text = next(csv_lines, None)
        compare = values is not None
        try:
            r, when = parse_reading_json(line)
        except RowError as err:
            verdict.fail_each(_NOT_A_ROW, f"data/readings.jsonl line {n}: {err}")
            salvaged = _salvage(line, csv_text)
            if salvaged is None:
                continue
            row, gateway, seq, batch = salvaged
            if row is None:
                s = seqs.get(gateway)
                if s is None:
                    s = seqs[gateway] = _SeqSet()
                s.add(seq)
                ob = batches.get(batch)
                if ob is not None:
                    ob.unreadable += 1
                continue
            r, when, compare = row, "", False  # the CSV line cannot tell more
        verdict.readings += 1
        if csv_text is None:
            if not csv_done:
                verdict.fail(f"data/readings.csv ends before line {n} of data/readings.jsonl")
                csv_done = True
        elif compare and values is not None:
            got = (csv_text + (b"\n" if csv_text.endswith(b"\r") else ends)).decode(
                "utf-8", errors="replace"
            )
            want = reading_csv_line(r, values, when)
            if got != want:
                absent = [k for k in r.values if k not in values]
                if absent:
                    verdict.fail(
                        f"data/readings.csv has no column {absent[0]}, which data/readings.jsonl "
                        f"line {n} has (its value columns are {','.join(values)}): its lines "
                        "were not compared further"
                    )
                    values = None
                else:
                    verdict.fail_each(
                        _CSV_DIFFERS,
                        f"data/readings.csv line {n + 1} differs from data/readings.jsonl line "
                        f"{n}: {_csv_difference(got, want, header.columns)}",
                    )
        if plantation and r.plantation != plantation:
            verdict.fail_each(
                _OTHER_PLANTATION,
                f"data/readings.jsonl line {n}: plantation {r.plantation}, the bundle "
                f"is for {plantation}",
            )
        s = seqs.get(r.gateway)
        if s is None:
            s = seqs[r.gateway] = _SeqSet()
        if not s.add(r.seq):
            verdict.fail_each(
                _TWICE,
                f"data/readings.jsonl line {n}: gateway {r.gateway} seq {r.seq} appears twice",
            )
            continue  # its batch has it once already
        ob = batches.get(r.batch)
        if ob is None:
            verdict.fail_each(
                _NO_BATCH,
                f"data/readings.jsonl line {n}: reading {r.gateway} seq {r.seq} names batch "
                f"{r.batch!r}, which data/batches.jsonl does not list",
            )
            continue
        b = ob.row
        if b.gateway != r.gateway or not b.first_seq <= r.seq <= b.last_seq:
            verdict.fail_each(
                _NO_BATCH,
                f"data/readings.jsonl line {n}: reading {r.gateway} seq {r.seq} is outside "
                f"batch {b.batch} ({b.gateway} seq {b.first_seq}..{b.last_seq})",
            )
            continue
        if ob.done:
            verdict.fail_each(
                _NO_BATCH,
                f"data/readings.jsonl line {n}: reading {r.gateway} seq {r.seq} is one more "
                f"reading of batch {b.batch} than its record counts ({b.readings})",
            )
            continue
        if period is not None:
            if start <= r.ts < end:
                lo_hi = inside.get(r.gateway)
                if lo_hi is None:
                    inside[r.gateway] = [r.seq, r.seq]
                elif r.seq < lo_hi[0]:
                    lo_hi[0] = r.seq
                elif r.seq > lo_hi[1]:
                    lo_hi[1] = r.seq
            else:
                away = outside.get(b.batch)
                if away is None:
                    outside[b.batch] = [1, r.ts]
                else:
                    away[0] += 1
        ob.readings.append(r)
        if len(ob.readings) == b.readings:
            _check_batch(ob, plantation, keys, gaps_by_batch, verdict)
    extra = sum(1 for rest in csv_lines if rest)
    if extra:
        verdict.fail(f"data/readings.csv has {extra} line(s) more than data/readings.jsonl")
    for ob in batches.values():
        if not ob.done:
            _check_batch(ob, plantation, keys, gaps_by_batch, verdict)
    _check_continuity(seqs, gaps, verdict)
    if period is not None:
        edges = {gw: (lo, hi) for gw, (lo, hi) in inside.items()}
        for bid, (count, first_ts) in outside.items():
            b = batches[bid].row
            if _period_cuts(b, edges.get(b.gateway), gaps_by_batch.get(bid, []), period):
                continue
            edge = edges.get(b.gateway)
            why = (
                f"{b.gateway}'s readings in the period are seq {edge[0]}..{edge[1]}"
                if edge
                else f"{b.gateway} has no reading in the period"
            )
            verdict.fail_each(
                _OUTSIDE_PERIOD,
                f"batch {bid} (gateway {b.gateway}, seq {b.first_seq}..{b.last_seq}) has "
                f"{count} reading(s) dated outside the period {rfc3339_ns(start)} to "
                f"{rfc3339_ns(end)} (the first at {rfc3339_ns(first_ts)}), and the period does "
                f"not cut it: {why}, and it declares no gap in the period",
            )
    verdict.ranges = {gw: (s.lo[0], s.hi[-1]) for gw, s in sorted(seqs.items()) if s.lo}


def _period_cuts(
    b: BatchRow, inside: tuple[int, int] | None, gaps: Iterable[GapRow], period: tuple[int, int]
) -> bool:
    """Whether export takes batch ``b`` into a bundle of ``period`` (certify.export), and with
    it its readings dated outside the period: its seq range meets ``inside``, the lowest and
    highest seq of its gateway's readings dated in the period, or it declared a gap that
    overlaps the period."""
    return b.meets(inside) or any(g.overlaps(*period) for g in gaps)


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
            verdict.fail_each(_BAD_QUARANTINED, f"{where}: {err}")
            continue
        verdict.quarantined += 1
        if plantation and r.plantation != plantation:
            verdict.fail_each(
                _BAD_QUARANTINED,
                f"{where}: plantation {r.plantation}, the bundle is for {plantation}",
            )
        s = seqs.get(r.gateway)
        if s is None:
            s = seqs[r.gateway] = _SeqSet()
        if not s.add(r.seq):
            verdict.fail_each(
                _BAD_QUARANTINED, f"{where}: gateway {r.gateway} seq {r.seq} appears twice"
            )
            continue
        ob = batches.get(r.batch)
        if ob is None:
            verdict.fail_each(
                _BAD_QUARANTINED,
                f"{where}: quarantined reading {r.gateway} seq {r.seq} names batch "
                f"{r.batch!r}, which data/batches.jsonl does not list",
            )
            continue
        b = ob.row
        if b.gateway != r.gateway or not b.first_seq <= r.seq <= b.last_seq:
            verdict.fail_each(
                _BAD_QUARANTINED,
                f"{where}: quarantined reading {r.gateway} seq {r.seq} is outside batch "
                f"{b.batch} ({b.gateway} seq {b.first_seq}..{b.last_seq})",
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
                verdict.fail_each(
                    _HOLES,
                    f"gateway {gw}: seq {first}..{last} ({last - first + 1} reading(s)) are "
                    "missing and no declared gap accounts for them",
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


def _subtract(have: list[tuple[int, int]], away: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The seqs of ``have`` not in ``away`` (both sorted, disjoint, inclusive ranges)."""
    out: list[tuple[int, int]] = []
    j = 0
    for lo, hi in have:
        while lo <= hi:
            while j < len(away) and away[j][1] < lo:
                j += 1
            if j == len(away) or away[j][0] > hi:
                out.append((lo, hi))
                break
            if away[j][0] > lo:
                out.append((lo, away[j][0] - 1))
            lo = away[j][1] + 1
    return out


@dataclass
class _Clean:
    """Checks 3-5 and the period found nothing; what the verdict gives."""

    plantation: str
    period: tuple[int, int]
    readings: int
    quarantined: int
    batches: int
    batches_verified: int
    gaps: int
    ranges: dict[str, tuple[int, int]]


class _FastPath:
    """Checks 3-5 and the period over chunks of the readings files (certify.verify_chunks),
    in worker processes when the bundle is a folder large enough to be worth them."""

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
            declared = _Declared.read(parse_bag_info(src.read("bag-info.txt"), []), None)
            plantation = declared.plantation
            if not plantation or declared.period is None:
                return None
            scratch = Verdict()
            loaded = _load(src, plantation, scratch)
            with src.open("data/readings.csv") as f:
                head = f.readline().rstrip(b"\n")
                line = f.readline()
                first = line.removesuffix(b"\n") if line else None
            header = _csv_header(head, first, scratch)
            if scratch.found or header.values is None:
                return None
            ctx = _chunk_context(plantation, loaded, header.values, declared.period)
            if ctx is None:
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
        """What the verdict gives when checks 3-5 and the period find nothing, else None."""
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
            if self.scratch.found:
                return None
            # Readings dated outside the period: only in batches the period cuts.
            inside = {}
            for gw, ranges in summary.ranges.items():
                rest = _subtract(ranges, summary.outside_ranges.get(gw, []))
                if rest:
                    inside[gw] = (rest[0][0], rest[-1][1])
            for bid in summary.outside:
                b = self.loaded.batches[bid].row
                gaps = self.loaded.gaps_by_batch.get(bid, [])
                if not _period_cuts(b, inside.get(b.gateway), gaps, self.ctx.period):
                    return None
            return _Clean(
                self.plantation,
                self.ctx.period,
                summary.readings,
                self.scratch.quarantined,
                self.scratch.batches,
                summary.batches_verified,
                self.scratch.gaps,
                {gw: (s.lo[0], s.hi[-1]) for gw, s in sorted(seqs.items()) if s.lo},
            )
        except Exception:
            return None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _chunk_context(
    plantation: str, loaded: _Loaded, value_names: list[str], period: tuple[int, int]
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
    return verify_chunks.Context(plantation, tuple(value_names), specs, keys, period)
