"""The text_line simulator as a process: what it sends is what the driver reads."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sensors.base import Sample
from sensors.registry import config_class, make_driver
from tests.sensors.wire_runner import REPO, Simulator, read_records

COUNT = 40


@pytest.mark.parametrize(
    ("line_format", "checksum"), [("csv", "nmea_xor"), ("kv", "crc16"), ("json", "none")]
)
def test_every_line_sent_is_read_back(line_format: str, checksum: str, tmp_path: Path) -> None:
    link, record = tmp_path / "mcu", tmp_path / "sent.jsonl"
    columns = ["moisture_pct", "counter", "temp_c", "ph"]
    args = [
        "--format",
        line_format,
        "--checksum",
        checksum,
        "--columns",
        ",".join(columns),
        "--rate",
        "400",
        "--count",
        str(COUNT),
        "--seed",
        "7",
        "--noise",
        "0.3",
        "--record",
        str(record),
        "--start-delay",
        "1.5",
    ]
    keys: dict[str, object] = {"format": line_format, "checksum": checksum, "timeout": 0.5}
    if line_format == "csv":
        keys["columns"] = columns
    with Simulator("sensors.text_line", link, *args) as sim:
        ready = sim.ready()
        assert ready["columns"] == columns and ready["port"] == str(link)
        driver = make_driver(
            config_class("text_line").model_validate(
                {"id": "mcu", "field": "f", "driver": "text_line", "port": str(link), **keys}
            )
        )
        driver.open()  # within the start delay: nothing is sent before the port is open
        samples: list[Sample] = []
        try:
            deadline = time.monotonic() + 30
            while not any(s.values["counter"] == COUNT for s in samples):
                assert time.monotonic() < deadline, f"got {len(samples)} samples"
                samples += driver.read()
        finally:
            driver.close()
        code, events, err = sim.stop(terminate=False)  # it ends by itself after --count
    sent = read_records(record)
    assert [r["n"] for r in sent] == list(range(1, COUNT + 1))
    assert [s.values for s in samples] == [r["values"] for r in sent]
    for rec, sample in zip(sent, samples, strict=True):
        assert sample.ts is not None and sample.ts >= rec["sent_ns"]
    assert code == 0, err
    assert events[-1] == {
        "event": "done",
        "reason": "count",
        "sent": COUNT,
        "noise": events[-1]["noise"],
    }
    assert events[-1]["noise"] > 0 and sum(driver.rejected.values()) > 0
    assert not link.is_symlink()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(signum: int, tmp_path: Path) -> None:
    link = tmp_path / "mcu"
    with Simulator("sensors.text_line", link, "--rate", "50") as sim:
        sim.ready()
        assert link.is_symlink()
        sim.proc.send_signal(signum)
        code, events, err = sim.stop(terminate=False)
    assert code == 0, err
    assert events[-1]["event"] == "done" and events[-1]["reason"] == signal.Signals(signum).name
    assert not link.is_symlink()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--columns", "Temp"], "--columns"),
        (["--noise", "2"], "--noise"),
        (["--rate", "-1"], "--rate"),
        (["--columns", "a_c,a_c"], "twice"),
    ],
)
def test_bad_arguments(args: list[str], message: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sensors.text_line.simulator", "--link", str(tmp_path / "x"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert message in out.stderr
    assert not (tmp_path / "x").exists()


def test_link_path_taken_by_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_text("mine")
    out = subprocess.run(
        [sys.executable, "-m", "sensors.text_line.simulator", "--link", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "not a symlink" in out.stderr
    assert path.read_text() == "mine"
