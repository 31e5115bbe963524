"""1 MB of random bytes, then valid NMEA sentences spliced into noise, through a real pty.

The driver must not crash, must not grow (RSS), must accept nothing but the valid
sentences, and must recover at least 99 % of them.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import orjson

from sensors.nmea_weather.driver import Driver
from sensors.nmea_weather.sentences import with_checksum
from sensors.nmea_weather.simulator import Station, expected_values
from sensors.registry import config_class
from tests.sensors.wire_runner import read_wire

SEED = 20251129
CYCLES = 1000  # x 3 sentences


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _key(values: dict[str, float]) -> bytes:
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS)


def _wire(rng: random.Random) -> tuple[bytes, Counter[bytes]]:
    station = Station(SEED)
    parts = [rng.randbytes(1_000_000), b"\n"]
    emitted: Counter[bytes] = Counter()
    for _ in range(CYCLES):
        station.step()
        for kind in ("MDA", "MWV", "XDR"):
            # Noise may hold anything, '$' and CR included, but ends with LF so that it never
            # swallows the start of the valid sentence after it.
            parts.append(rng.randbytes(rng.randint(0, 300)) + b"\n")
            body = station.body(kind)
            emitted[_key(expected_values(body))] += 1
            parts.append(with_checksum(body))
    return b"".join(parts), emitted


def test_random_noise_and_spliced_sentences() -> None:
    rng = random.Random(SEED)
    wire, emitted = _wire(rng)
    config = config_class("nmea_weather").model_validate(
        {"id": "fuzz", "field": "test", "driver": "nmea_weather", "port": "unset"}
    )
    before = _rss_bytes()
    samples, rejected, driver = read_wire(config, wire)
    growth = _rss_bytes() - before

    got = Counter(_key(s.values) for s in samples)
    invalid = got - emitted
    assert not invalid, f"accepted values that were never sent: {list(invalid)[:5]}"
    sent = sum(emitted.values())
    recovered = sum((got & emitted).values())
    assert recovered >= 0.99 * sent, f"recovered {recovered} of {sent}"
    assert rejected["too_long"] > 0 and rejected["not_ascii"] > 0
    assert growth < 5 * 1024 * 1024, f"RSS grew by {growth / 1048576:.1f} MiB"
    print(
        f"fuzz: {len(wire)} bytes, recovered {recovered}/{sent}, rejected {dict(rejected)}, "
        f"RSS growth {growth / 1024:.0f} KiB"
    )
    assert isinstance(driver, Driver) and driver.accepted == len(samples)
