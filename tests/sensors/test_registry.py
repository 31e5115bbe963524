"""The driver registry: lookup by name, entry points, config loading with key paths."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contract.settings import ConfigError
from sensors import registry
from sensors.base import SensorConfig
from sensors.text_line.config import Config as TextLineConfig
from sensors.text_line.driver import Driver as TextLineDriver


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, str]]]:
    """Entry points the registry sees, instead of the installed ones."""
    found: list[tuple[str, str, str]] = []
    monkeypatch.setattr(registry, "_entry_points", lambda: list(found))
    registry._table.cache_clear()
    yield found
    registry._table.cache_clear()


def _raw(**changes: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "id": "mcu-1",
        "field": "north",
        "driver": "text_line",
        "port": "/dev/ttyUSB0",
        "columns": ["moisture_pct", "temp_c"],
    }
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


def test_names_and_classes() -> None:
    assert "text_line" in registry.names()
    assert registry.names() == sorted(registry.names())
    assert registry.config_class("text_line") is TextLineConfig
    assert registry.driver_class("text_line") is TextLineDriver
    assert registry.package_of("text_line") == "sensors.text_line"
    assert registry.info("text_line").summary == registry.summary("text_line")
    assert "[[sensors]]" in registry.sample_config("text_line")


def test_unknown_driver_lists_the_known_ones() -> None:
    with pytest.raises(registry.UnknownDriver) as info:
        registry.config_class("txt_line")
    assert isinstance(info.value, ValueError)
    assert "'txt_line'" in str(info.value) and "text_line" in str(info.value)
    with pytest.raises(registry.UnknownDriver):
        registry.driver_class("nope")


def test_third_party_entry_point_is_listed(entry_points: list[tuple[str, str, str]]) -> None:
    entry_points.append(("acme_probe", "acme_farm.probe", "acme-farm"))
    assert registry.names() == sorted([*registry.BUILTIN_DRIVERS, "acme_probe"])
    with pytest.raises(registry.DriverLoadError, match=r"acme_farm\.probe\.config"):
        registry.config_class("acme_probe")


def test_duplicate_name_is_an_error(entry_points: list[tuple[str, str, str]]) -> None:
    entry_points.append(("text_line", "other.text_line", "other-dist"))
    with pytest.raises(registry.DriverRegistryError) as info:
        registry.names()
    assert "claimed twice" in str(info.value) and "other-dist" in str(info.value)


def test_two_third_parties_with_one_name(entry_points: list[tuple[str, str, str]]) -> None:
    entry_points += [("probe", "a.probe", "dist-a"), ("probe", "b.probe", "dist-b")]
    with pytest.raises(registry.DriverRegistryError, match=r"dist-a.*dist-b"):
        registry.names()


@pytest.mark.parametrize(("name", "value"), [("Bad-Name", "pkg.mod"), ("ok_name", "pkg.mod:Class")])
def test_malformed_entry_point(
    entry_points: list[tuple[str, str, str]], name: str, value: str
) -> None:
    entry_points.append((name, value, "bad-dist"))
    with pytest.raises(registry.DriverRegistryError, match="bad-dist"):
        registry.names()


def test_package_that_breaks_the_layout(entry_points: list[tuple[str, str, str]]) -> None:
    # The text_line package under another name: its Config says driver = "text_line".
    entry_points.append(("copied_line", "sensors.text_line", "copy-dist"))
    with pytest.raises(registry.DriverLoadError, match='Literal\\["copied_line"\\]'):
        registry.config_class("copied_line")
    with pytest.raises(registry.DriverLoadError, match=r"Driver\.name"):
        registry.driver_class("copied_line")


def test_load_sensor_config() -> None:
    config = registry.load_sensor_config(_raw(), "gateway.toml", 0)
    assert isinstance(config, TextLineConfig)
    assert config.columns == ["moisture_pct", "temp_c"]


def test_load_sensor_config_prefixes_keys() -> None:
    with pytest.raises(ConfigError) as info:
        registry.load_sensor_config(_raw(colums=["a"], baudrate=0), "gateway.toml", 3)
    keys = dict(info.value.problems)
    assert set(keys) == {"sensors[3].colums", "sensors[3].baudrate"}
    assert (
        "allowed keys here" in keys["sensors[3].colums"] and "columns" in keys["sensors[3].colums"]
    )
    assert info.value.source == "gateway.toml"


def test_load_sensor_config_unknown_or_missing_driver() -> None:
    with pytest.raises(ConfigError) as info:
        registry.load_sensor_config(_raw(driver="txt_line"), "gw.toml", 1)
    [(key, message)] = info.value.problems
    assert key == "sensors[1].driver" and "text_line" in message and "txt_line" in message
    with pytest.raises(ConfigError) as info:
        registry.load_sensor_config(_raw(driver=None), "gw.toml", 2)
    [(key, message)] = info.value.problems
    assert key == "sensors[2].driver" and "missing" in message and "text_line" in message
    with pytest.raises(ConfigError) as info:
        registry.load_sensor_config(_raw(driver=5), "gw.toml", 0)
    assert info.value.problems[0][0] == "sensors[0].driver"


def test_make_driver_from_a_bare_sensor_config() -> None:
    bare = SensorConfig(id="mcu-1", field="north", driver="text_line", port="/dev/ttyUSB0")
    with pytest.raises(ConfigError, match="columns"):
        registry.make_driver(bare)  # a csv text_line needs columns
    config = registry.load_sensor_config(_raw(), "gateway.toml", 0)
    driver = registry.make_driver(config)
    assert isinstance(driver, TextLineDriver) and driver.config is config
