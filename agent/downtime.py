"""The time the agent was not running, declared as a gateway-wide ``agent_down`` gap.

An agent that is stopped (an upgrade), killed, or loses power measures nothing until it runs
again. Its outbox keeps the last moment it was alive (:class:`AliveMark`, meta key
``alive``): written in every commit of readings or gaps, at least every
:data:`ALIVE_EVERY_S` when there is nothing to commit, and once more on a clean stop. At
start the agent compares that mark with its clock and declares the stretch between as a gap
(:class:`Downtime`), so a certifier reads "no data: the agent was not running" instead of
silence.

Gateways have no battery clock, so the restart time is only trusted when the clock is:

- it reads after the mark and after this software was built: the gap ends at the restart,
  as the gateway's clock tells it (its detail says so when the kernel does not report the
  clock synchronised, as the readings' ``clock`` flag does);
- it reads 1970-ish, or before the mark (a clock restored from a file by fake-hwclock, or
  one that went back): the gap waits until the clock is set (the kernel reports sync, or
  the wall clock steps against the monotonic clock). The restart time is then the wall
  clock now minus the monotonic time since the restart;
- the mark itself was taken from a clock before this software was built: how long the agent
  was down cannot be told; that is logged and no gap is declared.

Every commit carries the mark, so a declared gap never covers a reading that was stored: it
starts at the last commit, or at most :data:`ALIVE_EVERY_S` before the end when nothing was
being committed.
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
SYNC_PROBE_S = 5.0
"""How often a pending downtime asks the kernel whether the clock is synchronised."""

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
        if len(parts) != 3:
            raise ValueError(f"expected '<ns> <clock> <running|stopped>', got {text!r:.80}")
        ns, clock, how = parts
        if not ns.isdigit() or clock not in CLOCK_STATES or how not in ("running", "stopped"):
            raise ValueError(f"expected '<ns> <clock> <running|stopped>', got {text!r:.80}")
        return cls(int(ns), clock, how == "stopped")


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
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        synced: Callable[[], bool | None] = kernel_synced,
    ):
        self.last = last
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._synced = synced
        self.started_wall = wall_ns()
        self._started_mono = mono_ns()
        self._next_probe = 0
        self._said_waiting = False
        self.pending = True

    def check(self) -> Gap | None:
        """The ``agent_down`` gap, once it can be told; None before, after, or if none."""
        if not self.pending:
            return None
        last = self.last
        if last is None:
            self.pending = False
            log.info("no record of when the agent last ran (a new outbox); no downtime to declare")
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
        if start >= _BUILD_EPOCH_NS and start > last.ns:
            return self._declare(start, self._state_now(start))
        # The clock at the restart reads before the mark or before the build: wait until it
        # is set, and count back along the monotonic clock.
        mono = self._mono_ns()
        wall = self._wall_ns()
        start_now = wall - (mono - self._started_mono)
        synced = self._probe(mono)
        if (synced or abs(start_now - start) > _JUMP_NS) and start_now >= _BUILD_EPOCH_NS:
            if start_now <= last.ns:
                self.pending = False
                log.warning(
                    "the agent restarted at %s, before it last ran (%s) by the set clock: the "
                    "clock was ahead before; no agent_down gap declared",
                    _utc(start_now),
                    _utc(last.ns),
                )
                return None
            return self._declare(start_now, clock_state(wall, synced))
        if not self._said_waiting:
            self._said_waiting = True
            log.warning(
                "the agent last ran at %s but its clock now reads %s; the agent_down gap for "
                "the time between waits until the clock is set (NTP/GPS)",
                _utc(last.ns),
                _utc(start),
            )
        return None

    def _probe(self, mono: int) -> bool | None:
        if mono < self._next_probe:
            return None
        self._next_probe = mono + int(SYNC_PROBE_S * 1e9)
        return self._synced()

    def _state_now(self, wall: int) -> str:
        return clock_state(wall, self._synced())

    def _declare(self, end: int, end_clock: str) -> Gap | None:
        self.pending = False
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
