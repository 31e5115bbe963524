"""SDI-12 pieces without a port: frames, CRC, config errors, simulator arguments."""

from __future__ import annotations

import pytest

from contract.settings import ConfigError
from sensors.base import SensorPortError
from sensors.registry import load_sensor_config, make_driver
from sensors.sdi12 import simulator
from sensors.sdi12.config import Config
from sensors.sdi12.frames import (
    FrameError,
    crc16,
    encode_crc,
    format_value,
    parse_data,
    parse_identity,
    parse_measure,
    parse_values,
    with_crc,
)
from sensors.sdi12.profiles import PROFILES


def test_crc_matches_the_spec_example() -> None:
    # SDI-12 1.4, 4.4.12: "0+3.14" is sent as "0+3.14OqZ".
    assert with_crc(b"0+3.14") == b"0+3.14OqZ"
    assert encode_crc(crc16(b"")) == b"@@@"


def test_values_with_signs_and_points() -> None:
    assert parse_values(b"+1.5-2+30.+.5-0.25") == [1.5, -2.0, 30.0, 0.5, -0.25]
    assert parse_values(b"") == []


@pytest.mark.parametrize("body", [b"1.5", b"+1.5x", b"+", b"+12345678", b"++1", b" +1"])
def test_malformed_values_are_refused(body: bytes) -> None:
    with pytest.raises(FrameError) as err:
        parse_values(body)
    assert err.value.reason == "bad_format"


def test_measure_answers() -> None:
    assert parse_measure(b"00013", "0").seconds == 1
    assert parse_measure(b"00013", "0").count == 3
    assert parse_measure(b"a12012", "a", concurrent=True).count == 12
    with pytest.raises(FrameError, match="3 digits"):
        parse_measure(b"0013", "0")
    with pytest.raises(FrameError) as err:
        parse_measure(b"10013", "0")
    assert err.value.reason == "wrong_address"


def test_data_crc_checked() -> None:
    assert parse_data(with_crc(b"0+1-2"), "0", crc=True) == [1.0, -2.0]
    with pytest.raises(FrameError) as err:
        parse_data(b"0+1-2ABC", "0", crc=True)
    assert err.value.reason == "bad_crc"
    with pytest.raises(FrameError) as err:
        parse_data(b"0+", "0", crc=True)
    assert err.value.reason == "bad_crc"


def test_identity() -> None:
    found = parse_identity(b"013METER   TER12 112631800001", "0")
    assert (found.sdi_version, found.vendor, found.model, found.version) == (
        "1.3",
        "METER",
        "TER12",
        "112",
    )
    assert found.serial == "631800001"
    with pytest.raises(FrameError):
        parse_identity(b"013METER", "0")


def test_format_value_never_sends_minus_zero() -> None:
    assert format_value(-0.001, 2) == b"+0.00"
    assert format_value(-5.25, 1) in (b"-5.2", b"-5.3")


def test_teros12_equation() -> None:
    # METER: VWC = 3.879e-4 * RAW - 0.6956 m3/m3, as %.
    out = PROFILES["teros12"].convert([2591.43, -5.3, 126.0])
    assert out == {"moisture_pct": 30.96, "temp_c": -5.3, "ec_us_cm": 126.0}


def _load(**keys: object) -> Config:
    raw = {"id": "s", "field": "f", "driver": "sdi12", "port": "/dev/null", **keys}
    config = load_sensor_config(raw, "gateway.toml", 0)
    assert isinstance(config, Config)
    return config


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"address": "10"}, "must be one character"),
        ({"address": "#"}, "must be one character"),
        ({"profile": "teros99"}, "is not known"),
        ({"profile": "generic"}, "needs the value names"),
        ({"values": ["temp_c"]}, "apply to profile"),
        ({"profile": "generic", "values": ["Temp"]}, "must match"),
        ({"profile": "generic", "values": ["temp_c", "temp_c"]}, "more than once"),
        ({"response_timeout": 0}, "response_timeout"),
        ({"retries": 0}, "retries"),
        ({"crc": True}, "crc"),
    ],
)
def test_bad_config_is_refused(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(**keys)
    assert message in str(err.value)


def test_generic_profile_names_values() -> None:
    config = _load(profile="generic", values=["moisture_pct", "temp_c"])
    assert [o.name for o in config.profile_spec().outputs] == ["moisture_pct", "temp_c"]
    assert config.baudrate == 1200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "!"], "--address"),
        (["--address", "0", "--address", "0"], "twice"),
        (["--profile", "generic"], "--values"),
        (["--values", "temp_c"], "generic only"),
        (["--ttt", "1000"], "--ttt"),
        (["--ttt", "1", "--ready-after", "2"], "--ready-after"),
        (["--fault-rate", "2"], "--fault-rate"),
    ],
)
def test_simulator_refuses_bad_arguments(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        simulator._parse_args(["--link", "/tmp/unused", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_port_is_a_port_error(tmp_path: object) -> None:
    driver = make_driver(_load(port=f"{tmp_path}/no-such-adapter"))
    with pytest.raises(SensorPortError, match=r"cannot open SDI-12 port .*option port"):
        driver.open()
    with pytest.raises(SensorPortError, match="before open"):
        driver.read()
    driver.close()
