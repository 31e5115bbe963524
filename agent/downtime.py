"""The time the agent was not running, and clock steps, declared as gateway-wide gaps.

An agent that is stopped (an upgrade), killed, or loses power measures nothing until it runs
again. Its outbox keeps the last moment it was alive (:class:`AliveMark`, meta key
``alive``): written in every commit of readings or gaps, at least every
:data:`ALIVE_EVERY_S` when there is nothing to commit, and once more on a clean stop. A mark
never goes back: it is the latest of the clock, the previous mark and the newest reading
committed, so it is never before a stored reading. At start the agent compares the mark
with its clock and declares the stretch between as an ``agent_down`` gap
(:class:`Downtime`), so a certifier reads "no data: the agent was not running" instead of
silence.

Gaps are dated on the gateway's clock, like the readings around them. Gateways have no
battery clock, so:

- the clock at the restart reads after the mark: the gap ends at the restart, as that clock
  tells it (its detail names the clock when the kernel does not report it synchronised, as
  the readings' ``clock`` flag does);
- it reads before this software was built (1970): the readings until the clock is set are
  dated 1970 (quarantined by the ingest as before the gateway's registration). The gap
  waits until the clock reads a real time (NTP/GPS), and ends at the restart counted back
  on the monotonic clock;
- it reads a real time before the mark (``fake-hwclock`` restored a time saved before the
  agent last ran, or a clock that went back): the new readings are dated among the old
  ones, and no agent_down gap is declared. When NTP then sets the clock forward, the jump
  is a ``clock`` gap (:class:`ClockSteps`), which covers the downtime on the new clock;
- the mark itself was taken from a clock before the build: how long the agent was down
  cannot be told; that is logged and no gap is declared.

:class:`ClockSteps` declares every forward step of the wall clock against the monotonic
clock (more than ``JUMP_TOLERANCE_S``) as a ``clock`` gap from the old clock's time to the
new one's: no reading is dated in between. A gap longer than a day is declared in pieces
of a day (:func:`in_pieces`), so an export of a later period still finds its piece.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.clock import BUILD_EPOCH_S, JUMP_TOLERANCE_S, kernel_synced
from contract.wire import Gap

log = logging.getLogger(__name__)

ALIVE_EVERY_S = 10.0
"""When nothing is committed, the agent still marks itself alive this often (seconds)."""
MIN_DOWN_S = 1.0
"""A shorter downtime is logged only: it is within the clock's and the marks' precision."""
PIECE_NS = 86_400 * 10**9
"""A declared gap longer than this is cut into pieces this long (see :func:`in_pieces`)."""
MAX_PIECES = 1000
"""At most this many pieces (a batch holds up to 1,000 gaps): longer pieces beyond."""

_BUILD_EPOCH_NS = BUILD_EPOCH_S * 10**9
_JUMP_NS = int(JUMP_TOLERANCE_S * 1e9)
CLOCK_STATES = ("synced", "unsynced", "invalid")


def clock_state(wall_ns: int, synced: bool | None) -> str:
    """How far ``wall_ns`` can be trusted: ``invalid`` before this software was built,
    ``synced`` when the kernel reports NTP/GPS sync, else ``unsynced``."""
    if wall_ns < _BUILD_EPOCH_NS:
        return "invalid"
    return "synced" if synced else "unsynced"


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class AliveMark:
    """The last moment the agent was known to be running, as its outbox keeps it."""

    ns: int
    """Wall clock, ns since the epoch."""
    clock: str
    """:func:`clock_state` of ``ns``."""
    stopped: bool = False
    """Written by a clean stop; else the agent was running (a later crash or power cut)."""

    def encode(self) -> str:
        return f"{self.ns} {self.clock} {'stopped' if self.stopped else 'running'}"

    @classmethod
    def decode(cls, text: object) -> "AliveMark":
        """Parse :meth:`encode`'s text; ValueError names what is wrong."""
        parts = str(text).split()
        if not (
            len(parts) == 3
            and parts[0].isdigit()
            and parts[1] in CLOCK_STATES
            and parts[2] in ("running", "stopped")
        ):
            raise ValueError(f"expected '<ns> <clock> <running|stopped>', got {text!r:.80}")
        ns, clock, how = parts
        return cls(int(ns), clock, how == "stopped")


def in_pieces(gap: Gap) -> list[Gap]:
    """``gap`` cut into pieces of :data:`PIECE_NS` (at most :data:`MAX_PIECES`).

    ``farmtel query gaps`` and an export's search for gaps in a period go by a gap's start:
    a gap of months would drop out of a later period's. Each piece keeps the reason, and
    its detail says which part it is.
    """
    span = gap.end - gap.start
    if span <= PIECE_NS:
        return [gap]
    n = min(MAX_PIECES, -(-span // PIECE_NS))
    step = -(-span // n)
    out = []
    for i in range(n):
        start = gap.start + i * step
        end = min(gap.end, start + step)
        part = f" (part {i + 1} of {n})"
        detail = gap.detail[: 500 - len(part)] + part
        out.append(gap.model_copy(update={"start": start, "end": end, "detail": detail}))
    return out


class Downtime:
    """Works out the gap between the outbox's last :class:`AliveMark` and this start.

    Create it when the agent starts, then call :meth:`check` on each commit pass until
    :attr:`pending` is False; it returns the gap once, when it can be told. The clock
    functions are parameters for the tests.
    """

    def __init__(
        self,
        last: AliveMark | None,
        *,
        outbox_lost: bool = False,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        synced: Callable[[], bool | None] = kernel_synced,
    ):
        self.last = last
        self._outbox_lost = outbox_lost
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._synced = synced
        self.started_wall = wall_ns()
        self._started_mono = mono_ns()
        self._said_waiting = False
        self.pending = True

    def check(self) -> Gap | None:
        """The ``agent_down`` gap, once it can be told; None before, after, or if none."""
        if not self.pending:
            return None
        last = self.last
        if last is None:
            self.pending = False
            if self._outbox_lost:
                log.warning(
                    "the outbox was moved aside as corrupt, and with it the record of when "
                    "the agent last ran: no agent_down gap can be declared for this restart"
                )
            else:
                log.info("no record of when the agent last ran (a new outbox); nothing declared")
            return None
        if last.clock == "invalid":
            self.pending = False
            log.warning(
                "cannot tell how long the agent was down: its clock read %s when it last ran, "
                "before this software was built; no agent_down gap declared",
                _utc(last.ns),
            )
            return None
        start = self.started_wall
        if start >= _BUILD_EPOCH_NS:
            self.pending = False
            if start > last.ns:
                return self._declare(start, clock_state(start, self._synced()))
            log.warning(
                "the clock at this start (%s) reads before the agent last ran (%s): a clock "
                "restored from a file (fake-hwclock) or set back. New readings are dated "
                "among the earlier ones and no agent_down gap is declared; when the clock "
                "is set forward, the step is declared as a clock gap",
                _utc(start),
                _utc(last.ns),
            )
            return None
        # The clock reads 1970: wait until it reads a real time, and count back along the
        # monotonic clock to the restart.
        mono = self._mono_ns()
        wall = self._wall_ns()
        start_now = wall - (mono - self._started_mono)
        if start_now >= _BUILD_EPOCH_NS:
            self.pending = False
            if start_now <= last.ns:
                log.warning(
                    "the agent restarted at %s by the clock set since, before it last ran "
                    "(%s): the clock was ahead before; no agent_down gap declared",
                    _utc(start_now),
                    _utc(last.ns),
                )
                return None
            return self._declare(start_now, clock_state(wall, self._synced()))
        if not self._said_waiting:
            self._said_waiting = True
            log.warning(
                "the agent last ran at %s but its clock now reads %s; the agent_down gap for "
                "the time between waits until the clock is set (NTP/GPS)",
                _utc(last.ns),
                _utc(start),
            )
        return None

    def _declare(self, end: int, end_clock: str) -> Gap | None:
        last = self.last
        assert last is not None
        down_s = (end - last.ns) / 1e9
        if down_s < MIN_DOWN_S:
            log.info("the agent was down %.3f s; too short to declare", down_s)
            return None
        how = (
            "it was stopped"
            if last.stopped
            else "it ended without stopping (killed, crashed or the gateway lost power)"
        )
        detail = f"the agent was not running: {how}"
        if last.clock != "synced" or end_clock != "synced":
            detail += f"; clock {last.clock} at the start, {end_clock} at the end"
        return Gap(start=last.ns, end=end, reason="agent_down", detail=detail)


class ClockSteps:
    """Declares each forward step of the wall clock as a ``clock`` gap.

    Call :meth:`check` on every commit pass. Between two passes, a wall clock that moved
    more than the monotonic one (by over ``JUMP_TOLERANCE_S``) was set forward: readings
    before the step are dated at most the old clock's time now, those after it at least the
    new clock's time at the previous pass, and the gap runs between. A step from a clock
    before the build (1970) is not declared: those readings are dated 1970, and the
    downtime before them is :class:`Downtime`'s. A step back is only logged: the readings
    after it are dated among earlier ones, with no hole between.
    """

    def __init__(
        self,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ):
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._prev = (wall_ns(), mono_ns())

    def check(self) -> Gap | None:
        wall, mono = self._wall_ns(), self._mono_ns()
        prev_wall, prev_mono = self._prev
        self._prev = (wall, mono)
        elapsed = mono - prev_mono
        step = (wall - prev_wall) - elapsed
        if step < -_JUMP_NS:
            log.warning("the gateway clock was set back by %.1f s", -step / 1e9)
            return None
        if step <= _JUMP_NS:
            return None
        start = prev_wall + elapsed  # the old clock, now
        end = wall - elapsed  # the new clock, at the previous pass
        log.warning(
            "the gateway clock was set forward by %.1f s, from %s to %s",
            step / 1e9,
            _utc(start),
            _utc(end),
        )
        if start < _BUILD_EPOCH_NS or end <= start:
            return None
        return Gap(
            start=start,
            end=end,
            reason="clock",
            detail=(
                f"the gateway clock was set forward by {step / 1e9:.1f} s (NTP, GPS or by "
                "hand): no reading is dated in between"
            ),
        )
