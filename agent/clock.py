"""How far the gateway's wall clock can be trusted.

Gateways have no battery clock: after a power cut the clock starts wherever the kernel
finds it (often 1970 or the last fake-hwclock save) until NTP or GPS sets it. Every reading
carries a :class:`~contract.ClockQuality` so ingest and certifiers know which timestamps to
doubt. Sources:

- the kernel's NTP state (``adjtimex``: ``TIME_ERROR`` / ``STA_UNSYNC`` means not synced);
- the build date of this software: a clock before it is certainly wrong;
- the wall clock against the monotonic clock: a step of more than ``JUMP_TOLERANCE_S``
  between two checks is a jump.
"""

import ctypes
import functools
import threading
import time
from typing import Any

from contract.wire import ClockQuality

BUILD_EPOCH_S = 1_793_491_200
"""2026-11-01T00:00:00Z. A wall clock before this is not a real time."""
JUMP_TOLERANCE_S = 2.0
_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


@functools.cache
def _adjtimex() -> Any:
    """libc's ``adjtimex``, or None where there is none.

    Looked up once, in the symbols the process already has loaded (``dlopen(NULL)``):
    ``ctypes.util.find_library`` would run ``ldconfig -p`` in a child process each time.
    """
    try:
        return ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def kernel_synced() -> bool | None:
    """True when the kernel reports NTP sync, False when not, None when it cannot tell."""
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    tx = _Timex()
    try:
        state = adjtimex(ctypes.byref(tx))
    except OSError:
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)


class ClockWatch:
    """Judges each timestamp; call :meth:`quality` when a reading is taken. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_wall = time.time()
        self._last_mono = time.monotonic()
        self._synced_at_check: bool | None = None
        self._next_probe = 0.0
        self.jumps = 0

    def _synced(self, mono: float) -> bool | None:
        # adjtimex is cheap, but readings come thousands a second; look every 5 s.
        if mono >= self._next_probe:
            self._synced_at_check = kernel_synced()
            self._next_probe = mono + 5.0
        return self._synced_at_check

    def synced(self) -> bool | None:
        """The kernel's NTP state as :meth:`quality` last probed it (at most 5 s old), without
        touching the jump bookkeeping: for callers other than the reading path."""
        with self._lock:
            return self._synced(time.monotonic())

    def quality(self, wall_ns: int | None = None) -> ClockQuality:
        wall = time.time() if wall_ns is None else wall_ns / 1e9
        mono = time.monotonic()
        with self._lock:
            drift = (wall - self._last_wall) - (mono - self._last_mono)
            self._last_wall, self._last_mono = wall, mono
            if abs(drift) > JUMP_TOLERANCE_S:
                self.jumps += 1
                return ClockQuality.STEPPED
            if wall < BUILD_EPOCH_S:
                return ClockQuality.INVALID
            return ClockQuality.SYNCED if self._synced(mono) else ClockQuality.UNSYNCED
