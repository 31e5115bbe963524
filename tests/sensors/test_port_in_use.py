"""Every driver says the same plain thing when another program holds its port."""

from __future__ import annotations

import tomllib

import pytest
import serial

from sensors import registry
from sensors.base import SensorPortError
from sensors.pty_link import PtyLink


@pytest.mark.parametrize("name", registry.names())
def test_a_port_held_by_another_program_is_named_so(name: str) -> None:
    raw = dict(tomllib.loads(registry.sample_config(name))["sensors"][0])
    with PtyLink() as pty:
        path = raw["port"] = pty.slave_path
        driver = registry.make_driver(registry.load_sensor_config(raw, "sample.toml", 0))
        # What a serial monitor or ModemManager does: open the port exclusively.
        holder = serial.Serial(pty.slave_path, exclusive=True)
        try:
            with pytest.raises(SensorPortError) as info:
                driver.open()
                driver.read()  # a driver that opens its bus on first use
        finally:
            holder.close()
            driver.close()
    text = str(info.value)
    assert path in text
    assert "another program (or another [[sensors]] entry) uses this port" in text
