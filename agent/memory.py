"""Keeping a long-running agent's resident memory small (glibc's malloc; elsewhere a no-op).

- glibc gives each thread that allocates an arena of its own (at least 132 KiB each, up to
  8 per core); the agent's threads (one per port, committer, sender, MQTT) allocate little,
  so :func:`limit_malloc_arenas` caps them before the threads start.
- Start-up (imports, pydantic building its validators, reading the config) leaves freed
  memory in the heap that glibc keeps; :func:`release_free_memory` hands it back.
"""

import ctypes
import functools
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)

MALLOC_ARENAS = 2
"""Arenas for the whole process: the main one and one for the threads to share."""
_M_ARENA_MAX = -8
"""glibc's mallopt() parameter number for the arena cap (malloc.h)."""


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 - glibc only: musl and others lack these
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before starting threads); False where not glibc.

    The same as ``MALLOC_ARENA_MAX`` in the environment, but it holds however the agent
    is started (systemd, ``farmtel agent run``, a shell).
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Collect garbage, then return the heap's free pages to the system; False if not glibc."""
    gc.collect()
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
