"""``read_window``: reads of a streaming port are spaced so one wake-up takes several lines.

No timing asserts: what is checked is which lines one read() returns, that no line is lost
or split, that timestamps never precede the write of their line, and when Pace sleeps.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from contract.settings import ConfigError
from sensors import line_reader
from sensors.base import Sample
from sensors.line_reader import Pace
from sensors.pty_link import PtyLink
from sensors.registry import config_class, load_sensor_config, make_driver
from sensors.text_line.driver import Driver as TextLineDriver


def _raw(driver: str, port: str, **keys: object) -> dict[str, object]:
    base: dict[str, object] = {"id": "s1", "field": "north", "driver": driver, "port": port}
    if driver == "text_line":
        base["columns"] = ["n", "temp_c"]
    return {**base, **keys}


@pytest.mark.parametrize("driver", ["text_line", "nmea_weather"])
def test_default_and_bounds(driver: str) -> None:
    assert load_sensor_config(_raw(driver, "/dev/null"), "t.toml", 0).read_window == 0.2  # type: ignore[attr-defined]
    assert (
        load_sensor_config(_raw(driver, "/dev/null", read_window=0), "t.toml", 0).read_window == 0
    )  # type: ignore[attr-defined]
    for bad in (-0.1, 1.5, "fast"):
        with pytest.raises(ConfigError) as info:
            load_sensor_config(_raw(driver, "/dev/null", read_window=bad), "t.toml", 0)
        assert "read_window" in str(info.value)


def test_polling_drivers_do_not_take_it() -> None:
    raw = {
        "id": "s1",
        "field": "f",
        "driver": "modbus_soil",
        "port": "/dev/null",
        "read_window": 0.1,
    }
    with pytest.raises(ConfigError, match="read_window"):
        load_sensor_config(raw, "t.toml", 0)


def test_pace_refuses_a_bad_window() -> None:
    with pytest.raises(ValueError, match="read window"):
        Pace(-1.0)


def test_pace_holds_only_a_busy_port(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(line_reader.time, "sleep", slept.append)
    pace = Pace(0.5)
    assert not pace.hold(2.0) and slept == []  # nothing read yet: wait for the first bytes
    t = time.monotonic()
    pace.read_done(t - 3.0, waiting=False, size=20)
    pace.read_done(t - 1.0, waiting=False, size=20)  # 2 s after the previous read: a quiet port
    assert not pace.busy and not pace.hold(2.0) and slept == []
    pace.read_done(time.monotonic(), waiting=False, size=20)  # 1 s later, still quiet
    assert not pace.busy
    pace.read_done(time.monotonic(), waiting=False, size=20)  # within the window: busy
    assert pace.busy
    assert pace.hold(2.0)
    assert len(slept) == 1 and 0.0 < slept[0] <= 0.5
    assert pace.hold(0.1)  # never past the read's own deadline
    assert slept[1] <= 0.1
    pace.read_done(time.monotonic() + 5.0, waiting=True, size=20)  # bytes were there after the hold
    assert pace.busy
    pace.quiet()  # a hold found nothing: read the next bytes when they come
    assert not pace.busy and not pace.hold(2.0) and len(slept) == 2
    pace.read_done(time.monotonic(), waiting=True, size=20)
    assert pace.busy
    pace.read_done(time.monotonic(), waiting=True, size=line_reader.FAST_CHUNK_BYTES)
    assert not pace.busy  # a fast device: never held
    zero = Pace(0.0)
    zero.read_done(time.monotonic(), waiting=True, size=20)
    zero.read_done(time.monotonic(), waiting=True, size=20)
    assert not zero.busy and not zero.hold(2.0) and len(slept) == 2


def _text_line(port: str, window: float) -> TextLineDriver:
    config = config_class("text_line").model_validate(
        _raw("text_line", port, timeout=5.0, read_window=window)
    )
    driver = make_driver(config)
    assert isinstance(driver, TextLineDriver)
    return driver


_sleep = time.sleep
"""The real time.sleep, for the writer while a test records line_reader's sleeps."""


class _Writer(threading.Thread):
    """Writes numbered lines to the pty master, ``spacing`` s apart, noting each write's
    wall-clock time."""

    def __init__(self, fd: int, first: int, count: int, spacing: float) -> None:
        super().__init__(daemon=True)
        self.fd, self.first, self.count, self.spacing = fd, first, count, spacing
        self.written_ns: dict[int, int] = {}

    def run(self) -> None:
        for n in range(self.first, self.first + self.count):
            self.written_ns[n] = time.time_ns()
            # The board's boot output ends with a line end: sent with the first line, so
            # that the first read takes both.
            boot = "\r\n" if n == self.first else ""
            os.write(self.fd, f"{boot}{n},20.5\r\n".encode())
            _sleep(self.spacing)


def _numbers(samples: list[Sample]) -> list[float]:
    return [s.values["n"] for s in samples]


def test_a_busy_port_is_read_once_per_window() -> None:
    with PtyLink() as pty:
        driver = _text_line(pty.slave_path, 0.5)
        driver.open()
        reads: list[list[Sample]] = []
        try:
            writer = _Writer(pty.master_fd, 1, 40, 0.01)
            writer.start()
            got = 0
            while got < 40:
                samples = driver.read()
                assert samples, f"read timed out after {got} of 40 lines"
                reads.append(samples)
                got += len(samples)
            writer.join()
        finally:
            driver.close()
    assert _numbers([s for r in reads for s in r]) == list(range(1, 41))
    # 40 lines 10 ms apart and a 0.5 s window: after the first line or two wake the reader,
    # the port is busy and each read takes what came during its window.
    assert len(reads) <= 6, [len(r) for r in reads]
    assert max(len(r) for r in reads) >= 10, [len(r) for r in reads]
    for samples in reads:
        for sample in samples:
            # Stamped when read: never before the line was written.
            assert sample.ts is not None and sample.ts >= writer.written_ns[int(sample.values["n"])]
        # Read together: 1 ns apart, in order.
        assert [s.ts for s in samples] == [samples[0].ts + i for i in range(len(samples))]  # type: ignore[operator]


def test_a_quiet_port_is_read_as_each_line_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines further apart than the window never make the reader sleep: each is read the
    moment it arrives, as without a window."""
    slept: list[float] = []
    monkeypatch.setattr(line_reader.time, "sleep", lambda s: (slept.append(s), _sleep(s)))
    with PtyLink() as pty:
        driver = _text_line(pty.slave_path, 0.05)
        driver.open()
        try:
            writer = _Writer(pty.master_fd, 1, 4, 0.3)
            writer.start()
            reads = [driver.read() for _ in range(4)]
            writer.join()
        finally:
            driver.close()
    assert [_numbers(r) for r in reads] == [[1], [2], [3], [4]]
    assert slept == []


def test_nothing_lost_or_split_across_windows() -> None:
    """Lines cut at random places and written in bursts come out whole and in order."""
    lines = [f"{n},{20 + n % 7}.{n % 10}\r\n".encode() for n in range(1, 301)]
    stream = b"\r\n" + b"".join(lines)
    with PtyLink() as pty:
        driver = _text_line(pty.slave_path, 0.02)
        driver.open()
        got: list[float] = []
        try:
            pos = 0
            step = 0
            while pos < len(stream):
                size = 1 + (step * 37) % 61  # pieces of 1..61 bytes, mid-line as often as not
                os.write(pty.master_fd, stream[pos : pos + size])
                pos += size
                step += 1
                if step % 5 == 0:
                    got += [s.values["n"] for s in driver.read()]
            while len(got) < len(lines):
                samples = driver.read()
                assert samples, f"read timed out with {len(got)} of {len(lines)} lines"
                got += [s.values["n"] for s in samples]
        finally:
            driver.close()
    assert got == list(range(1, 301))
    assert driver.rejected == {}


def test_a_fast_device_is_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read returns at most the tty's 4 KiB: holding a port that fills it would slow the
    device to 4 KiB per window (and a real one would overrun). Such a port is never held."""
    slept: list[float] = []
    monkeypatch.setattr(line_reader.time, "sleep", lambda s: (slept.append(s), _sleep(s)))
    lines = 20_000  # ~200 KB: 50 reads of 4 KiB, each would be held 0.3 s
    data = b"\r\n" + b"".join(f"{n},20.5\r\n".encode() for n in range(1, lines + 1))
    with PtyLink() as pty:
        driver = _text_line(pty.slave_path, 0.3)
        driver.open()
        writer = threading.Thread(target=_write_all, args=(pty.master_fd, data), daemon=True)
        writer.start()
        got: list[float] = []
        try:
            while len(got) < lines:
                samples = driver.read()
                assert samples, f"read timed out with {len(got)} of {lines} lines"
                got += _numbers(samples)
        finally:
            driver.close()
        writer.join(10)
    assert got == list(range(1, lines + 1))
    assert len(slept) < 10, f"held {len(slept)} times"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
