"""The line assembler, fed directly (no port): chunking, resynchronisation, timestamps."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.registry import config_class, make_driver
from sensors.text_line.driver import Driver

T0 = 1_764_400_000_000_000_000


def _driver(**keys: object) -> Driver:
    config = config_class("text_line").model_validate(
        {
            "id": "mcu-1",
            "field": "north",
            "driver": "text_line",
            "port": "unused",
            "columns": ["a_c", "b_pct"],
            **keys,
        }
    )
    driver = make_driver(config)
    assert isinstance(driver, Driver)
    return driver


def _feed_all(driver: Driver, chunks: list[bytes]) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    for i, chunk in enumerate(chunks):
        out += [s.values for s in driver.feed(chunk, T0 + i)]
    return out


FRAGMENTS = [
    b"1.5",
    b"-2",
    b",",
    b"\n",
    b"\r",
    b"\r\n",
    b"x",
    b"nan",
    b" ",
    b"\xff",
    b"7,8\n",
    b"31.25,20.5\r\n",
    b"9" * 20,
    b"_",
    b"=",
]


@settings(max_examples=300, deadline=None)
@given(
    wire=st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_chunking_does_not_change_the_outcome(wire: bytes, cuts: list[int]) -> None:
    whole = _driver(max_line_bytes=16)
    expected = _feed_all(whole, [wire])
    points = sorted({min(c, len(wire)) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    pieces = _driver(max_line_bytes=16)
    assert _feed_all(pieces, chunks) == expected
    assert pieces.rejected == whole.rejected
    assert len(pieces._pending) <= 16 + 1, "the buffer is capped"


def test_byte_by_byte() -> None:
    driver = _driver()
    wire = b"junk\r\n1.5,2.5\r\n" + b"9" * 5000 + b"\r\n3.5,4.5\r\n"
    got = _feed_all(driver, [wire[i : i + 1] for i in range(len(wire))])
    assert got == [{"a_c": 1.5, "b_pct": 2.5}, {"a_c": 3.5, "b_pct": 4.5}]
    assert driver.rejected == {"partial_line": 1, "too_long": 1}


def test_long_first_fragment_counts_as_partial() -> None:
    driver = _driver(max_line_bytes=16)
    assert _feed_all(driver, [b"x" * 40, b"y" * 40, b"\n1,2\n"]) == [{"a_c": 1.0, "b_pct": 2.0}]
    assert driver.rejected == {"partial_line": 1}


def test_lines_arriving_together_get_distinct_timestamps() -> None:
    driver = _driver()
    driver.feed(b"\n", T0)
    first = driver.feed(b"1,2\n3,4\n5,6\n", T0)
    assert [s.ts for s in first] == [T0, T0 + 1, T0 + 2]
    # The clock did not move (coarse clock): still after the last one.
    assert [s.ts for s in driver.feed(b"7,8\n", T0)] == [T0 + 3]
    # The clock moved on: its own time.
    assert [s.ts for s in driver.feed(b"7,8\n", T0 + 10**6)] == [T0 + 10**6]
    # The clock was stepped back by an hour: the real (earlier) time, not an invented one.
    back = T0 - 3600 * 10**9
    assert [s.ts for s in driver.feed(b"7,8\n", back)] == [back]


def test_rejections_are_logged_sparingly(caplog: pytest.LogCaptureFixture) -> None:
    driver = _driver()
    caplog.set_level(logging.WARNING, logger="sensors.text_line.driver")
    driver.feed(b"\n" + b"bad\n" * 500, T0)
    assert driver.rejected["bad_format"] == 500
    logged = [r for r in caplog.records if "reason=bad_format" in r.getMessage()]
    assert len(logged) == 1
    assert "sensor=mcu-1" in logged[0].getMessage()


def test_kv_without_mapping_takes_valid_keys() -> None:
    config = config_class("text_line").model_validate(
        {"id": "m", "field": "f", "driver": "text_line", "port": "x", "format": "kv"}
    )
    driver = make_driver(config)
    assert isinstance(driver, Driver)
    got = _feed_all(driver, [b"\nt_c=1\nt_c=2,Bad=3\nt_c=4\n"])
    assert got == [{"t_c": 1.0}, {"t_c": 4.0}]
    assert driver.rejected == {"bad_format": 1}
