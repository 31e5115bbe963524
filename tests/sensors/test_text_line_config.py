"""Config validation of the text_line driver: every mistake named with its key."""

from __future__ import annotations

import pytest

from contract.settings import ConfigError
from sensors.registry import load_sensor_config
from sensors.text_line.config import Config


def _load(**keys: object) -> Config:
    raw = {"id": "mcu-1", "field": "north", "driver": "text_line", "port": "/dev/ttyUSB0", **keys}
    config = load_sensor_config(raw, "gateway.toml", 0)
    assert isinstance(config, Config)
    return config


def _problems(**keys: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        _load(**keys)
    return dict(info.value.problems)


def test_defaults() -> None:
    config = _load(columns=["moisture_pct", "_", "temp_c"])
    assert config.format == "csv" and config.separator == "," and config.checksum == "none"
    assert config.max_line_bytes == 1024 and config.encoding == "ascii"
    assert config.baudrate == 9600
    assert config.value_names() == ["moisture_pct", "temp_c"]
    assert _load(format="json").value_names() is None
    assert _load(format="kv", mapping={"t": "temp_c"}).value_names() == ["temp_c"]


@pytest.mark.parametrize(
    ("keys", "where", "words"),
    [
        ({}, "sensors[0].columns", "needs the value names"),
        ({"columns": ["_"]}, "sensors[0].columns", "needs the value names"),
        ({"columns": ["Temp"]}, "sensors[0].columns", "'Temp'"),
        ({"columns": ["seq"]}, "sensors[0].columns", "reserved"),
        ({"columns": ["temp_c", "temp_c"]}, "sensors[0].columns", "more than once"),
        ({"columns": [f"v{i}" for i in range(65)]}, "sensors[0].columns", "at most 64"),
        ({"columns": ["a"], "separator": "."}, "sensors[0].separator", "'.'"),
        ({"columns": ["a"], "separator": ""}, "sensors[0].separator", "1 to 8"),
        ({"columns": ["a"], "separator": "\n"}, "sensors[0].separator", "line end"),
        ({"columns": ["a"], "mapping": {"t": "a"}}, "sensors[0].mapping", "kv"),
        ({"format": "kv", "columns": ["a"]}, "sensors[0].columns", 'csv" only'),
        ({"format": "json", "separator": ";"}, "sensors[0].separator", "json"),
        ({"format": "kv", "mapping": {"t": "Temp"}}, "sensors[0].mapping", "'Temp'"),
        ({"format": "kv", "mapping": {"t": "a", "u": "a"}}, "sensors[0].mapping", "more than one"),
        ({"format": "kv", "mapping": {"a=b": "a"}}, "sensors[0].mapping", "'a=b'"),
        ({"format": "xml"}, "sensors[0].format", "'csv'"),
        ({"columns": ["a"], "checksum": "crc32"}, "sensors[0].checksum", "nmea_xor"),
        ({"columns": ["a"], "max_line_bytes": 8}, "sensors[0].max_line_bytes", "16"),
        ({"columns": ["a"], "encoding": "latin-1"}, "sensors[0].encoding", "ascii"),
        ({"columns": ["a"], "limits": {"a": [5, 1]}}, "sensors[0].limits", "low <= high"),
        ({"columns": ["a"], "limits": {"b": [0, 1]}}, "sensors[0].limits", "not among"),
        ({"columns": ["a"], "colums": ["a"]}, "sensors[0].colums", "unknown key"),
    ],
)
def test_mistakes_are_named(keys: dict[str, object], where: str, words: str) -> None:
    problems = _problems(**keys)
    assert where in problems, problems
    assert words in problems[where], problems[where]


def test_every_problem_reported_at_once() -> None:
    problems = _problems(columns=["Bad"], baudrate=3, checksum="md5")
    assert set(problems) == {
        "sensors[0].columns",
        "sensors[0].baudrate",
        "sensors[0].checksum",
    }
