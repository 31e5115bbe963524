"""The CSV parser's shortcut for plain ASCII lines decides exactly as the field-by-field
rules do: same values, or the same reason (bad_format, not_finite, out_of_range)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.registry import config_class, make_driver
from sensors.text_line.driver import Driver

COLUMNS = ["moisture_pct", "_", "temp_c"]
LIMITS = {"temp_c": [-10.0, 40.0]}
TOKENS = ["12.5", "-3", "1e3", "45", "nan", "inf", "-inf", "NaN", "1_0", "x", "", " 7 ", "٣", "0x1"]


def _driver() -> Driver:
    config = config_class("text_line").model_validate(
        {
            "id": "s-1",
            "field": "f",
            "driver": "text_line",
            "port": "/dev/null",
            "columns": COLUMNS,
            "limits": LIMITS,
        }
    )
    driver = make_driver(config)
    assert isinstance(driver, Driver)
    return driver


def _reference(body: str) -> dict[str, float] | str:
    """The rules as the module docstring states them, field by field."""
    fields = body.split(",")
    if len(fields) != len(COLUMNS):
        return "bad_format"
    values: dict[str, float] = {}
    for name, text in zip(COLUMNS, fields, strict=True):
        if name == "_":
            continue
        try:
            value = float(text)
        except ValueError:
            return "bad_format"
        if "_" in text or not text.isascii():
            return "bad_format"
        values[name] = value
    for name, value in values.items():
        if not math.isfinite(value):
            return "not_finite"
        low, high = LIMITS.get(name, [-math.inf, math.inf])
        if not low <= value <= high:
            return "out_of_range"
    return values


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=2, max_size=4))
def test_shortcut_and_rules_agree(tokens: list[str]) -> None:
    body = ",".join(tokens)
    assert _driver()._parse_csv(body.encode()) == _reference(body)
