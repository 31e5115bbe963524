"""The readings files of a bundle checked in chunks, in worker processes: verify's fast path.

certify.verify's sequential pass is the reference: it reads readings.jsonl and readings.csv
row by row and names every failure in file order. This module answers one question faster:
would that pass find nothing wrong with the readings? It checks conditions that imply it,
chunk by chunk (a few MB of whole lines), in one worker process per CPU:

- every readings.jsonl line is a reading row that ``parse_reading_json`` accepts, of the
  bundle's plantation, and the readings.csv line beside it is the one ``reading_csv_line``
  writes for it;
- every reading names a batch of the bundle, of its gateway and seq range;
- each batch's readings (with its quarantined readings) number what its record says, and its
  signature checks over the canonical message (contract/signing.py) rebuilt from them;
- no gateway seq appears twice (the caller then checks continuity with the seq ranges);
- which batches hold readings dated outside the bundle's period, and their seqs (the caller
  checks that only batches the period cuts do). Only a reading in a second that the period
  does not wholly hold costs anything for this: the caches of second texts keep only
  seconds inside the period, so the others take the slow way, which looks at the time.

Anything else, or anything unexpected (a worker that dies, a file that changes under us),
means "not shown clean": :func:`check_readings` returns None and verify runs the sequential
pass, which names the failures. So this path only confirms a valid bundle faster; it never
decides that a bundle is invalid, and it accepts nothing the sequential pass would reject.

Memory stays flat: a few chunks are in flight, and the main process keeps only the
readings of batches that span chunks and, per gateway, a list of seq ranges.
"""

import contextlib
import gc
import os
import re
import signal
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, BinaryIO

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certify.rows import READING_JSON_KEYS, csv_cell
from contract import signing

JSONL = "data/readings.jsonl"
CSV = "data/readings.csv"
CHUNK_BYTES = 2 << 20
"""readings.jsonl bytes per chunk (whole lines); readings.csv follows line for line."""
RESULT_TIMEOUT_S = 600
"""A worker that has not answered by then is taken for stuck: the sequential pass runs."""

_ROW = itemgetter(*READING_JSON_KEYS)
_NS = 1_000_000_000
_NOT_PLAIN = re.compile(r'["\\\x00-\x1f\x7f]')
"""What a CSV cell must not hold to be copied into a JSON string as it is."""
_NOT_PLAIN_BYTES = bytes([*range(0x20), 0x7F]) + b'"\\'
_Opened = dict[str, tuple[str, list[int], list[str]]]
"""batch -> (gateway, seqs, reading lines) of a chunk's readings."""


@dataclass(frozen=True, slots=True)
class BatchSpec:
    """What a chunk needs to know of a batch record."""

    gateway: str
    first_seq: int
    last_seq: int
    expect: int
    """Readings of the batch in readings.jsonl: the record's count less its quarantined ones."""
    head: bytes
    """The canonical message up to the reading lines."""
    tail: bytes
    """The canonical message after the reading lines (the gap lines)."""
    sig: str
    extra: tuple[tuple[int, str], ...] = ()
    """``(seq, reading line)`` of the batch's quarantined readings, signed with it."""


@dataclass(frozen=True, slots=True)
class Context:
    plantation: str
    value_names: tuple[str, ...]
    batches: dict[str, BatchSpec]
    keys: dict[str, dict[str, bytes]]
    """gateway -> key id -> raw Ed25519 public key (registry.json)."""
    period: tuple[int, int]
    """The bundle's period (bag-info.txt), ``[start, end)`` in ns."""


@dataclass(slots=True)
class ChunkResult:
    lines: int = 0
    ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """gateway -> sorted, disjoint, inclusive seq ranges of the chunk's readings."""
    verified: dict[str, int] = field(default_factory=dict)
    """batch -> readings, for the batches whole in the chunk and checked there."""
    partial: dict[str, tuple[list[int], list[str]]] = field(default_factory=dict)
    """batch -> (seqs, reading lines) of batches that go on in other chunks."""
    outside: set[str] = field(default_factory=set)
    """Batches with a reading dated outside the period."""
    outside_ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """gateway -> seq ranges of the chunk's readings dated outside the period."""
    why: str | None = None
    """Why the chunk is not shown clean; None when it is."""


@dataclass(slots=True)
class Summary:
    """What a clean run found: the caller checks continuity with ``ranges``."""

    readings: int
    batches_verified: int
    ranges: dict[str, list[tuple[int, int]]]
    outside: set[str]
    """Batches with a reading dated outside the period."""
    outside_ranges: dict[str, list[tuple[int, int]]]
    """gateway -> seq ranges of its readings dated outside the period."""


class _NotClean(Exception):
    pass


class _Scanner:
    """Per-process caches for the rows of a bundle: most rows repeat a few prefixes,
    calibrations, value names, seconds and values."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.prefixes: dict[tuple[Any, ...], tuple[str, str]] = {}
        self.seconds: dict[int, str] = {}
        self.cals: dict[str, tuple[str, str]] = {}
        self.formats: dict[tuple[str, ...], tuple[str, str]] = {}
        self.floats: dict[float, str] = {}
        self.keys: dict[str, dict[str, Ed25519PublicKey]] = {}
        self.second_texts: dict[str, str] = {}
        self.minute_texts: dict[int, str] = {}
        self.value_texts: dict[str, tuple[str, str]] = {}
        self.float_texts: dict[str, bool] = {}
        self.plain_names = not any(_NOT_PLAIN.search(n) for n in ctx.value_names)
        start, end = ctx.period
        self.inside_s = (-(-start // _NS), end // _NS)
        """The seconds the period holds whole: only their texts are cached."""
        self.away: list[tuple[str, str, int]] = []
        """``(gateway, batch, seq)`` of the readings dated outside the period (_from_json)."""

    def prefix(self, key: tuple[Any, ...]) -> tuple[str, str]:
        """CSV cells up to time_utc, and ``sensor field kind`` of the reading line, for
        ``(plantation, field, gateway, sensor, kind)`` once they are checked."""
        plantation, fld, gateway, sensor, kind = key
        for v in (fld, gateway, sensor, kind):
            if type(v) is not str or not v:
                raise _NotClean(f"a row has {v!r} for a text cell")
        if plantation != self.ctx.plantation:
            raise _NotClean(f"a row has plantation {plantation!r}")
        out = (f"{plantation},{fld},{gateway},{sensor},{kind},", f"{sensor} {fld} {kind}")
        if len(self.prefixes) > 10_000:
            self.prefixes.clear()
        self.prefixes[key] = out
        return out

    def second(self, seconds: int) -> str:
        """``YYYY-MM-DDTHH:MM:SS`` (as certify.rows.rfc3339_ns writes it) of a second."""
        minute, second = divmod(seconds, 60)
        text = f"{self.minute_texts.get(minute) or self.minute_text(minute)}{second:02d}"
        if len(self.seconds) > 10_000:
            self.seconds.clear()
        if self.inside_s[0] <= seconds < self.inside_s[1]:
            self.seconds[seconds] = text
        return text

    def minute_text(self, minute: int) -> str:
        text = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
        if len(self.minute_texts) > 10_000:
            self.minute_texts.clear()
        self.minute_texts[minute] = text
        return text

    def cal(self, cal: Any) -> tuple[str, str]:
        """``(csv cell, reading line word)`` of a calibration version."""
        if type(cal) is not str:
            raise _NotClean(f"a row has cal {cal!r}")
        cell = csv_cell(cal) if cal and any(c in cal for c in ',"\r\n') else cal
        out = (cell, cal or "-")
        if len(self.cals) > 10_000:
            self.cals.clear()
        self.cals[cal] = out
        return out

    def format(self, names: tuple[str, ...]) -> tuple[str, str]:
        """``str.format`` templates for the value cells of readings.csv and the values of a
        reading line, from the values' reprs in ``names`` order."""
        if not names:
            raise _NotClean("a row has no values")
        index = {n: i for i, n in enumerate(names)}
        cells = "".join(
            "," + (f"{{{index[n]}}}" if n in index else "") for n in self.ctx.value_names
        )
        line = ",".join(
            n.replace("{", "{{").replace("}", "}}") + f"={{{index[n]}}}" for n in sorted(names)
        )
        out = (cells, line)
        if len(self.formats) > 10_000:
            self.formats.clear()
        self.formats[names] = out
        return out

    def float_repr(self, v: float) -> str:
        text = repr(v)
        if v:  # 0.0 and -0.0 are one key but two texts
            if len(self.floats) > 50_000:
                self.floats.clear()
            self.floats[v] = text
        return text

    def gateway_keys(self, gateway: str) -> dict[str, Ed25519PublicKey]:
        keys = self.keys.get(gateway)
        if keys is None:
            keys = {
                kid: Ed25519PublicKey.from_public_bytes(raw)
                for kid, raw in self.ctx.keys.get(gateway, {}).items()
            }
            self.keys[gateway] = keys
        return keys

    def verify(self, batch: str, seqs: list[int], lines: list[str]) -> None:
        """Check a batch's signature over its readings (``seqs``/``lines`` in any order)."""
        spec = self.ctx.batches[batch]
        if spec.extra:
            seqs = seqs + [s for s, _ in spec.extra]
            lines = lines + [text for _, text in spec.extra]
        if seqs != sorted(seqs):
            order = sorted(range(len(seqs)), key=seqs.__getitem__)
            lines = [lines[i] for i in order]
        message = spec.head + "".join(lines).encode("utf-8") + spec.tail
        try:
            signing.verify(self.gateway_keys(spec.gateway), spec.sig or None, message)
        except signing.SignatureError as err:
            raise _NotClean(f"batch {batch}: {err}") from None

    def scan(self, data: bytes, csv: bytes, last: bool) -> ChunkResult:
        """Check a chunk of whole readings.jsonl lines against the readings.csv lines beside
        them (``last``: the chunk ends the file, its last line may lack the newline).

        Two ways: :meth:`_from_csv` for chunks in the exact form export writes (almost
        all), else :meth:`_from_json`, which parses each JSON row as verify's sequential
        pass does."""
        gc_was_on = gc.isenabled()
        gc.disable()  # the rows make no cycles; the collector would only walk them
        try:
            self.away = []
            lines, opened = self._from_csv(data, csv, last) or self._from_json(data, csv, last)
            result = ChunkResult(lines=lines)
            self._close_batches(opened, result)
            if self.away:
                away: dict[str, list[int]] = {}
                for gateway, batch, seq in self.away:
                    result.outside.add(batch)
                    away.setdefault(gateway, []).append(seq)
                result.outside_ranges = {gw: seq_ranges(seqs) for gw, seqs in away.items()}
        except Exception as err:  # anything unexpected: not shown clean
            return ChunkResult(why=f"{type(err).__name__}: {err}")
        finally:
            if gc_was_on:
                gc.enable()
        return result

    def _from_csv(self, data: bytes, csv: bytes, last: bool) -> tuple[int, _Opened] | None:
        """Rebuild each readings.jsonl line from the readings.csv line beside it, as export
        writes it, and compare the chunk byte for byte; None when it differs or a cell is not
        plain (the JSON rows then decide).

        Sound because the rebuilt line is JSON that means exactly the row built from the CSV
        cells: its strings are those cells, which hold no quote, backslash or control
        character; its integers are canonical decimals that orjson reads as integers; each
        value is a text that orjson reads as a float whose repr it is; ``cal`` is null for
        an empty cell. If readings.jsonl holds exactly those lines, parse_reading_json reads
        this row from each, and the CSV line is the one reading_csv_line writes for it."""
        ctx = self.ctx
        if not self.plain_names:
            return None
        try:
            text = csv.decode("utf-8")
        except UnicodeDecodeError:
            return None
        # Of the bytes that may not be copied into a JSON string, only the line ends may be
        # there. (Any other text may: JSON strings hold UTF-8 as it is.)
        if len(csv) - len(csv.translate(None, _NOT_PLAIN_BYTES)) != 2 * csv.count(b"\r\n"):
            return None
        ascii_only = text.isascii()  # else isdigit() would pass other scripts' digits too
        lines = text.split("\r\n")
        if lines.pop() or (last and not data.endswith(b"\n")):
            return None
        plantation = ctx.plantation
        batches = ctx.batches
        seconds, values = self.second_texts, self.value_texts
        opened: _Opened = {}
        out: list[str] = []
        add = out.append
        try:
            for line in lines:
                pl, fld, gateway, sensor, kind, time_utc, ts, clock, seq, cal, batch, cells = (
                    line.split(",", 11)
                )
                if pl != plantation or not (fld and sensor and kind and clock):
                    return None
                vals = values.get(cells) or self.value_text(cells)
                frac = ts[-9:]
                pre = seconds.get(ts[:-9]) or self.second_text(ts[:-9])
                if time_utc != f"{pre}.{frac}Z" or not frac.isdigit():
                    return None
                if not ascii_only and not frac.isascii():
                    return None
                n = int(seq)
                if len(seq) > 18 or str(n) != seq:
                    return None
                ob = opened.get(batch)
                if ob is None:
                    spec = batches.get(batch)
                    if spec is None:
                        return None
                    ob = opened[batch] = (spec.gateway, [], [])
                if ob[0] != gateway:
                    return None
                ob[1].append(n)
                if cal:
                    word = cal
                    json_cal = f'"{cal}"'
                else:
                    word = "-"
                    json_cal = "null"
                ob[2].append(f"R {seq} {sensor} {fld} {kind} {ts} {clock} {word} {vals[1]}\n")
                add(
                    f'{{"plantation":"{pl}","field":"{fld}","gateway":"{gateway}",'
                    f'"sensor":"{sensor}","kind":"{kind}","time_utc":"{time_utc}",'
                    f'"ts_ns":{ts},"clock":"{clock}","seq":{seq},'
                    f'"cal":{json_cal},"batch":"{batch}",'
                    f'"values":{{{vals[0]}}}}}\n'
                )
        except Exception:  # a cell that is not as export writes it
            return None
        if "".join(out).encode("utf-8") != data:
            return None
        return len(lines), opened

    def value_text(self, cells: str) -> tuple[str, str]:
        """``(JSON members, reading line values)`` for the value cells of a CSV line."""
        texts = cells.split(",")
        if len(texts) != len(self.ctx.value_names):
            raise _NotClean("a CSV line has another number of cells")
        members = []
        words = []
        for name, t in zip(self.ctx.value_names, texts, strict=True):
            if not t:
                continue
            ok = self.float_texts.get(t)
            if ok is None:
                try:
                    v = orjson.loads(t)
                except orjson.JSONDecodeError:
                    v = None
                ok = type(v) is float and repr(v) == t
                if len(self.float_texts) > 20_000:
                    self.float_texts.clear()
                self.float_texts[t] = ok
            if not ok:
                raise _NotClean(f"value {t!r} is not the repr of a float")
            members.append(f'"{name}":{t}')
            words.append(f"{name}={t}")
        if not members:
            raise _NotClean("a row has no values")
        out = (",".join(members), ",".join(words))  # value_names are sorted, as signed
        if len(self.value_texts) > 20_000:
            self.value_texts.clear()
        self.value_texts[cells] = out
        return out

    def second_text(self, sec: str) -> str:
        """``YYYY-MM-DDTHH:MM:SS`` for the seconds digits of a ts_ns text (ASCII)."""
        if not sec.isdigit() or not sec.isascii() or sec[0] == "0" or len(sec) > 10:
            raise _NotClean(f"ts_ns {sec}... is not a plain positive integer of 10 to 19 digits")
        n = int(sec)
        if not self.inside_s[0] <= n < self.inside_s[1]:
            # Outside the period, or on its edge: _from_json looks at each such reading.
            raise _NotClean("a reading in a second that the period does not hold whole")
        minute, second = divmod(n, 60)
        out = f"{self.minute_texts.get(minute) or self.minute_text(minute)}{second:02d}"
        if len(self.second_texts) > 10_000:
            self.second_texts.clear()
        self.second_texts[sec] = out
        return out

    def _from_json(self, data: bytes, csv: bytes, last: bool) -> tuple[int, _Opened]:
        """Parse each readings.jsonl line as parse_reading_json does, and rebuild the
        readings.csv line beside it as reading_csv_line does."""
        lines = data.split(b"\n")
        if not lines[-1]:
            lines.pop()
        elif not last:
            raise _NotClean("a chunk does not end with a whole line")
        loads = orjson.loads
        row = _ROW
        prefixes, seconds, cals, formats, floats = (
            self.prefixes,
            self.seconds,
            self.cals,
            self.formats,
            self.floats,
        )
        batches = self.ctx.batches
        start, end = self.ctx.period
        away = self.away = []
        opened: _Opened = {}
        csv_lines: list[str] = []
        add_csv = csv_lines.append
        for line in lines:
            obj = loads(line)
            if len(obj) != 12:
                raise _NotClean("a row has not the 12 keys")
            pl, fld, gateway, sensor, kind, time_utc, ts, clock, seq, cal, batch, values = row(obj)
            key = (pl, fld, gateway, sensor, kind)
            pre = prefixes.get(key) or self.prefix(key)
            if type(ts) is not int or type(seq) is not int or type(values) is not dict:
                raise _NotClean("a row has a ts_ns, seq or values of the wrong type")
            if type(clock) is not str or not clock:
                raise _NotClean("a row has no clock")
            sec, frac = divmod(ts, _NS)
            sec_text = seconds.get(sec)
            if sec_text is None:  # seconds the period does not hold whole come here each time
                sec_text = self.second(sec)
                if not start <= ts < end:
                    away.append((gateway, batch, seq))
            if time_utc != f"{sec_text}.{frac:09d}Z":
                raise _NotClean("a row's time_utc is not its ts_ns")
            cal_cell, cal_word = ("", "-") if cal is None else (cals.get(cal) or self.cal(cal))
            reprs = []
            for v in values.values():
                if type(v) is not float:
                    raise _NotClean("a value is not a float")
                reprs.append(floats.get(v) or self.float_repr(v))
            names = tuple(values)
            cells, vals = formats.get(names) or self.format(names)
            ts_text = str(ts)
            seq_text = str(seq)
            add_csv(
                f"{pre[0]}{time_utc},{ts_text},{clock},{seq_text},{cal_cell},{batch}"
                f"{cells.format(*reprs)}\r\n"
            )
            ob = opened.get(batch)
            if ob is None:
                spec = batches.get(batch)
                if spec is None:
                    raise _NotClean(f"a row names batch {batch!r}, not in the bundle")
                ob = opened[batch] = (spec.gateway, [], [])
            if ob[0] != gateway:
                raise _NotClean("a row's gateway is not its batch's")
            ob[1].append(seq)
            ob[2].append(
                f"R {seq_text} {pre[1]} {ts_text} {clock} {cal_word} {vals.format(*reprs)}\n"
            )
        if "".join(csv_lines).encode("utf-8") != csv:
            raise _NotClean("readings.csv differs from readings.jsonl")
        return len(lines), opened

    def _close_batches(self, opened: _Opened, result: ChunkResult) -> None:
        """Check the chunk's batches that are whole in it; hand on the others."""
        batches = self.ctx.batches
        by_gateway: dict[str, list[int]] = {}
        for batch, (gateway, seqs, texts) in opened.items():
            spec = batches[batch]
            if len(seqs) > spec.expect or min(seqs) < spec.first_seq or max(seqs) > spec.last_seq:
                raise _NotClean(f"batch {batch} has readings beyond its record")
            by_gateway.setdefault(gateway, []).extend(seqs)
            if len(seqs) == spec.expect and not spec.extra:
                self.verify(batch, seqs, texts)
                result.verified[batch] = len(seqs)
            else:
                result.partial[batch] = (seqs, texts)
        for gateway, seqs in by_gateway.items():
            result.ranges[gateway] = seq_ranges(seqs)


def seq_ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted, disjoint, inclusive ranges of ``seqs``; :class:`_NotClean` on a duplicate."""
    seqs = sorted(seqs)
    out: list[tuple[int, int]] = []
    lo = prev = seqs[0]
    for s in seqs[1:]:
        if s == prev + 1:
            prev = s
            continue
        if s == prev:
            raise _NotClean(f"seq {s} appears twice")
        out.append((lo, prev))
        lo = prev = s
    out.append((lo, prev))
    return out


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Disjoint ranges joined where they touch; None when two overlap (a seq twice)."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            return None
        if out and lo == out[-1][1] + 1:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


class _Merger:
    """The main process's side: joins chunk results, checks batches that span chunks."""

    def __init__(self, scanner: _Scanner) -> None:
        self.scanner = scanner
        self.readings = 0
        self.counts: dict[str, int] = {}
        self.verified: set[str] = set()
        self.partial: dict[str, tuple[list[int], list[str]]] = {}
        self.ranges: dict[str, list[tuple[int, int]]] = {}
        self.outside: set[str] = set()
        self.outside_ranges: dict[str, list[tuple[int, int]]] = {}

    def add(self, r: ChunkResult) -> None:
        if r.why is not None:
            raise _NotClean(r.why)
        self.readings += r.lines
        batches = self.scanner.ctx.batches
        for batch, n in r.verified.items():
            if batch in self.counts:
                raise _NotClean(f"batch {batch} has readings beyond its record")
            self.counts[batch] = n
            self.verified.add(batch)
        for batch, (seqs, texts) in r.partial.items():
            n = self.counts.get(batch, 0) + len(seqs)
            if batch in self.verified or n > batches[batch].expect:
                raise _NotClean(f"batch {batch} has readings beyond its record")
            self.counts[batch] = n
            held = self.partial.get(batch)
            if held is None:
                held = self.partial[batch] = ([], [])
            held[0].extend(seqs)
            held[1].extend(texts)
            if n == batches[batch].expect:
                del self.partial[batch]
                self.scanner.verify(batch, *held)
                self.verified.add(batch)
        self.outside |= r.outside
        for into, add in ((self.ranges, r.ranges), (self.outside_ranges, r.outside_ranges)):
            for gateway, ranges in add.items():
                mine = into.setdefault(gateway, [])
                mine.extend(ranges)
                if len(mine) > 64:
                    merged = merge_ranges(mine)
                    if merged is None:
                        raise _NotClean(f"gateway {gateway}: a seq appears twice")
                    into[gateway] = merged

    def finish(self) -> Summary:
        for batch, spec in self.scanner.ctx.batches.items():
            if batch in self.verified:
                continue
            if self.counts.get(batch, 0) != spec.expect:
                raise _NotClean(f"batch {batch} lacks readings")
            held = self.partial.pop(batch, ([], []))
            self.scanner.verify(batch, *held)
            self.verified.add(batch)
        ranges: dict[str, list[tuple[int, int]]] = {}
        outside_ranges: dict[str, list[tuple[int, int]]] = {}
        for into, have in ((ranges, self.ranges), (outside_ranges, self.outside_ranges)):
            for gateway, mine in have.items():
                merged = merge_ranges(mine)
                if merged is None:
                    raise _NotClean(f"gateway {gateway}: a seq appears twice")
                into[gateway] = merged
        return Summary(self.readings, len(self.verified), ranges, self.outside, outside_ranges)


@dataclass(frozen=True, slots=True)
class _Chunk:
    j_off: int
    j_len: int
    c_off: int
    c_len: int
    last: bool
    data: bytes
    csv: bytes


def _chunks(fj: BinaryIO, fc: BinaryIO, chunk_bytes: int, keep: bool) -> Iterator[_Chunk]:
    """Chunks of whole readings.jsonl lines and the readings.csv lines beside them, as file
    ranges (and their bytes when ``keep``). :class:`_NotClean` when the CSV runs short."""
    head = fc.readline()
    if not head.endswith(b"\n"):
        head += fc.read()  # a CSV of one line: nothing follows the header
    cbuf = fc.read(chunk_bytes)
    cstart = len(head)  # file offset of cbuf[0]
    cpos = 0  # start of the next chunk's CSV lines in cbuf
    per_line = 128.0  # readings.csv bytes per line, to guess where n lines end
    j_off = 0
    size = chunk_bytes
    while True:
        fj.seek(j_off)
        block = fj.read(size)
        if not block:
            break
        last = len(block) < size
        cut = len(block) if last else block.rfind(b"\n") + 1
        if cut == 0:
            size *= 2  # a line longer than a chunk
            continue
        n = block.count(b"\n", 0, cut)
        if last and not block.endswith(b"\n"):
            n += 1  # the last line has no newline
        while (c_end := _after_lines(cbuf, cpos, n, int(n * per_line))) < 0:
            more = fc.read(max(chunk_bytes, len(cbuf) - cpos))
            if not more:
                raise _NotClean("readings.csv has fewer lines than readings.jsonl")
            cbuf = cbuf[cpos:] + more
            cstart += cpos
            cpos = 0
        per_line = (c_end - cpos) / n
        yield _Chunk(
            j_off,
            cut,
            cstart + cpos,
            c_end - cpos,
            last,
            block[:cut] if keep else b"",
            cbuf[cpos:c_end] if keep else b"",
        )
        cpos = c_end
        j_off += cut
        size = chunk_bytes
        if last:
            break
    # What readings.csv holds past the last reading's line: empty lines at most.
    rest = cbuf[cpos:]
    while rest:
        if rest.strip(b"\n"):
            raise _NotClean("readings.csv has more lines than readings.jsonl")
        rest = fc.read(chunk_bytes)


def _after_lines(buf: bytes, start: int, n: int, guess: int) -> int:
    """The index just after the ``n``-th newline from ``start``; -1 when ``buf`` has fewer.
    ``guess`` (bytes from ``start``) only saves time: the newlines are counted up to there,
    then found one by one forwards or backwards."""
    if n <= 0:
        return start
    end = min(len(buf), start + max(guess, 1))
    k = buf.count(b"\n", start, end)
    pos = end
    if k < n:
        for _ in range(n - k):
            pos = buf.find(b"\n", pos) + 1
            if pos == 0:
                return -1
        return pos
    for _ in range(k - n + 1):  # back from the k-th newline to the n-th
        pos = buf.rfind(b"\n", start, pos)
    return pos + 1


# -- worker processes ----------------------------------------------------------------------

_worker: tuple[_Scanner, int, int] | None = None


def _init_worker(ctx: Context, jsonl_path: str, csv_path: str) -> None:
    global _worker
    # Ctrl-C reaches the whole process group: verify itself stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = (
        _Scanner(ctx),
        os.open(jsonl_path, os.O_RDONLY),
        os.open(csv_path, os.O_RDONLY),
    )


def _pread(fd: int, n: int, off: int) -> bytes:
    parts = []
    while n > 0:
        got = os.pread(fd, n, off)
        if not got:
            break
        parts.append(got)
        n -= len(got)
        off += len(got)
    return b"".join(parts)


def _scan_in_worker(j_off: int, j_len: int, c_off: int, c_len: int, last: bool) -> ChunkResult:
    try:
        assert _worker is not None
        scanner, fj, fc = _worker
        data = _pread(fj, j_len, j_off)
        csv = _pread(fc, c_len, c_off)
        if len(data) != j_len or len(csv) != c_len:
            return ChunkResult(why="a readings file changed while it was read")
        return scanner.scan(data, csv, last)
    except Exception as err:
        return ChunkResult(why=f"{type(err).__name__}: {err}")


def _ready() -> int:
    return os.getpid()


def worker_count() -> int:
    """Worker processes to use: FARMTEL_VERIFY_WORKERS, or one per CPU this process may use
    (0: check the chunks in this process)."""
    env = os.environ.get("FARMTEL_VERIFY_WORKERS", "").strip()
    if env.isdigit():
        return int(env)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus if cpus > 1 else 0


class Pool:
    """Worker processes for one verify. On Linux they fork (no interpreter to start, the
    context is inherited), so they are started before verify starts its thread; elsewhere
    they spawn."""

    def __init__(self, ctx: Context, root: str, workers: int) -> None:
        import multiprocessing
        import sys

        method = "fork" if sys.platform == "linux" else "spawn"
        self.workers = workers
        self.stuck = False
        """A worker did not answer in time: :meth:`close` ends the workers."""
        root = os.path.abspath(root)
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_init_worker,
            initargs=(ctx, os.path.join(root, JSONL), os.path.join(root, CSV)),
        )
        try:
            self.executor.submit(_ready).result(timeout=RESULT_TIMEOUT_S)  # all started
        except BaseException:
            self.close(stuck=True)
            raise

    def close(self, stuck: bool = False) -> None:
        """Stop the workers; ``stuck``: they may not answer, end them."""
        if stuck or self.stuck:
            # ProcessPoolExecutor cannot end a worker that does not return (Python 3.14 has
            # terminate_workers); its processes are in _processes.
            processes = list((getattr(self.executor, "_processes", None) or {}).values())
            self.executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                with contextlib.suppress(Exception):
                    process.terminate()
        else:
            self.executor.shutdown(wait=True, cancel_futures=True)


def check_readings(
    ctx: Context,
    fj: BinaryIO,
    fc: BinaryIO,
    pool: Pool | None,
    chunk_bytes: int | None = None,
) -> Summary | None:
    """Check readings.jsonl (``fj``) and readings.csv (``fc``) in chunks, in ``pool``'s
    workers or in this process; the summary when the readings are shown clean, else None."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    scanner = _Scanner(ctx)
    merger = _Merger(scanner)
    try:
        if pool is None:
            for ch in _chunks(fj, fc, chunk_bytes, keep=True):
                merger.add(scanner.scan(ch.data, ch.csv, ch.last))
        else:
            pending: deque[Future[ChunkResult]] = deque()
            for ch in _chunks(fj, fc, chunk_bytes, keep=False):
                pending.append(
                    pool.executor.submit(
                        _scan_in_worker, ch.j_off, ch.j_len, ch.c_off, ch.c_len, ch.last
                    )
                )
                while len(pending) > 2 * pool.workers or (pending and pending[0].done()):
                    merger.add(pending.popleft().result(timeout=RESULT_TIMEOUT_S))
            while pending:
                merger.add(pending.popleft().result(timeout=RESULT_TIMEOUT_S))
        return merger.finish()
    except TimeoutError:
        if pool is not None:
            pool.stuck = True
        return None
    except Exception:  # not shown clean: the sequential pass will say why
        return None
