"""The nmea_weather driver against its simulator: every sentence sent is read, noise is not."""

from __future__ import annotations

import time
from pathlib import Path

from sensors.registry import load_sensor_config, make_driver
from tests.sensors.wire_runner import Simulator, read_records

CYCLES = 60


def test_records_match_what_the_driver_reads_through_noise(tmp_path: Path) -> None:
    link, record = tmp_path / "wx", tmp_path / "sent.jsonl"
    args = ["--rate", "0", "--count", str(CYCLES), "--noise", "0.3", "--seed", "4"]
    with Simulator(
        "sensors.nmea_weather", link, *args, "--start-delay", "1", "--record", str(record)
    ) as sim:
        sim.ready()
        raw = {"id": "wx", "field": "f", "driver": "nmea_weather", "port": str(link)}
        driver = make_driver(load_sensor_config({**raw, "timeout": 0.3}, "test", 0))
        driver.open()
        values: list[dict[str, float]] = []
        deadline = time.monotonic() + 30
        try:
            while len(values) < 3 * CYCLES and time.monotonic() < deadline:
                values += [s.values for s in driver.read()]
        finally:
            driver.close()
        code, events, err = sim.stop(terminate=False)
    assert code == 0, err
    sent = read_records(record)
    assert len(sent) == 3 * CYCLES
    assert values == [r["values"] for r in sent]
    noise = events[-1]["noise"]
    assert noise > 0 and sum(driver.rejected.values()) == noise, dict(driver.rejected)
