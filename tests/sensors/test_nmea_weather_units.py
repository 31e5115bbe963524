"""NMEA weather pieces without a port: sentence parsing, config errors, simulator args."""

from __future__ import annotations

import pytest

from contract.settings import ConfigError
from sensors.base import SensorPortError
from sensors.line_reader import LineReader
from sensors.nmea_weather import simulator
from sensors.nmea_weather.config import Config
from sensors.nmea_weather.sentences import parse, split_sentence, with_checksum, xdr_name
from sensors.registry import load_sensor_config, make_driver


def test_checksum_of_the_protocols_example() -> None:
    line = b"$WIMDA,30.2269,I,1.0236,B,17.7,C,,,43.3,,5.0,C,131.5,T,128.6,M,0.8,N,0.4,M*54"
    split = split_sentence(line, require_checksum=True)
    assert not isinstance(split, str) and split[0] == "MDA"
    assert with_checksum(line[1:-3].decode()) == line + b"\r\n"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"$WIMWV,1,T,1,M,A*00", "bad_checksum"),
        (b"$WIMWV,1,T,1,M,A", "bad_checksum"),
        (b"$WIMWV,1,T,1,M,A*4", "bad_checksum"),
        (b"WIMWV,1,T,1,M,A", "bad_format"),
        (b"$WI,1*" + b"%02X" % (ord("W") ^ ord("I") ^ ord(",") ^ ord("1")), "bad_format"),
        (b"$WIMWV,\x01", "not_ascii"),
    ],
)
def test_split_rejections(line: bytes, reason: str) -> None:
    assert split_sentence(line, require_checksum=True) == reason


def test_missing_checksum_allowed_when_not_required() -> None:
    assert split_sentence(b"$WIMWV,1,T,1,M,A", require_checksum=False) == (
        "MWV",
        ["1", "T", "1", "M", "A"],
    )


def test_empty_is_never_zero() -> None:
    values, _ = parse("MWV", ["", "T", "", "M", "A"], {})
    assert values == "not_measured"
    values, _ = parse("MWV", ["270", "T", "", "M", "A"], {})
    assert values == {"wind_dir_deg": 270.0}


def test_xdr_names() -> None:
    assert xdr_name("C", "C", "TempAir", {}) == "air_temp_c"
    assert xdr_name("C", "C", "Temp Soil-2", {}) == "temp_soil_2_c"
    assert xdr_name("C", "C", "", {}) == "temp_c"
    assert xdr_name("C", "C", "2nd", {}) == "temp_2nd_c"
    assert xdr_name("C", "C", "TempAir", {"TempAir": "shade_temp_c"}) == "shade_temp_c"
    assert xdr_name("Z", "Q", "Odd", {}) is None
    # A built-in name is used only when its unit fits the quadruple's.
    assert xdr_name("P", "B", "TempAir", {}) == "tempair_hpa"


def test_xdr_name_that_is_not_a_value_name_rejects() -> None:
    assert parse("XDR", ["C", "1.0", "C", "x" * 70], {}) == ("bad_format", 0)


def test_line_reader_caps_and_resynchronises() -> None:
    rejected: list[str] = []
    reader = LineReader(16, lambda reason, _: rejected.append(reason))
    assert reader.feed(b"tail\nfirst\n") == [b"first"]
    assert reader.feed(b"x" * 40) == []
    assert reader.feed(b"yy\nok\r\n") == [b"ok\r"]
    assert rejected == ["partial_line", "too_long"]


def _load(**keys: object) -> Config:
    raw = {"id": "w", "field": "f", "driver": "nmea_weather", "port": "/dev/null", **keys}
    config = load_sensor_config(raw, "gateway.toml", 0)
    assert isinstance(config, Config)
    return config


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"sentences": []}, "at least one"),
        ({"sentences": ["GGA"]}, "sentences"),
        ({"sentences": ["MWV", "MWV"]}, "twice"),
        ({"xdr_names": {"TempAir": "Air Temp"}}, "must match"),
        ({"xdr_names": {"a,b": "air_temp_c"}}, "transducer id"),
        ({"max_line_bytes": 10}, "max_line_bytes"),
        ({"checksum": "none"}, "checksum"),
    ],
)
def test_bad_config_is_refused(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(**keys)
    assert message in str(err.value)


def test_defaults() -> None:
    config = _load()
    assert config.baudrate == 4800 and config.sentences == ["MDA", "MWV", "XDR"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sentences", "GGA"], "--sentences"),
        (["--rate", "-1"], "--rate"),
        (["--noise", "1.5"], "--noise"),
        (["--count", "-2"], "--count"),
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
    with pytest.raises(SensorPortError, match=r"cannot open port .*option port"):
        driver.open()
    with pytest.raises(SensorPortError, match="before open"):
        driver.read()
    driver.close()
