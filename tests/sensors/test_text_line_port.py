"""The port itself: missing, unplugged, vanishing mid-read, locked by another reader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sensors.base import SensorPortError
from sensors.pty_link import PtyLink, open_pty_pair
from sensors.registry import config_class, make_driver
from sensors.text_line.driver import Driver


def _driver(port: str, **keys: object) -> Driver:
    config = config_class("text_line").model_validate(
        {
            "id": "mcu-1",
            "field": "north",
            "driver": "text_line",
            "port": port,
            "columns": ["moisture_pct", "temp_c"],
            "timeout": 0.3,
            **keys,
        }
    )
    driver = make_driver(config)
    assert isinstance(driver, Driver)
    return driver


def test_missing_path(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyUSB9")
    driver = _driver(port)
    with pytest.raises(SensorPortError) as info:
        driver.open()
    message = str(info.value)
    assert port in message and "option port" in message and "/dev/serial/by-id" in message
    assert info.value.sensor == "mcu-1"
    assert not isinstance(info.value.__cause__, SensorPortError)  # chained, for the log


def test_symlink_to_an_unplugged_pty(tmp_path: Path) -> None:
    pair = open_pty_pair()
    link = tmp_path / "mcu"
    link.symlink_to(pair.slave_path)
    pair.close()  # the adapter is gone: its device node disappears
    with pytest.raises(SensorPortError, match=str(link)):
        _driver(str(link)).open()


def test_port_vanishes_mid_read() -> None:
    with PtyLink() as pty:
        slave_path = pty.slave_path
        driver = _driver(slave_path)
        driver.open()
        os.write(pty.master_fd, b"\r\n31.2,20.5\r\n")
        assert [s.values for s in driver.read()] == [{"moisture_pct": 31.2, "temp_c": 20.5}]
    # PtyLink closed both ends: the device went away under the open driver.
    with pytest.raises(SensorPortError) as info:
        driver.read()
    assert slave_path in str(info.value) and "failed while reading" in str(info.value)
    driver.close()
    driver.close()  # safe twice


def test_second_reader_is_refused() -> None:
    with PtyLink() as pty:
        first = _driver(pty.slave_path)
        first.open()
        try:
            with pytest.raises(SensorPortError, match="another program"):
                _driver(pty.slave_path).open()
        finally:
            first.close()


def test_read_before_open() -> None:
    with pytest.raises(SensorPortError, match="before open"):
        _driver("/dev/null").read()


def test_reopen_resynchronises() -> None:
    with PtyLink() as pty:
        driver = _driver(pty.slave_path)
        driver.open()
        os.write(pty.master_fd, b"\r\n31.2,20.5\r\n31.3,")
        assert len(driver.read()) == 1
        driver.open()  # reopen: the half line is forgotten, the next fragment is partial
        os.write(pty.master_fd, b"20.6\r\n31.4,20.7\r\n")
        assert [s.values for s in driver.read()] == [{"moisture_pct": 31.4, "temp_c": 20.7}]
        assert driver.rejected["partial_line"] == 1
        driver.close()


def test_loop_url() -> None:
    driver = _driver("loop://")
    driver.open()
    try:
        driver._port.write(b"\n31.2,20.5\r\n")
        assert [s.values for s in driver.read()] == [{"moisture_pct": 31.2, "temp_c": 20.5}]
    finally:
        driver.close()
