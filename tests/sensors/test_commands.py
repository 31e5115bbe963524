"""The functions behind ``farmtel sensors drivers`` and ``farmtel sensors read``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contract.settings import ConfigError
from sensors.base import SensorPortError, SensorTimeoutError
from sensors.commands import build_config, list_drivers, parse_option, read_device
from sensors.pty_link import PtyLink
from sensors.text_line.config import Config
from tests.sensors.wire_runner import Simulator


def test_list_drivers() -> None:
    drivers = {name: (summary, sample) for name, summary, sample in list_drivers()}
    summary, sample = drivers["text_line"]
    assert "microcontroller" in summary
    assert "[[sensors]]" in sample and 'driver = "text_line"' in sample


@pytest.mark.parametrize(
    ("text", "annotation", "value"),
    [
        ("a_c,b_pct", list[str], ["a_c", "b_pct"]),
        ('["a_c", "b_pct"]', list[str], ["a_c", "b_pct"]),
        ("a_c", list[str], ["a_c"]),
        ("19200", int, 19200),
        ("0.5", float, 0.5),
        ("7", str, "7"),
        (",", str, ","),
        (";", str, ";"),
        ('" "', str, " "),
        ("kv", str, "kv"),
        ("t:temp_c,h=hum_pct", dict[str, str], {"t": "temp_c", "h": "hum_pct"}),
        ('{ t = "temp_c" }', dict[str, str], {"t": "temp_c"}),
        ("{ t_c = [-40, 85] }", dict[str, tuple[float, float]], {"t_c": [-40, 85]}),
        ("none", float | None, "none"),
    ],
)
def test_parse_option(text: str, annotation: Any, value: Any) -> None:
    assert parse_option(text, annotation) == value


def test_build_config_from_options() -> None:
    config = build_config(
        "text_line",
        "/dev/ttyUSB0",
        {"columns": "_,moisture_pct,temp_c", "separator": ";", "baudrate": "115200", "id": "7"},
    )
    assert isinstance(config, Config)
    assert (config.id, config.field, config.port) == ("7", "bench", "/dev/ttyUSB0")
    assert config.columns == ["_", "moisture_pct", "temp_c"]
    assert (config.separator, config.baudrate, config.interval) == (";", 115200, 1.0)


@pytest.mark.parametrize(
    ("driver", "options", "key", "words"),
    [
        ("txt_line", {}, "driver", "text_line"),
        ("text_line", {"columns": "a", "colour": "red"}, "colour", "unknown key"),
        ("text_line", {"columns": "a", "port": "/dev/x"}, "port", "--port"),
        ("text_line", {"columns": "Temp"}, "columns", "'Temp'"),
        ("text_line", {}, "columns", "csv"),
        ("text_line", {"columns": "a", "limits": "x"}, "limits", "--option 'limits={ temp_c"),
    ],
)
def test_build_config_errors(driver: str, options: dict[str, str], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(driver, "/dev/ttyUSB0", options)
    problems = dict(info.value.problems)
    assert key in problems and words in problems[key], problems
    assert info.value.source == "command line options"


def test_read_device_from_the_simulator(tmp_path: Path) -> None:
    link = tmp_path / "mcu"
    with Simulator("sensors.text_line", link, "--rate", "100") as sim:
        sim.ready()
        options = {"columns": "counter,moisture_pct,temp_c,ec_us_cm", "timeout": "0.5"}
        samples = list(read_device("text_line", str(link), options, count=5, timeout=20))
        code, _, err = sim.stop()
    assert len(samples) == 5
    counters = [s.values["counter"] for s in samples]
    assert counters == list(range(int(counters[0]), int(counters[0]) + 5))
    assert code == 0, err


def test_read_device_times_out_and_says_what_it_rejected(tmp_path: Path) -> None:
    link = tmp_path / "mcu"
    # The board prints 4 columns; the options name 2: every line is rejected.
    with Simulator("sensors.text_line", link, "--rate", "100") as sim:
        sim.ready()
        with pytest.raises(SensorTimeoutError) as info:
            list(
                read_device(
                    "text_line",
                    str(link),
                    {"columns": "a_c,b_c", "timeout": "0.2"},
                    count=1,
                    timeout=1.0,
                )
            )
        sim.stop()
    message = str(info.value)
    assert str(link) in message and "bad_format: " in message and "baudrate" in message


def test_read_device_times_out_on_silence() -> None:
    with PtyLink() as pty:
        port = pty.slave_path
        with pytest.raises(SensorTimeoutError) as info:
            list(
                read_device(
                    "text_line", port, {"columns": "a_c", "timeout": "0.2"}, count=1, timeout=0.5
                )
            )
    assert port in str(info.value) and "rejected lines: none" in str(info.value)


def test_read_device_missing_port(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyUSB0")
    with pytest.raises(SensorPortError, match=port):
        next(read_device("text_line", port, {"columns": "a_c"}, count=1, timeout=1))


def test_read_device_bad_option_before_touching_the_port() -> None:
    with pytest.raises(ConfigError):
        next(read_device("text_line", "/dev/does-not-exist", {"columns": "A"}, count=1, timeout=1))


def test_a_malformed_limits_table_is_one_problem() -> None:
    """limits also feed ranges; a malformed one was reported under both keys."""
    with pytest.raises(ConfigError) as info:
        build_config("text_line", "/dev/ttyUSB0", {"columns": "temp_c", "limits": "temp_c:5"})
    assert [key for key, _ in info.value.problems] == ["limits.temp_c"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-o", "columns=a_c", "-o", "columns=b_pct"], "'columns' is given twice"),
        (["-o", "=a_c"], "must look like key=value"),
        (["-o", "columns"], "must look like key=value"),
    ],
)
def test_read_refuses_a_malformed_or_repeated_option(
    tmp_path: Path, options: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from cli import app

    port = str(tmp_path / "ttyUSB0")
    result = CliRunner().invoke(
        app, ["sensors", "read", "--driver", "text_line", "--port", port, *options]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
