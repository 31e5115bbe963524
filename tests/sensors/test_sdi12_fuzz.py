"""SDI-12 through a real pty: 1 MB of random bytes on the line, then measurements whose
answers are spliced into noise (and sometimes corrupted).

The driver must not crash, must not grow (RSS), must accept nothing but the values the
sensor sent, and must complete at least 99 % of the measurements.
"""

from __future__ import annotations

import os
import random
import select
import threading
import time
from pathlib import Path

from sensors import base
from sensors.pty_link import PtyLink
from sensors.registry import config_class, make_driver
from sensors.sdi12.frames import format_value, with_crc

SEED = 20251129
MEASUREMENTS = 400
NOISE_BYTES = 1_000_000


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class NoisySensor(threading.Thread):
    """Address 0 with a generic (counter, temp_c, ec_us_cm) profile, on a noisy line.

    First it sends NOISE_BYTES random bytes and answers nothing; then it answers every
    command, each answer after random noise that ends with CR LF, and one answer in ten
    with a byte flipped (the driver must catch it by its CRC and ask again).
    """

    def __init__(self, fd: int):
        super().__init__(daemon=True)
        self.fd = fd
        self.rng = random.Random(SEED)
        self.sent: dict[float, dict[str, float]] = {}
        self.noise_done = threading.Event()
        self.stop = threading.Event()
        self._data: list[bytes] = []

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.stop.is_set():
            _, writable, _ = select.select([], [self.fd], [], 0.05)
            if writable:
                view = view[os.write(self.fd, view[:4096]) :]
            if not self.noise_done.is_set():
                self._drain_commands()  # the noise phase answers nothing

    def _drain_commands(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            os.read(self.fd, 4096)

    def _noise(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, 120)) + b"\r\n"

    def _answer(self, command: bytes) -> bytes | None:
        if command.endswith(b"0MC"):
            counter = float(len(self.sent) + 1)
            temp = round(self.rng.uniform(-30, 40), 1)
            ec = float(self.rng.randint(0, 2000))
            self.sent[counter] = {"counter": counter, "temp_c": temp, "ec_us_cm": ec}
            self._data = [format_value(counter, 0), format_value(temp, 1) + format_value(ec, 0)]
            return b"00013\r\n" + self._noise() + b"0\r\n"
        if command[-3:-1] == b"0D" and command[-1:].isdigit():
            index = int(command[-1:])
            body = b"0" + (self._data[index] if index < len(self._data) else b"")
            frame = with_crc(body)
            if self.rng.random() < 0.1:
                i = self.rng.randrange(1, len(frame))
                frame = frame[:i] + bytes([frame[i] ^ 0x04]) + frame[i + 1 :]
            return frame + b"\r\n"
        return None

    def run(self) -> None:
        self._write(self.rng.randbytes(NOISE_BYTES))
        self.noise_done.set()
        pending = b""
        while not self.stop.is_set():
            if not select.select([self.fd], [], [], 0.05)[0]:
                continue
            pending += os.read(self.fd, 1024)
            while b"!" in pending:
                command, _, pending = pending.partition(b"!")
                reply = self._answer(command)
                if reply is not None:
                    self._write(self._noise() + reply)


def test_noise_then_measurements_in_noise() -> None:
    with PtyLink() as pty:
        config = config_class("sdi12").model_validate(
            {
                "id": "fuzz",
                "field": "test",
                "driver": "sdi12",
                "port": pty.slave_path,
                "profile": "generic",
                "values": ["counter", "temp_c", "ec_us_cm"],
                "response_timeout": 0.3,
            }
        )
        sensor = NoisySensor(pty.master_fd)
        driver = make_driver(config)
        before = _rss_bytes()
        driver.open()
        sensor.start()
        samples: list[base.Sample] = []
        noise_errors = 0
        failures: list[str] = []
        deadline = time.monotonic() + 120
        try:
            while not sensor.noise_done.is_set():
                try:
                    samples += driver.read()  # checked below like the others
                except (base.SensorTimeoutError, base.SensorProtocolError):
                    noise_errors += 1
                assert time.monotonic() < deadline, "the noise phase did not end"
            noise_phase_samples = len(samples)
            for _ in range(MEASUREMENTS):
                try:
                    samples += driver.read()
                except (base.SensorTimeoutError, base.SensorProtocolError) as err:
                    failures.append(str(err))
                assert time.monotonic() < deadline, "the measurements took over 120 s"
        finally:
            driver.close()
            sensor.stop.set()
            sensor.join(5)
        growth = _rss_bytes() - before

    invalid = [s.values for s in samples if sensor.sent.get(s.values["counter"]) != s.values]
    assert invalid == [], f"accepted values that were never sent: {invalid[:5]}"
    counters = [s.values["counter"] for s in samples]
    assert len(set(counters)) == len(counters), "a measurement was accepted twice"
    assert len(samples) - noise_phase_samples >= 0.99 * MEASUREMENTS, (
        f"{len(samples)} of {MEASUREMENTS}: {failures[:3]}"
    )
    assert driver.rejected["bad_crc"] > 0 and driver.rejected["bad_format"] > 0
    assert growth < 5 * 1024 * 1024, f"RSS grew by {growth / 1048576:.1f} MiB"
    print(
        f"sdi12 fuzz: {len(samples)}/{MEASUREMENTS} measurements, {noise_errors} failed reads "
        f"in the noise phase, rejected {dict(driver.rejected)}, RSS growth {growth / 1024:.0f} KiB"
    )
