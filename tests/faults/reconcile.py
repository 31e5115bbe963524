"""The fault suite's reconciler: what was generated against what InfluxDB holds.

Two independent records of the truth are compared with the store:

- the simulators' ``--record`` files: every line a simulated board sent, with its values;
  a stored reading is matched to its line by the board's ``counter`` column;
- the gateway's sequence numbers: the outbox numbers every reading it committed, without
  holes, and declares (gap with ``seq``/``count``) the seq it burned without storing a
  reading. So every seq from 0 to the highest stored must be a stored reading or inside a
  declared gap: a seq that is neither is a committed reading that was lost.

A reading stored twice shows as one counter (or one seq) on two points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.influx import InfluxQuery
from tests.support.procs import read_records


@dataclass
class Reconciled:
    stored: int = 0
    """Reading points in InfluxDB for the gateway."""
    generated: int = 0
    """Lines the simulators recorded as sent."""
    duplicate_seq: list[int] = field(default_factory=list)
    duplicate_counter: list[tuple[str, float]] = field(default_factory=list)
    mismatched: list[tuple[str, float, str]] = field(default_factory=list)
    """(sensor, counter, what differs) for stored values that are not what was sent."""
    unknown: list[tuple[str, float]] = field(default_factory=list)
    """Stored counters no simulator sent."""
    undeclared_holes: list[int] = field(default_factory=list)
    """Seq below the highest stored that are neither stored nor declared (at most 50 kept)."""
    undeclared_hole_count: int = 0
    declared_seq: int = 0
    """Seq covered by declared gaps."""
    not_stored: int = 0
    """Generated lines with no stored reading (the agent never read or committed them),
    not counting ``before_reader``."""
    before_reader: int = 0
    """Generated lines before the first stored line of their sensor (sent before the agent
    had opened the port)."""
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"generated={self.generated} stored={self.stored} not_stored={self.not_stored} "
            f"before_reader={self.before_reader} "
            f"dup_seq={len(self.duplicate_seq)} dup_counter={len(self.duplicate_counter)} "
            f"mismatched={len(self.mismatched)} unknown={len(self.unknown)} "
            f"undeclared_holes={self.undeclared_hole_count} declared_seq={self.declared_seq} "
            f"gaps={len(self.gaps)}"
        )

    def assert_exactly_once(self, *, all_generated: bool) -> None:
        """Nothing doubled, nothing altered, no committed seq lost; and with
        ``all_generated`` every simulated line stored too."""
        problems = []
        if self.duplicate_seq or self.duplicate_counter:
            problems.append(
                f"duplicates seq={self.duplicate_seq[:10]} counter={self.duplicate_counter[:10]}"
            )
        if self.mismatched or self.unknown:
            problems.append(f"altered {self.mismatched[:5]} unknown {self.unknown[:5]}")
        if self.undeclared_hole_count:
            problems.append(
                f"undeclared seq holes (lost committed readings) {self.undeclared_holes[:20]}"
            )
        if all_generated and self.not_stored:
            problems.append(f"{self.not_stored} generated readings are not stored")
        if self.stored == 0:
            problems.append("nothing stored")
        assert not problems, self.summary() + "\n" + "\n".join(problems)


def _rows(q: InfluxQuery, statement: str, params: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for series in q.query(statement, params=params):
        for values in series.values:
            row = dict(zip(series.columns, values, strict=True))
            row.update(series.tags or {})
            out.append(row)
    return out


def reconcile(
    q: InfluxQuery,
    plantation: str,
    gateway: str,
    records: dict[str, Path],
    kind: str = "soil",
) -> Reconciled:
    """Compare InfluxDB with the simulators' records (``sensor id -> record file``).

    Unstored lines before a sensor's first stored one are counted apart (``before_reader``):
    a board that talks before the gateway has opened its port loses those lines to the
    open, which discards what is queued (a real one does too). Any later line is expected.
    """
    res = Reconciled()
    params = {"p": plantation, "g": gateway}
    rows = _rows(
        q,
        f'SELECT * FROM "{kind}" WHERE "plantation" = $p AND "gateway" = $g GROUP BY "sensor"',
        params,
    )
    res.stored = len(rows)
    res.gaps = _rows(
        q,
        'SELECT * FROM "farmtel_gap" WHERE "plantation" = $p AND "gateway" = $g GROUP BY *',
        params,
    )
    sent: dict[str, dict[float, dict[str, Any]]] = {}
    early: dict[str, set[float]] = {}
    for sensor, path in records.items():
        recs = read_records(path) if path.exists() else []
        res.generated += len(recs)
        sent[sensor] = {float(r["values"]["counter"]): r["values"] for r in recs}
    seen_seq: set[int] = set()
    seen_counter: set[tuple[str, float]] = set()
    for row in rows:
        seq = int(row["seq"])
        if seq in seen_seq:
            res.duplicate_seq.append(seq)
        seen_seq.add(seq)
        key = (row["sensor"], float(row["counter"]))
        if key in seen_counter:
            res.duplicate_counter.append(key)
        seen_counter.add(key)
        expected = sent.get(row["sensor"], {}).get(key[1])
        if expected is None:
            res.unknown.append(key)
            continue
        for name, value in expected.items():
            if row.get(name) != value:
                res.mismatched.append((key[0], key[1], f"{name}: {row.get(name)!r} != {value!r}"))
    for sensor, recs in sent.items():
        stored_counters = [c for (s, c) in seen_counter if s == sensor]
        first = min(stored_counters, default=float("inf"))
        early[sensor] = {c for c in recs if c < first}
    res.not_stored = sum(
        1
        for sensor, recs in sent.items()
        for c in recs
        if (sensor, c) not in seen_counter and c not in early[sensor]
    )
    res.before_reader = sum(len(e) for e in early.values())
    declared: set[int] = set()
    for gap in res.gaps:
        if gap.get("seq") is not None and gap.get("count"):
            declared.update(range(int(gap["seq"]), int(gap["seq"]) + int(gap["count"])))
    res.declared_seq = len(declared)
    top = max(seen_seq, default=-1)
    for s in range(top + 1):
        if s not in seen_seq and s not in declared:
            res.undeclared_hole_count += 1
            if len(res.undeclared_holes) < 50:
                res.undeclared_holes.append(s)
    return res
