"""Case folders of the modbus_soil driver: the bytes on the wire and what the driver makes of them.

Each ``cases/modbus_soil/<case>/case.toml`` holds the sensor options and a list of
exchanges: the request the driver must send (checked byte for byte), the response put on
the line (empty: silence), and either the values expected or the error class and a part
of its message. All sensors of a case share one pty, as probes share an RS-485 bus.
``unplug = true`` closes the pty pair before the read, as a pulled USB adapter does.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sensors import base
from sensors.modbus_soil import driver as modbus_driver
from sensors.pty_link import PtyLink
from sensors.registry import load_sensor_config, make_driver

CASES = Path(__file__).parent / "cases" / "modbus_soil"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "case.toml").is_file())


def _read_request(master_fd: int, size: int, timeout: float = 5.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < size and time.monotonic() < deadline:
        readable, _, _ = select.select([master_fd], [], [], 0.05)
        if readable:
            got += os.read(master_fd, size - len(got))
    return got


def _answer(master_fd: int, request_size: int, response: bytes, outcome: dict[str, Any]) -> None:
    """The probe's side: take the request, then put the response on the line."""
    outcome["request"] = _read_request(master_fd, request_size)
    if response:
        os.write(master_fd, response)


def _sensor(case: dict[str, Any], port: str, address: int | None) -> base.Driver:
    raw: dict[str, Any] = {"id": "probe", "field": "bench", "driver": "modbus_soil", "port": port}
    raw.update(case["sensor"])
    if address is not None:
        raw["address"] = address
    return make_driver(load_sensor_config(raw, "case.toml", 0))


def test_there_are_the_required_cases() -> None:
    required = {"negative_temperature", "crc_error", "exception_response", "silence"}
    required |= {"two_slaves_one_bus", "profile_soil_3in1", "profile_soil_4in1"}
    required |= {"profile_jxbs_7in1", "custom_profile_32bit_types", "port_gone"}
    assert required <= set(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case(name: str) -> None:
    case = tomllib.loads((CASES / name / "case.toml").read_text())
    with PtyLink() as pty:
        drivers: dict[int | None, base.Driver] = {}
        try:
            for exchange in case["exchange"]:
                address = exchange.get("address")
                if address not in drivers:
                    drivers[address] = _sensor(case, pty.slave_path, address)
                    drivers[address].open()
                device = drivers[address]
                if exchange.get("unplug"):
                    # the adapter is pulled out: the pty pair vanishes under the open port
                    pty.close()
                    with pytest.raises(base.SensorPortError) as unplugged:
                        device.read()
                    assert exchange["message"] in str(unplugged.value)
                    continue
                expected_request = bytes.fromhex(exchange["request"])
                response = bytes.fromhex(exchange["response"])
                outcome: dict[str, Any] = {}
                responder = threading.Thread(
                    target=_answer,
                    args=(pty.master_fd, len(expected_request), response, outcome),
                    daemon=True,
                )
                responder.start()
                try:
                    if "error" in exchange:
                        error_class = getattr(base, exchange["error"])
                        with pytest.raises(error_class) as raised:
                            device.read()
                        assert exchange["message"] in str(raised.value)
                    else:
                        samples = device.read()
                        assert len(samples) == 1
                        assert samples[0].values == exchange["values"]
                        assert samples[0].ts is not None
                finally:
                    responder.join(10)
                assert outcome["request"] == expected_request, outcome["request"].hex(" ")
        finally:
            for device in drivers.values():
                device.close()
    assert modbus_driver.open_port_count() == 0
