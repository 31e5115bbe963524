"""Serial fuzz of modbus_soil through a real pty.

1. 1 MB of random bytes on the line while the driver polls: no crash (only SensorErrors),
   no reading accepted.
2. The simulated probe answers every poll, with noise bursts spliced before and after its
   answers and some corrupted answers (bad CRC, cut short): every valid answer but at most
   1 % is recovered, and every accepted reading is exactly what the probe sent.

RSS of this process grows by less than 5 MB over both stages.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import termios
import threading
from pathlib import Path

from sensors import base
from sensors.modbus_soil import simulator
from sensors.modbus_soil.profiles import builtin_profile
from sensors.pty_link import PtyLink
from sensors.registry import load_sensor_config, make_driver

NOISE_BYTES = 1_000_000
POLLS = 400


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _write_noise(master_fd: int, total: int, seed: int) -> None:
    rng = random.Random(seed)
    left = total
    while left > 0:
        chunk = rng.randbytes(min(4096, left))
        view = memoryview(chunk)
        while view:
            view = view[os.write(master_fd, view) :]
        left -= len(chunk)


def test_noise_then_answers_spliced_into_noise() -> None:
    with PtyLink() as pty:
        raw = {"id": "fuzz", "field": "bench", "driver": "modbus_soil", "port": pty.slave_path}
        probe = make_driver(load_sensor_config({**raw, "timeout": 0.2}, "fuzz", 0))
        probe.open()
        try:
            # warm up allocations before the first RSS figure
            for _ in range(3):
                with contextlib.suppress(base.SensorTimeoutError):
                    probe.read()
            gc.collect()
            rss_before = _rss_bytes()

            # 1: pure noise
            writer = threading.Thread(
                target=_write_noise, args=(pty.master_fd, NOISE_BYTES, 7), daemon=True
            )
            writer.start()
            noise_samples = []
            noise_errors: dict[str, int] = {}
            while writer.is_alive() or pty.unread_bytes():
                try:
                    noise_samples += probe.read()
                except base.SensorError as err:  # anything else fails the test
                    noise_errors[type(err).__name__] = noise_errors.get(type(err).__name__, 0) + 1
            writer.join()
            assert noise_samples == [], "a reading was taken out of random bytes"
            assert noise_errors.get("SensorProtocolError", 0) > 0
            assert "SensorPortError" not in noise_errors

            # 2: valid answers spliced into noise, some answers corrupted. The requests of
            # stage 1 were never heard by a probe: drop them.
            termios.tcflush(pty.master_fd, termios.TCIFLUSH)
            sent: list[dict[str, float]] = []
            bus = simulator.Bus(
                {1: simulator.Probe(1, builtin_profile("soil_7in1"), random.Random(1))},
                faults={"crc": 0.03, "short": 0.02},
                noise=0.7,
                rng=random.Random(5),
                on_answer=lambda _address, values: sent.append(values),
            )
            stop = threading.Event()
            server = threading.Thread(target=bus.serve, args=(pty.master_fd, stop), daemon=True)
            server.start()
            got: list[dict[str, float]] = []
            failures = 0
            try:
                for _ in range(POLLS):
                    try:
                        got += [s.values for s in probe.read()]
                    except (base.SensorProtocolError, base.SensorTimeoutError):
                        failures += 1
            finally:
                stop.set()
                server.join(10)
            gc.collect()
            rss_growth = _rss_bytes() - rss_before
        finally:
            probe.close()
    print(
        f"noise errors {noise_errors}; answers {len(sent)}, recovered {len(got)}, "
        f"failed polls {failures}, rss growth {rss_growth / 1e6:.2f} MB"
    )
    assert bus.requests == POLLS
    assert bus.answers == len(sent) and bus.answers > 0.9 * POLLS
    assert all(values in sent for values in got), "a reading the probe never sent was accepted"
    recovered = sum(1 for values in sent if values in got)
    assert recovered >= 0.99 * len(sent), (recovered, len(sent), failures)
    assert rss_growth < 5 * 1024 * 1024, rss_growth
