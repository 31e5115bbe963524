"""1 MB of random bytes, then valid lines spliced into noise, through a real pty.

The driver must not crash, must not grow (RSS), must accept nothing but the valid lines,
and must recover at least 99 % of them.
"""

from __future__ import annotations

import random
from pathlib import Path

from sensors.registry import config_class
from sensors.text_line.driver import Driver
from sensors.text_line.simulator import LineMaker
from tests.sensors.wire_runner import read_wire

SEED = 20251129
VALID_LINES = 3000
COLUMNS = ["counter", "moisture_pct", "temp_c", "ec_us_cm"]


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _wire(rng: random.Random) -> tuple[bytes, dict[float, dict[str, float]]]:
    maker = LineMaker(COLUMNS, "csv", "none", seed=SEED)
    parts = [rng.randbytes(1_000_000)]
    emitted: dict[float, dict[str, float]] = {}
    for _ in range(VALID_LINES):
        # Noise may hold anything, LF and CR included, but ends with LF so that it never
        # swallows the start of the valid line after it.
        parts.append(rng.randbytes(rng.randint(0, 300)) + b"\n")
        values = maker.next_values()
        emitted[values["counter"]] = values
        parts.append(maker.line(values))
    parts.append(b"\n")
    return b"".join(parts), emitted


def test_random_noise_and_spliced_lines() -> None:
    rng = random.Random(SEED)
    wire, emitted = _wire(rng)
    config = config_class("text_line").model_validate(
        {"id": "fuzz", "field": "test", "driver": "text_line", "port": "unset", "columns": COLUMNS}
    )
    before = _rss_bytes()
    samples, rejected, driver = read_wire(config, wire)
    growth = _rss_bytes() - before

    invalid = [s.values for s in samples if emitted.get(s.values.get("counter", -1.0)) != s.values]
    assert invalid == [], f"accepted values that were never sent: {invalid[:5]}"
    recovered = {s.values["counter"] for s in samples}
    assert len(recovered) == len(samples), "a valid line was accepted twice"
    assert len(recovered) >= 0.99 * VALID_LINES, f"recovered {len(recovered)} of {VALID_LINES}"
    # The noise exercised the rejection paths, and every noise line was counted, not raised.
    assert rejected["too_long"] > 0 and rejected["not_ascii"] > 0 and rejected["bad_format"] > 0
    assert growth < 5 * 1024 * 1024, f"RSS grew by {growth / 1048576:.1f} MiB"
    print(
        f"fuzz: {len(wire)} bytes, recovered {len(recovered)}/{VALID_LINES}, "
        f"rejected {dict(rejected)}, RSS growth {growth / 1024:.0f} KiB"
    )
    assert isinstance(driver, Driver) and driver.accepted == len(samples)
