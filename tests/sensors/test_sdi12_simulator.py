"""The SDI-12 driver against its simulator on a pty: a shared bus, scan, faults, records."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensors import base
from sensors.registry import load_sensor_config, make_driver
from sensors.sdi12.driver import Driver
from tests.sensors.wire_runner import Simulator, read_records


def _driver(port: Path, address: str, **keys: object) -> base.Driver:
    raw = {
        "id": f"soil-{address}",
        "field": "f",
        "driver": "sdi12",
        "port": str(port),
        "address": address,
        "response_timeout": 0.5,
        **keys,
    }
    return make_driver(load_sensor_config(raw, "test", 0))


def test_two_sensors_share_a_bus_and_match_the_record(tmp_path: Path) -> None:
    link, record = tmp_path / "bus", tmp_path / "sent.jsonl"
    args = ["--address", "0", "--address", "b", "--split-values", "--ready-after", "0.05"]
    args += ["--latency", "0.05"]  # every answer 50 ms late, like a slow USB adapter
    with Simulator("sensors.sdi12", link, *args, "--record", str(record)) as sim:
        sim.ready()
        first, second = _driver(link, "0"), _driver(link, "b")
        first.open()
        second.open()  # the same port: shared, not a second exclusive open
        try:
            got = {"0": [], "b": []}  # type: dict[str, list[dict[str, float]]]
            for _ in range(2):
                got["0"] += [s.values for s in first.read()]
                got["b"] += [s.values for s in second.read()]
        finally:
            first.close()
            second.close()
        # A 30 ms window, shorter than the latency: late acknowledgements still count.
        found = list(Driver.scan(str(link), {"response_timeout": "0.03"}, lambda _: None))
        code, events, err = sim.stop()
    assert code == 0, err
    sent = read_records(record)
    for address in ("0", "b"):
        assert got[address] == [r["values"] for r in sent if r["address"] == address]
    assert events[-1]["measurements"] == {"0": 2, "b": 2}
    assert [f["address"] for f in found] == ["0", "b"]
    assert found[1]["vendor"] == "FARMTEL" and found[1]["sdi_version"] == "1.4"


@pytest.mark.parametrize(
    ("fault", "error", "counted"),
    [
        ("crc", base.SensorProtocolError, "bad_crc"),
        ("garbage", base.SensorProtocolError, "any"),
        ("silence", base.SensorTimeoutError, None),
    ],
)
def test_faults_are_reported_as_what_they_are(
    tmp_path: Path, fault: str, error: type[base.SensorError], counted: str | None
) -> None:
    link = tmp_path / "bus"
    with Simulator("sensors.sdi12", link, "--fault", fault, "--ttt", "0") as sim:
        sim.ready()
        driver = _driver(link, "0", response_timeout=0.2)
        driver.open()
        try:
            with pytest.raises(error) as raised:
                driver.read()
        finally:
            driver.close()
        sim.stop()
    assert raised.value.sensor == "soil-0"
    if counted == "any":  # random text: bad_format, or wrong_address if it starts like one
        assert sum(driver.rejected.values()) >= 3
    elif counted:
        assert driver.rejected[counted] >= 3
    else:
        assert "check the address" in str(raised.value)
