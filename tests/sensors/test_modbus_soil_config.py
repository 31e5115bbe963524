"""modbus_soil config and profiles: defaults, built-in maps, and every bad input refused."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.settings import ConfigError
from sensors.modbus_soil.config import Config
from sensors.modbus_soil.profiles import BUILTIN_PROFILES, RegisterValue, builtin_profile
from sensors.registry import load_sensor_config

BASE: dict[str, Any] = {"id": "p", "field": "f", "driver": "modbus_soil", "port": "/dev/null"}


def _config(**options: Any) -> Config:
    config = load_sensor_config({**BASE, **options}, "gateway.toml", 0)
    assert isinstance(config, Config)
    return config


def test_defaults_follow_the_profile() -> None:
    assert _config().baudrate == 4800
    assert _config().register_map().count == 7
    assert _config(profile="jxbs_7in1").baudrate == 9600
    assert _config(profile="jxbs_7in1", baudrate=19200).baudrate == 19200
    assert _config(function=4).register_map().function == 4
    custom = {"registers": [{"name": "moisture_pct"}], "baudrate": 2400}
    assert _config(custom_profile=custom).baudrate == 2400


def test_builtin_profiles() -> None:
    counts = {name: builtin_profile(name).count for name in BUILTIN_PROFILES}
    assert counts == {"soil_3in1": 3, "soil_4in1": 4, "soil_7in1": 7, "jxbs_7in1": 27}
    for name in ("soil_7in1", "jxbs_7in1"):
        profile = builtin_profile(name)
        assert profile.estimates == ["n_mg_kg", "p_mg_kg", "k_mg_kg"]
        assert "estimate" in profile.notes
        temp = next(r for r in profile.registers if r.name == "temp_c")
        assert temp.type == "int16"


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"address": 0}, "address", "greater than or equal to 1"),
        ({"address": 248}, "address", "less than or equal to 247"),
        ({"profile": "soil_9in1"}, "sensors[0]", "not built in"),
        (
            {"profile": "soil_7in1", "custom_profile": {"registers": [{"name": "ph"}]}},
            "",
            "not both",
        ),
        ({"function": 6}, "function", "3"),
        ({"parity": "X"}, "parity", "'N'"),
        ({"bytesize": 9}, "bytesize", "7"),
        ({"stopbits": 3}, "stopbits", "1"),
        ({"custom_profile": {"registers": []}}, "custom_profile.registers", "at least 1"),
        ({"custom_profile": {"registers": [{"name": "Bad"}]}}, "name", "value name"),
        ({"custom_profile": {"registers": [{"name": "a_c", "type": "int8"}]}}, "type", "uint16"),
        ({"custom_profile": {"registers": [{"name": "a_c", "scale": 0}]}}, "scale", "scale = 0"),
        (
            {"custom_profile": {"registers": [{"name": "a_c", "word_order": "middle"}]}},
            "word_order",
            "big",
        ),
        (
            {"custom_profile": {"registers": [{"name": "a_c"}, {"name": "a_c"}]}},
            "custom_profile",
            "appears twice",
        ),
        (
            {
                "custom_profile": {
                    "registers": [{"name": "a_c", "address": 5}, {"name": "b_c", "address": 5}]
                }
            },
            "custom_profile",
            "overlaps",
        ),
        (
            {"custom_profile": {"registers": [{"name": "a_c"}, {"name": "b_c", "address": 200}]}},
            "custom_profile",
            "at most 125",
        ),
        (
            {"custom_profile": {"registers": [{"name": "a_c"}], "estimates": ["n_mg_kg"]}},
            "custom_profile",
            "does not read",
        ),
        (
            {"custom_profile": {"registers": [{"name": "a_c"}], "colour": 1}},
            "colour",
            "unknown key",
        ),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _config(**options)
    text = str(raised.value)
    assert key in text and message in text, text


_TYPES = st.sampled_from(["uint16", "int16", "uint32", "int32", "float32"])


@given(
    kind=_TYPES,
    order=st.sampled_from(["big", "little"]),
    raw=st.integers(min_value=-(2**15), max_value=2**15 - 1),
)
def test_encode_then_decode_gives_the_value_back(kind: str, order: str, raw: int) -> None:
    if kind.startswith("uint"):
        raw = abs(raw)
    value = RegisterValue.model_validate(
        {"name": "x_c", "type": kind, "word_order": order, "scale": 0.1}
    )
    number = raw * 0.1
    assert value.decode(value.encode(number)) == pytest.approx(number, abs=1e-4)


def test_word_order() -> None:
    big = RegisterValue(name="x_c", type="float32", word_order="big")
    little = RegisterValue(name="x_c", type="float32", word_order="little")
    high, low = struct.unpack(">HH", struct.pack(">f", -2.75))
    assert big.decode([high, low]) == -2.75
    assert little.decode([low, high]) == -2.75
    assert RegisterValue(name="x_c", type="int16", scale=0.1).decode([0xFF97]) == -10.5
    assert RegisterValue(name="x_c", type="uint32").decode([0x0001, 0x1170]) == 70000
