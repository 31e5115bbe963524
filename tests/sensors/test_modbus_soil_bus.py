"""modbus_soil against its simulator on a real pty: frames, bus sharing, faults, scan."""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient
from pymodbus.framer import FramerRTU
from typer.testing import CliRunner

from cli import app
from sensors import base
from sensors.modbus_soil import driver as modbus_driver
from sensors.modbus_soil import rtu, simulator
from sensors.modbus_soil.profiles import builtin_profile
from sensors.pty_link import PtyLink
from sensors.registry import load_sensor_config, make_driver
from tests.sensors.wire_runner import Simulator, read_records
from tests.support.procs import run_cli

PACKAGE = "sensors.modbus_soil"


def _probe(port: Path | str, **options: Any) -> base.Driver:
    raw: dict[str, Any] = {"id": "probe", "field": "bench", "driver": "modbus_soil"}
    raw.update(port=str(port), timeout=0.5, **options)
    return make_driver(load_sensor_config(raw, "test", 0))


def test_crc_and_frames_match_pymodbus() -> None:
    rng = random.Random(3)
    for _ in range(200):
        data = rng.randbytes(rng.randint(1, 60))
        # pymodbus keeps the CRC as the two bytes on the wire read big-endian
        assert rtu.with_crc(data)[-2:] == FramerRTU.compute_CRC(data).to_bytes(2, "big")
    request = rtu.read_request(1, 3, 0, 7)
    assert request == bytes.fromhex("01 03 00 00 00 07 04 08")  # as printed in probe manuals
    assert FramerRTU.check_CRC(request[:-2], int.from_bytes(request[-2:], "big"))


def test_pymodbus_client_reads_the_simulator(tmp_path: Path) -> None:
    """An independent Modbus master understands the simulator's answers and exceptions."""
    link = tmp_path / "bus"
    record = tmp_path / "sent.jsonl"
    with Simulator(PACKAGE, link, "--address", "7", "--seed", "4", "--record", str(record)) as sim:
        sim.ready()
        client = ModbusSerialClient(
            port=str(link), framer=FramerType.RTU, baudrate=4800, timeout=1, retries=0
        )
        assert client.connect()
        try:
            answer = client.read_holding_registers(0, count=7, device_id=7)
            refused = client.read_holding_registers(100, count=2, device_id=7)
        finally:
            client.close()  # type: ignore[no-untyped-call]  # pymodbus lacks the annotation
        sim.stop()
    assert not answer.isError()
    sent = read_records(record)[0]["values"]
    temp = answer.registers[1] - 0x10000 if answer.registers[1] >= 0x8000 else answer.registers[1]
    assert round(temp * 0.1, 1) == sent["temp_c"]
    assert answer.registers[0] / 10 == sent["moisture_pct"]
    assert refused.isError() and refused.exception_code == 2


def test_two_probes_share_one_port_from_two_threads(tmp_path: Path) -> None:
    """Reads on one bus are serialized by the driver: two threads hammering two slave ids on
    one pty never mix up answers."""
    link = tmp_path / "bus"
    record = tmp_path / "sent.jsonl"
    args = ["--address", "2", "--address", "5", "--profile", "soil_4in1", "--seed", "1"]
    with Simulator(PACKAGE, link, *args, "--record", str(record)) as sim:
        sim.ready()
        probes = {a: _probe(link, address=a, profile="soil_4in1") for a in (2, 5)}
        got: dict[int, list[dict[str, float]]] = {2: [], 5: []}
        errors: list[BaseException] = []

        def poll(address: int) -> None:
            try:
                for _ in range(40):
                    got[address].append(probes[address].read()[0].values)
            except BaseException as err:  # reported by the main thread
                errors.append(err)

        for probe in probes.values():
            probe.open()
        assert modbus_driver.open_port_count() == 1
        threads = [threading.Thread(target=poll, args=(a,)) for a in probes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for probe in probes.values():
            probe.close()
        assert modbus_driver.open_port_count() == 0
        sim.stop()
    assert not errors, errors
    sent = read_records(record)
    for address in (2, 5):
        assert got[address] == [r["values"] for r in sent if r["address"] == address]
        assert len(got[address]) == 40


@contextlib.contextmanager
def _bus_on_pty(bus: simulator.Bus) -> Iterator[PtyLink]:
    """The simulated bus served in a thread on a fresh pty (faster than a process)."""
    stop = threading.Event()
    with PtyLink() as pty:
        server = threading.Thread(target=bus.serve, args=(pty.master_fd, stop), daemon=True)
        server.start()
        try:
            yield pty
        finally:
            stop.set()
            server.join(10)


def _one_probe_bus(profile: str = "soil_7in1", **options: Any) -> simulator.Bus:
    probe = simulator.Probe(1, builtin_profile(profile), random.Random(1))
    return simulator.Bus({1: probe}, rng=random.Random(2), **options)


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("crc", base.SensorProtocolError, "CRC error"),
        ("exception", base.SensorReportedError, "exception 4: slave device failure"),
        ("silence", base.SensorTimeoutError, "did not answer"),
        ("short", base.SensorProtocolError, "short or malformed frame"),
    ],
)
def test_simulator_faults_are_reported_as_what_they_are(
    fault: str, error: type[base.SensorError], message: str
) -> None:
    bus = _one_probe_bus(faults={fault: 1.0})
    with _bus_on_pty(bus) as pty:
        probe = _probe(pty.slave_path)
        probe.open()
        try:
            with pytest.raises(error, match=message):
                probe.read()
        finally:
            probe.close()
    assert bus.requests == 1 and bus.answers == 0


def test_wrong_profile_is_an_exception_with_advice() -> None:
    with _bus_on_pty(_one_probe_bus("soil_3in1")) as pty:
        probe = _probe(pty.slave_path, profile="jxbs_7in1", baudrate=4800)
        probe.open()
        try:
            with pytest.raises(base.SensorReportedError, match=r"illegal data address.*profile"):
                probe.read()
        finally:
            probe.close()


def test_port_missing_and_port_gone(tmp_path: Path) -> None:
    missing = _probe(tmp_path / "no-such-port")
    with pytest.raises(base.SensorPortError, match=r"cannot open port .* \(option port\)"):
        missing.open()
    assert modbus_driver.open_port_count() == 0
    pty = PtyLink(tmp_path / "bus")
    with pty:
        probe = _probe(pty.port)
        probe.open()
    # the pty pair is closed: like an unplugged USB adapter
    with pytest.raises(base.SensorPortError):
        probe.read()
    probe.close()
    assert modbus_driver.open_port_count() == 0


def test_read_before_open_is_a_port_error(tmp_path: Path) -> None:
    with pytest.raises(base.SensorPortError, match="open"):
        _probe(tmp_path / "x").read()


def test_scan_finds_slave_ids_3_and_7(tmp_path: Path) -> None:
    link = tmp_path / "bus"
    with Simulator(PACKAGE, link, "--address", "3", "--address", "7", "--seed", "2") as sim:
        sim.ready()
        result = run_cli(
            [
                "sensors",
                "scan",
                "--driver",
                "modbus_soil",
                "--port",
                str(link),
                "--option",
                "addresses=1-9",
                "--json",
            ]
        )
        sim.stop()
    assert result.returncode == 0, result.stderr
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["address"] for d in found] == ["3", "7"]
    assert all(d["answer"] == "ok" and "temp_c" in d for d in found)
    assert "slave id 9 (9/9)" in result.stderr
    assert "2 device(s) found" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--driver", "modbus_soil", "--option", "addresses=0-300"], 2, "addresses"),
        (["--driver", "modbus_soil", "--option", "addresses=x"], 2, "addresses"),
        (["--driver", "modbus_soil", "--option", "profile=nope"], 2, "not built in"),
        (["--driver", "modbus_soil", "--option", "address=1"], 2, "not used by a scan"),
        (["--driver", "modbus_soil", "--option", "port=/x"], 2, "--port"),
        (["--driver", "text_line"], 2, "cannot scan"),
        (["--driver", "nope"], 2, "not known"),
        (["--driver", "modbus_soil", "--option", "noequals"], 2, "key=value"),
        (["--driver", "modbus_soil", "-o", "addresses=1-2", "-o", "addresses=3"], 2, "twice"),
        (["--driver", "modbus_soil"], 1, "cannot open port"),
    ],
)
def test_scan_bad_input(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(app, ["sensors", "scan", "--port", str(tmp_path / "none"), *args])
    assert result.exit_code == code, result.output
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fault", "crc"], "KIND:PROBABILITY"),
        (["--fault", "melt:0.1"], "KIND:PROBABILITY"),
        (["--address", "300"], "1-247"),
        (["--profile", "nope"], "invalid choice"),
        (["--profile-file", "/nonexistent.toml"], "--profile-file"),
    ],
)
def test_simulator_bad_arguments(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended:
        simulator.main(["--link", str(tmp_path / "bus"), *args])
    assert ended.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bus").exists()


def test_bus_recovers_when_the_adapter_comes_back(tmp_path: Path) -> None:
    """Two probes on one port; the adapter goes away and comes back at the same path: both
    probes read again without being reopened (the shared port reopens itself)."""
    link = tmp_path / "bus"
    probes = [_probe(link, address=a) for a in (1, 2)]
    bus = simulator.Bus(
        {a: simulator.Probe(a, builtin_profile("soil_7in1"), random.Random(a)) for a in (1, 2)}
    )
    with PtyLink(link) as pty:
        stop = threading.Event()
        server = threading.Thread(target=bus.serve, args=(pty.master_fd, stop), daemon=True)
        server.start()
        for probe in probes:
            probe.open()
        assert all(probe.read() for probe in probes)
        stop.set()
        server.join(10)
    with pytest.raises(base.SensorPortError):
        probes[0].read()
    with pytest.raises(base.SensorPortError, match="cannot open port"):
        probes[1].read()
    with _bus_on_pty(bus) as pty2:
        link.symlink_to(pty2.slave_path)
        try:
            assert all(probe.read() for probe in probes)
        finally:
            for probe in probes:
                probe.close()
    assert modbus_driver.open_port_count() == 0
