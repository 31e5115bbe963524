"""Build signed batches the way the agent does, for the security tests."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from contract.signing import batch_message, load_private_key, sign
from contract.wire import Batch, ClockQuality, Reading


def make_batch(gateway: str, sensor: str, count: int = 5, seq0: int = 0) -> Batch:
    now = time.time_ns()
    return Batch(
        gateway=gateway,
        boot="boot-1",
        batch=uuid.uuid4().hex,
        sent=now,
        readings=[
            Reading(
                sensor=sensor,
                field="north",
                kind="soil",
                ts=now - (count - i) * 1_000_000,
                clock=ClockQuality.SYNCED,
                seq=seq0 + i,
                values={"moisture_pct": 20.0 + i, "temp_c": 11.5},
            )
            for i in range(count)
        ],
    )


def signed(batch: Batch, plantation: str, key_file: Path) -> Batch:
    """``batch`` with the signature ``key_file`` makes over it under ``plantation``."""
    sig = sign(load_private_key(key_file), batch_message(plantation, batch))
    return batch.model_copy(update={"sig": sig})
