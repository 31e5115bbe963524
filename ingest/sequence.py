"""Per-gateway sequence bookkeeping: duplicates (redeliveries) and holes, in bounded memory.

Every gateway numbers its readings (``seq``, from its outbox); a gap record that stands for
readings never stored carries the seq it skipped (``seq`` + ``count``). This module keeps, per
gateway, the set of seq seen as a sorted list of disjoint closed intervals. Batches are
contiguous seq ranges, so a gateway that delivers in order needs one interval.

- A **duplicate** is a reading whose seq is already in the set: a batch stored twice (the
  agent resent it because a receipt was lost, or the broker redelivered it after an ingest
  crash). Writes are idempotent, so a duplicate costs nothing in InfluxDB; the count shows
  that the redelivery path ran.
- A **hole** is a seq between the lowest and the highest seen that is neither a stored
  reading nor covered by a declared gap. A hole shrinks when a late batch fills it (batches
  in flight arrive out of order), so it is a gauge, not a total.

Memory: at most ``max_intervals`` intervals per gateway and ``max_gateways`` gateways. When
a gateway has too many intervals, the lowest one is forgotten: the seq below the new floor
are no longer judged (a reading below the floor counts as ``late``, not as a duplicate) and
the holes under it stay counted in ``settled_holes``. The least recently seen gateway is
forgotten when there are too many.

With several ingests in one share group each stores only its share of a gateway's batches,
so each would count the others' batches as holes. After each stored batch the ingest
publishes the gateway's intervals (:meth:`SequenceTracker.export`, retained, on
``contract.topics.seq_share_topic``), and every ingest of the group merges what the others
publish (:meth:`SequenceTracker.merge`): the union of intervals is the same whatever the
order, so every ingest ends with the group's view, and one that (re)starts gets it from the
retained messages. Holes are then the group's (read one ingest's gauge, do not sum them);
duplicates stay counted by the ingest that stored the batch again (sum those).

Not thread-safe: the ingest calls it under one lock (its writer thread observes, paho's
thread merges).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAX_INTERVALS = 1024
"""Intervals kept per gateway at most (16 bytes of Python ints each, roughly 100 KiB)."""
MAX_GATEWAYS = 100_000
"""Gateways tracked at most; 1,000 plantations x a few gateways fits many times over."""


@dataclass(slots=True)
class GatewaySeq:
    """What one gateway's seq look like so far."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    """``starts[i]..ends[i]`` (both inclusive) are seen; sorted, disjoint, not adjacent."""
    duplicates: int = 0
    """Readings whose seq was already seen (cumulative)."""
    late: int = 0
    """Readings below the floor left by compaction, not judged (cumulative)."""
    settled_holes: int = 0
    """Holes under the floor when intervals were forgotten; never filled again."""
    floor: int = -1
    """Seq below this are no longer tracked (-1: nothing forgotten)."""

    def holes(self) -> int:
        """Seq missing between the lowest and highest seen, plus the settled ones."""
        open_holes = sum(self.starts[i + 1] - self.ends[i] - 1 for i in range(len(self.starts) - 1))
        return open_holes + self.settled_holes

    def add_range(self, first: int, last: int, *, count_duplicates: bool) -> int:
        """Mark ``first..last`` seen; return how many of them were seen before."""
        if last < first:
            return 0
        if last < self.floor:
            self.late += last - first + 1 if count_duplicates else 0
            return 0
        if first < self.floor:
            if count_duplicates:
                self.late += self.floor - first
            first = self.floor
        # Intervals that touch or overlap first..last (adjacent ones merge too).
        lo = bisect.bisect_left(self.ends, first - 1)
        hi = bisect.bisect_right(self.starts, last + 1)
        seen = 0
        for i in range(lo, hi):
            overlap = min(last, self.ends[i]) - max(first, self.starts[i]) + 1
            if overlap > 0:
                seen += overlap
        if lo < hi:
            first = min(first, self.starts[lo])
            last = max(last, self.ends[hi - 1])
        self.starts[lo:hi] = [first]
        self.ends[lo:hi] = [last]
        if count_duplicates:
            self.duplicates += seen
        return seen

    def compact(self, max_intervals: int) -> None:
        """Forget the lowest intervals until at most ``max_intervals`` remain."""
        while len(self.starts) > max_intervals:
            self.settled_holes += self.starts[1] - self.ends[0] - 1
            del self.starts[0]
            del self.ends[0]
            self.floor = self.starts[0]


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seq as closed runs of consecutive numbers; repeats within one call kept apart."""
    if type(seqs) is range and seqs.step == 1:
        # A batch as the agent sends it (the ingest passes its seq as a range): one run.
        return [(seqs.start, seqs.stop - 1)] if seqs else []
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


@dataclass(frozen=True, slots=True)
class SeqTotals:
    """Totals over every tracked gateway, for the self-metrics."""

    gateways: int
    duplicates: int
    holes: int
    late: int


class SequenceTracker:
    """Seq seen per (plantation, gateway); see the module docstring for the rules."""

    def __init__(self, max_intervals: int = MAX_INTERVALS, max_gateways: int = MAX_GATEWAYS):
        if max_intervals < 1 or max_gateways < 1:
            raise ValueError(
                f"max_intervals ({max_intervals}) and max_gateways ({max_gateways}) must be >= 1"
            )
        self.max_intervals = max_intervals
        self.max_gateways = max_gateways
        self._gateways: OrderedDict[tuple[str, str], GatewaySeq] = OrderedDict()
        self._forgotten_duplicates = 0
        self.holes_total = 0
        """Holes of every tracked gateway, kept up to date by :meth:`observe` (cheap to read)."""

    def _state(self, key: tuple[str, str]) -> GatewaySeq:
        state = self._gateways.get(key)
        if state is None:
            state = self._gateways[key] = GatewaySeq()
            if len(self._gateways) > self.max_gateways:
                _, old = self._gateways.popitem(last=False)
                self._forgotten_duplicates += old.duplicates
                self.holes_total -= old.holes()
        else:
            self._gateways.move_to_end(key)
        return state

    def observe(
        self,
        plantation: str,
        gateway: str,
        reading_seqs: Iterable[int],
        declared: Iterable[tuple[int, int]] = (),
    ) -> int:
        """Record one stored batch; return how many of its readings were duplicates.

        ``reading_seqs`` are the seq of the readings stored; ``declared`` the ``(seq, count)``
        of its gaps that skip seq (gaps without seq are not passed). A seq repeated within
        one batch counts as a duplicate too.
        """
        state = self._state((plantation, gateway))
        before = state.holes()
        dups = 0
        for first, last in _runs(reading_seqs):
            dups += state.add_range(first, last, count_duplicates=True)
        for seq, count in declared:
            if count > 0:
                state.add_range(seq, seq + count - 1, count_duplicates=False)
        state.compact(self.max_intervals)
        self.holes_total += state.holes() - before
        return dups

    def export(self, plantation: str, gateway: str) -> list[list[int]]:
        """The seq seen of one gateway as ``[[first, last], ...]`` (above its floor)."""
        state = self._gateways.get((plantation, gateway))
        if state is None:
            return []
        return [[a, b] for a, b in zip(state.starts, state.ends, strict=True)]

    def merge(self, plantation: str, gateway: str, intervals: Iterable[Sequence[int]]) -> None:
        """Mark seq that another ingest of the share group saw (:meth:`export`) as seen.

        Counts no duplicates: the ingest that stored a batch twice counts those. Raises
        ``ValueError`` for anything that is not a list of ``[first, last]`` integer pairs,
        before changing anything.
        """
        ranges = []
        for item in intervals:
            if not (
                isinstance(item, list | tuple)
                and len(item) == 2
                and all(type(x) is int and 0 <= x < 2**63 for x in item)
                and item[0] <= item[1]
            ):
                raise ValueError(f"seq interval {item!r} is not [first, last] with first <= last")
            ranges.append((item[0], item[1]))
        if ranges:
            # Marked as seen without counting duplicates, as observe() marks declared gaps.
            self.observe(plantation, gateway, (), [(a, b - a + 1) for a, b in ranges])

    def gateway(self, plantation: str, gateway: str) -> GatewaySeq | None:
        """The state of one gateway, or None if not seen (or forgotten)."""
        return self._gateways.get((plantation, gateway))

    def totals(self) -> SeqTotals:
        dups = self._forgotten_duplicates
        holes = late = 0
        for state in self._gateways.values():
            dups += state.duplicates
            holes += state.holes()
            late += state.late
        return SeqTotals(len(self._gateways), dups, holes, late)
