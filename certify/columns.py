"""Readings formatted a column at a time: the fast path of an export.

InfluxDB answers ``SELECT * ... GROUP BY *`` with one series per measurement and tag set,
its points in time order and one timestamp per point. Every row of a series shares the
plantation, field, gateway, sensor and kind, so the constant part of its readings.csv and
readings.jsonl lines goes into a printf-style template once per series, and the rest is
filled in by C code mapped over whole columns: times from a per-day and a per-second-of-day
text, batch ids by runs of sequence numbers, values written by orjson (one call per column).

The text is the same, byte for byte, as :func:`certify.rows.reading_csv_line` and
:func:`certify.rows.reading_json_line` give for the same reading
(tests/certify/test_columns.py checks it); a series that the fast path does not cover (a
row without one of its values, a value that is not a number) is formatted by those
functions, row by row.

A slice's rows are put in time order; rows at the same nanosecond follow the order of their
series (by gateway, sensor, kind, field), whatever the slicing.
"""

import bisect
import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import floordiv, lt, mod
from typing import Any

import orjson

from certify.rows import (
    BatchRow,
    ReadingRow,
    csv_cell,
    reading_csv_line,
    reading_json_line,
    rfc3339_ns,
)

NS = 1_000_000_000
DAY_S = 86_400
BOOKKEEPING = frozenset({"time", "seq", "clock", "cal", "plantation", "field", "gateway", "sensor"})
"""Columns that are not reading values (tags, ``seq``, ``clock``, ``cal``)."""
_NUMBER_TYPES = frozenset({int, float})
CHUNK_ROWS = 8_192
_CSV_SPECIAL = (",", '"', "\r", "\n")

DAY, HMS, FRAC, TS, SEQ, CLOCK, CAL, BATCH, VALUES = range(9)
"""Column numbers of a series' text columns (the values follow from VALUES on)."""

_hms: list[str] = []


def _seconds_of_day() -> list[str]:
    """``HH:MM:SS`` for every second of a day (built once, about 5 MB)."""
    if not _hms:
        minutes = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
        seconds = [f"{s:02d}" for s in range(60)]
        _hms.extend(m + s for m in minutes for s in seconds)
    return _hms


class ColumnError(ValueError):
    """A series is not made of farmtel readings (no integer seq, no clock, no gateway tag);
    the message says what is missing."""


@dataclass
class BatchSteps:
    """For one gateway, ``seq -> batch`` as a step function evaluated by bisection.

    ``bounds`` are the sorted seqs where the answer changes; a seq with
    ``bisect_right(bounds, seq) == k`` belongs to ``batches[k]`` (None: to no batch). The
    same answer as taking the batch with the highest ``first_seq`` not above the seq and
    checking its ``last_seq``.
    """

    bounds: list[int]
    batches: list[BatchRow | None]

    @classmethod
    def build(cls, rows: Sequence[BatchRow]) -> "BatchSteps":
        """``rows``: one gateway's batch records sorted by ``first_seq``."""
        bounds: list[int] = []
        batches: list[BatchRow | None] = [None]
        for i, b in enumerate(rows):
            if bounds and bounds[-1] == b.first_seq:
                batches[-1] = b  # equal first_seq: the last one wins, as bisect_right finds
            else:
                bounds.append(b.first_seq)
                batches.append(b)
            nxt = rows[i + 1].first_seq if i + 1 < len(rows) else None
            if nxt is None or b.last_seq + 1 < nxt:
                bounds.append(b.last_seq + 1)
                batches.append(None)
        return cls(bounds, batches)

    def find(self, seq: int) -> BatchRow | None:
        return self.batches[bisect.bisect_right(self.bounds, seq)]


@dataclass
class SeriesRun:
    """The readings of one series in one slice, for the export's statistics."""

    gateway: str
    sensor: str
    field: str
    kind: str
    ts: Sequence[int]
    """Strictly increasing (a series holds one point per timestamp)."""
    seq: Sequence[int]
    cals: Sequence[Any] | None
    """The ``cal`` column (text or None), or None when the series has no calibration."""
    values: list[tuple[str, Sequence[Any]]] = dataclasses.field(default_factory=list)
    """``(name, column)`` of the values present, by name."""
    clean: bool = True
    """Every value column is complete and all floats; else they are as InfluxDB sent them
    (nulls, text ...)."""


@dataclass
class SliceText:
    """What :meth:`SliceFormatter.format_slice` made of one slice."""

    csv: list[bytes] = dataclasses.field(default_factory=list)
    """readings.csv lines, UTF-8, in pieces of ``CHUNK_ROWS`` lines."""
    jsonl: list[bytes] = dataclasses.field(default_factory=list)
    rows: int = 0
    per_batch: Counter[str] = dataclasses.field(default_factory=Counter)
    """Rows written per batch id."""
    unbatched: int = 0
    runs: list[SeriesRun] = dataclasses.field(default_factory=list)
    """In time order of their first reading (ties: series order)."""


Recipe = tuple[str | int, ...]
"""A line as constant text (str) and columns (int: index into the columns given)."""


def _recipe(parts: Iterable[str | int]) -> Recipe:
    """``parts`` with adjacent texts merged and empty ones dropped."""
    out: list[str | int] = []
    for p in parts:
        if isinstance(p, str):
            if not p:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += p
                continue
        out.append(p)
    return tuple(out)


def _encoded(lines: Sequence[str], order: Sequence[int]) -> list[bytes]:
    """``lines`` in ``order``, UTF-8, in pieces (never the whole slice as text and bytes)."""
    return [
        "".join(map(lines.__getitem__, order[k : k + CHUNK_ROWS])).encode()
        for k in range(0, len(order), CHUNK_ROWS)
    ]


def _lines(recipe: Recipe, columns: Sequence[Iterable[str]]) -> Iterable[str]:
    """The lines of ``recipe`` over ``columns`` (one text per row in each), joined in C."""
    return map(
        "".join,
        # repeat() is endless: the columns, all one text per row, say where to stop.
        zip(*(repeat(p) if isinstance(p, str) else columns[p] for p in recipe), strict=False),
    )


class SliceFormatter:
    """Turns the series of one time slice into readings.csv and readings.jsonl text."""

    def __init__(
        self,
        plantation: str,
        value_names: Sequence[str],
        steps: Mapping[str, BatchSteps],
        clock_kinds: Iterable[str] | None = None,
    ) -> None:
        """``steps``: per gateway; ``clock_kinds``: the kinds (measurements) that have a
        ``clock`` field (None: do not check)."""
        self.plantation = plantation
        self.names = list(value_names)
        self.steps = steps
        self._no_steps = BatchSteps([], [None])
        self._days: dict[int, str] = {}
        self._frac_text: dict[int, str] = {}
        self._json_text: dict[Any, str] = {}
        self._recipes: dict[tuple[Any, ...], tuple[Recipe, Recipe]] = {}
        self._batch_cells: dict[int, tuple[list[str], list[str], list[str | None]]] = {}
        self._clock_kinds = None if clock_kinds is None else frozenset(clock_kinds)

    def format_slice(self, series: Iterable[Any]) -> SliceText:
        """``series``: objects with ``name``, ``tags``, ``columns`` and ``values`` (as
        ingest.influx.Series) from ``SELECT * ... GROUP BY *`` over one time slice. Raises
        :class:`ColumnError` for a series farmtel did not write."""
        out = SliceText()
        csv_parts: list[str] = []
        json_parts: list[str] = []
        times: list[int] = []
        ordered = sorted(
            (s for s in series if s.values),
            key=lambda s: (
                s.tags.get("gateway") or "",
                s.tags.get("sensor") or "",
                s.name,
                s.tags.get("field") or "",
                sorted(s.tags.items()),
            ),
        )
        for s in ordered:
            self._series(s, out, csv_parts, json_parts, times)
        if len(ordered) > 1:
            # Stable: rows at the same time stay in series order.
            order: Sequence[int] = sorted(range(len(times)), key=times.__getitem__)
            out.runs.sort(key=lambda r: r.ts[0])
        else:
            order = range(len(times))
        out.csv = _encoded(csv_parts, order)
        csv_parts.clear()
        out.jsonl = _encoded(json_parts, order)
        out.rows = len(times)
        return out

    # -- helpers -----------------------------------------------------------------------

    def _json(self, value: Any) -> str:
        text = self._json_text.get(value)
        if text is None:
            if len(self._json_text) > 100_000:
                self._json_text.clear()
            text = self._json_text[value] = orjson.dumps(value).decode()
        return text

    def _day_texts(self, days: Iterable[int]) -> dict[int, str]:
        cache = self._days
        for d in set(days).difference(cache):
            cache[d] = rfc3339_ns(d * DAY_S * NS).partition("T")[0]
        return cache

    def _batch_text(self, steps: BatchSteps) -> tuple[list[str], list[str], list[str | None]]:
        """Per step of ``steps``: the CSV cell, the JSON text and the id of the batch."""
        cells = self._batch_cells.get(id(steps))
        if cells is None:
            ids = [None if b is None else b.batch for b in steps.batches]
            cells = (
                ["" if i is None else i for i in ids],
                [self._json("" if i is None else i) for i in ids],
                ids,
            )
            self._batch_cells[id(steps)] = cells
        return cells

    def _recipes_for(
        self, kind: str, tags: Mapping[str, str], present: tuple[str, ...]
    ) -> tuple[Recipe, Recipe]:
        """The CSV and JSON line recipes of a series, over the columns ``(day, hh:mm:ss,
        ns fraction, ts, seq, clock, cal, batch, *values)``, all text (clock, cal, batch
        and the values as CSV cells for the CSV recipe, as JSON for the JSON one)."""
        key = (kind, tags.get("field"), tags.get("gateway"), tags.get("sensor"), present)
        found = self._recipes.get(key)
        if found is not None:
            return found
        fld, gw, sensor = (tags.get(t) or "" for t in ("field", "gateway", "sensor"))
        time_parts: list[str | int] = [DAY, "T", HMS, ".", FRAC, "Z"]
        csv: list[str | int] = [",".join([self.plantation, fld, gw, sensor, kind]) + ","]
        csv += [*time_parts, ",", TS, ",", CLOCK, ",", SEQ, ",", CAL, ",", BATCH]
        for name in self.names:
            csv.append(",")
            if name in present:
                csv.append(VALUES + present.index(name))
        csv.append("\r\n")
        js: list[str | int] = [
            f'{{"plantation":{self._json(self.plantation)},"field":{self._json(fld)},'
            f'"gateway":{self._json(gw)},"sensor":{self._json(sensor)},'
            f'"kind":{self._json(kind)},"time_utc":"'
        ]
        js += [*time_parts, '","ts_ns":', TS, ',"clock":', CLOCK, ',"seq":', SEQ]
        js += [',"cal":', CAL, ',"batch":', BATCH, ',"values":{']
        for i, name in enumerate(present):
            js += [("," if i else "") + self._json(name) + ":", VALUES + i]
        js.append("}}\n")
        found = self._recipes[key] = (_recipe(csv), _recipe(js))
        return found

    def _batches(
        self, steps: BatchSteps, seq: Sequence[int], out: SliceText
    ) -> tuple[list[str], list[str]]:
        """The batch cells (CSV, JSON) of each row; counts rows per batch into ``out``."""
        csv_cells, json_cells, ids = self._batch_text(steps)
        bounds = steps.bounds
        n = len(seq)
        if n > 1 and not all(map(lt, seq, seq[1:])):
            at = list(map(bisect.bisect_right, repeat(bounds), seq))
            for k, count in Counter(at).items():
                if ids[k] is None:
                    out.unbatched += count
                else:
                    out.per_batch[ids[k]] += count  # type: ignore[index]
            return list(map(csv_cells.__getitem__, at)), list(map(json_cells.__getitem__, at))
        # Sequence numbers rising: one run of rows per batch.
        csv_out: list[str] = []
        json_out: list[str] = []
        k = bisect.bisect_right(bounds, seq[0])
        i = 0
        while i < n:
            j = n if k >= len(bounds) else bisect.bisect_left(seq, bounds[k], i)
            if j > i:
                csv_out += [csv_cells[k]] * (j - i)
                json_out += [json_cells[k]] * (j - i)
                if ids[k] is None:
                    out.unbatched += j - i
                else:
                    out.per_batch[ids[k]] += j - i  # type: ignore[index]
            i = j
            k += 1
        return csv_out, json_out

    # -- one series --------------------------------------------------------------------

    def _series(
        self,
        s: Any,
        out: SliceText,
        csv_parts: list[str],
        json_parts: list[str],
        times: list[int],
    ) -> None:
        kind: str = s.name
        tags: Mapping[str, str] = s.tags
        columns: list[str] = s.columns
        n = len(s.values)
        for tag in ("field", "gateway", "sensor"):
            if tag not in tags:
                raise ColumnError(
                    f"measurement {kind} lacks the {tag} tag; it was not written by farmtel's "
                    "ingest"
                )
        index = {c: i for i, c in enumerate(columns)}
        i_seq, i_clock, i_cal = index.get("seq"), index.get("clock"), index.get("cal")
        gw = tags["gateway"] or ""
        if i_clock is None or (self._clock_kinds is not None and kind not in self._clock_kinds):
            raise ColumnError(
                f"measurement {kind} lacks the clock field; it was not written by farmtel's ingest"
            )
        cols = list(zip(*s.values, strict=True))
        ts: Sequence[int] = cols[0]
        seq: Sequence[Any] = cols[i_seq] if i_seq is not None else (None,) * n
        if set(map(type, seq)) != {int}:
            bad = next(i for i, q in enumerate(seq) if type(q) is not int)
            raise ColumnError(
                f"a {kind} point at {ts[bad]} ns of gateway {gw} has no integer seq "
                "field; it was not written by farmtel's ingest"
            )
        times.extend(ts)
        cal = cols[i_cal] if i_cal is not None else None
        if cal is not None and not any(cal):
            cal = None
        run = SeriesRun(gw, tags["sensor"] or "", tags["field"] or "", kind, ts, seq, cal)
        out.runs.append(run)
        steps = self.steps.get(gw, self._no_steps)
        csv_batch, json_batch = self._batches(steps, seq, out)

        # Value columns: absent (all null), complete numbers (fast) or anything else (slow).
        present: list[str] = []
        value_cols: list[Sequence[float]] = []
        for name in sorted(c for c in columns if c not in BOOKKEEPING):
            col = cols[index[name]]
            nulls = col.count(None)
            if nulls == n:
                continue
            types = set(map(type, col))
            if nulls or not types <= _NUMBER_TYPES:
                run.clean = False
                run.values = [
                    (c, cols[index[c]])
                    for c in sorted(c for c in columns if c not in BOOKKEEPING)
                    if cols[index[c]].count(None) != n
                ]
                self._slow(s, index, csv_batch, json_batch, csv_parts, json_parts)
                return
            present.append(name)
            value_cols.append(col if types == {float} else list(map(float, col)))
        run.values = list(zip(present, value_cols, strict=True))

        clock: Sequence[Any] = cols[i_clock]
        if set(map(type, clock)) != {str}:
            clock = ["" if c is None else str(c) for c in clock]
        clock_json = {c: self._json(c) for c in set(clock)}
        if cal is not None:
            cal_cells = {c: self._cal_cell(c) for c in set(cal)}
            cal_csv: Iterable[str] = list(map(cal_cells.__getitem__, cal))
            cal_texts = {c: self._json(c or None) for c in set(cal)}
            cal_json: Iterable[str] = list(map(cal_texts.__getitem__, cal))
        else:
            cal_csv = repeat("", n)
            cal_json = repeat("null", n)

        secs = list(map(floordiv, ts, repeat(NS)))
        days = list(map(floordiv, secs, repeat(DAY_S)))
        frac = list(map(mod, ts, repeat(NS)))
        fracs = self._fractions(frac)
        common: list[Iterable[str]] = [
            list(map(self._day_texts(days).__getitem__, days)),
            list(map(_seconds_of_day().__getitem__, map(mod, secs, repeat(DAY_S)))),
            list(map(fracs.__getitem__, frac)),
            list(map(str, ts)),
            list(map(str, seq)),
        ]
        csv_cols: list[Iterable[str]] = [*common, clock, cal_csv, csv_batch]
        json_cols: list[Iterable[str]] = [
            *common,
            list(map(clock_json.__getitem__, clock)),
            cal_json,
            json_batch,
        ]
        for numbers in value_cols:
            joined = orjson.dumps(numbers).decode()
            texts = joined[1:-1].split(",")
            json_cols.append(texts)
            # orjson writes a float as repr() does except in exponent form, which repr()
            # uses for |x| < 1e-4 or >= 1e16: such a column gets repr().
            if "e" in joined or "0.0000" in joined or max(map(abs, numbers)) >= 1e16:
                csv_cols.append(list(map(repr, numbers)))
            else:
                csv_cols.append(texts)
        csv_recipe, json_recipe = self._recipes_for(kind, tags, tuple(present))
        csv_parts.extend(_lines(csv_recipe, csv_cols))
        json_parts.extend(_lines(json_recipe, json_cols))

    def _fractions(self, frac: Sequence[int]) -> dict[int, str]:
        """``%09d`` of the nanosecond parts (few distinct ones: readings on whole seconds)."""
        cache = self._frac_text
        missing = set(frac).difference(cache)
        if missing:
            if len(cache) + len(missing) > 200_000:
                cache.clear()
                missing = set(frac)
            cache.update({f: f"{f:09d}" for f in missing})
        return cache

    @staticmethod
    def _cal_cell(value: Any) -> str:
        text: str = value or ""
        return csv_cell(text) if any(c in text for c in _CSV_SPECIAL) else text

    def _slow(
        self,
        s: Any,
        index: Mapping[str, int],
        csv_batch: Sequence[str],
        json_batch: Sequence[str],
        csv_parts: list[str],
        json_parts: list[str],
    ) -> None:
        """Row by row, with the row functions (a series with a null or non-number value)."""
        value_cols = sorted((c, i) for c, i in index.items() if c not in BOOKKEEPING)
        i_seq, i_clock, i_cal = index["seq"], index["clock"], index.get("cal")
        tags = s.tags
        for k, v in enumerate(s.values):
            cal = v[i_cal] if i_cal is not None else None
            row = ReadingRow(
                self.plantation,
                tags["field"] or "",
                tags["gateway"] or "",
                tags["sensor"] or "",
                s.name,
                v[0],
                v[i_clock] or "",
                v[i_seq],
                cal or None,
                csv_batch[k],
                {
                    c: float(x)
                    for c, i in value_cols
                    if (x := v[i]) is not None and not isinstance(x, str | bool)
                },
            )
            when = rfc3339_ns(row.ts)
            csv_parts.append(reading_csv_line(row, self.names, when))
            json_parts.append(reading_json_line(row, when).decode())
