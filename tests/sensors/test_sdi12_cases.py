"""Case folders: an SDI-12 conversation on a real pty, byte for byte, and what must come out.

Each folder under ``cases/sdi12/`` holds ``config.toml`` (driver options),
``conversation.json`` (each command the driver must send, in order, with the bytes the
sensor answers: ``reply`` null is silence, ``then`` is sent 0.1 s later, e.g. the service
request) and ``expected.json`` (per ``read()``: its values or the error it raises, and the
rejection counters).
"""

from __future__ import annotations

import json
import os
import select
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sensors import base
from sensors.pty_link import PtyLink
from sensors.registry import config_class, make_driver

CASES = Path(__file__).parent / "cases" / "sdi12"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())
REQUIRED = {"values_over_d0_d1", "crc_error", "negative_temperature"}


class Sensor(threading.Thread):
    """Plays the sensor's side of ``steps`` on the pty master; records the commands seen."""

    def __init__(self, fd: int, steps: list[dict[str, Any]]):
        super().__init__(daemon=True)
        self.fd = fd
        self.steps = steps
        self.commands: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        pending = b""
        steps = iter(self.steps)
        while not self.stop.is_set():
            readable, _, _ = select.select([self.fd], [], [], 0.05)
            if not readable:
                continue
            pending += os.read(self.fd, 1024)
            while b"!" in pending:
                command, _, pending = pending.partition(b"!")
                self.commands.append(command.decode("ascii") + "!")
                step = next(steps, None)
                if step is None or step["reply"] is None:
                    continue
                os.write(self.fd, step["reply"].encode("ascii"))
                if step.get("then"):
                    time.sleep(0.1)
                    os.write(self.fd, step["then"].encode("ascii"))


def test_required_cases_exist() -> None:
    assert set(CASE_NAMES) >= REQUIRED


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case(case: str) -> None:
    folder = CASES / case
    options = tomllib.loads((folder / "config.toml").read_text())
    steps = json.loads((folder / "conversation.json").read_text())
    expected = json.loads((folder / "expected.json").read_text())
    with PtyLink() as pty:
        config = config_class("sdi12").model_validate(
            {
                "id": "case",
                "field": "test",
                "driver": "sdi12",
                "port": pty.slave_path,
                "response_timeout": 0.3,
                **options,
            }
        )
        sensor = Sensor(pty.master_fd, steps)
        sensor.start()
        driver = make_driver(config)
        driver.open()
        outcomes: list[dict[str, Any]] = []
        try:
            for _ in expected["reads"]:
                try:
                    samples = driver.read()
                except base.SensorError as err:
                    outcomes.append({"error": type(err).__name__})
                    assert err.sensor == "case" and str(err)
                else:
                    assert len(samples) == 1 and samples[0].ts
                    outcomes.append({"values": samples[0].values})
        finally:
            driver.close()
            sensor.stop.set()
            sensor.join(5)
    assert outcomes == expected["reads"], expected["why"]
    assert sensor.commands == [s["expect"] for s in steps], expected["why"]
    assert dict(driver.rejected) == expected["rejected"], expected["why"]
