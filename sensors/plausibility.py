"""Plausibility ranges: which values a quantity can physically take.

A value outside its range is a broken probe, a wiring fault or a decoding error, never a
measurement: the whole sample is rejected (counted as ``out_of_range`` and logged with the
sensor, the value name, the value and the range) and nothing of it is stored.

Defaults come from the value name (exact name first, then its unit suffix, see
:data:`DEFAULT_RANGES` and :data:`SUFFIX_RANGES`); a sensor overrides or adds ranges with
its ``ranges`` key, e.g. ``ranges = { temp_c = [-50, 70] }``. A value whose name matches
no rule and no override is not range-checked (it must still be finite).

The check runs after calibration, on the values that would be stored.
"""

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

Range = tuple[float, float]
"""An inclusive plausible range: (low, high), in the value's own unit."""

DEFAULT_RANGES: Mapping[str, Range] = {
    "moisture_pct": (0.0, 100.0),
    "humidity_pct": (0.0, 100.0),
    "ph": (0.0, 14.0),
    "temp_c": (-40.0, 80.0),  # a soil or probe temperature
    "soil_temp_c": (-40.0, 80.0),
    "air_temp_c": (-60.0, 60.0),
    "dew_point_c": (-80.0, 60.0),
    "water_temp_c": (-5.0, 50.0),
    "ec_us_cm": (0.0, 20_000.0),
    "pressure_hpa": (300.0, 1100.0),
    "pressure_pa": (30_000.0, 110_000.0),
    "wind_ms": (0.0, 75.0),
    "n_mg_kg": (0.0, 2000.0),
    "p_mg_kg": (0.0, 2000.0),
    "k_mg_kg": (0.0, 2000.0),
}
"""Ranges by exact value name."""

SUFFIX_RANGES: tuple[tuple[str, Range], ...] = (
    ("_pct", (0.0, 100.0)),
    ("air_temp_c", (-60.0, 60.0)),
    ("_temp_c", (-40.0, 80.0)),
    ("_us_cm", (0.0, 20_000.0)),
    ("_hpa", (300.0, 1100.0)),
    ("_ms", (0.0, 75.0)),  # speeds in m/s: wind, gusts
    ("_mg_kg", (0.0, 2000.0)),
    ("_deg", (0.0, 360.0)),
)
"""Ranges by the end of the value name, first match wins (``wind_gust_ms`` -> 0..75)."""


@dataclass(frozen=True, slots=True)
class RangeViolation:
    """Why a sample is implausible: ``name`` had ``value``, outside ``low``..``high``."""

    name: str
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.name}={self.value!r} outside [{self.low}, {self.high}]"


@functools.lru_cache(maxsize=1024)
def default_range(name: str) -> Range | None:
    """The built-in range of value ``name``, or None when no rule names it.

    Cached: it runs for every value of every sample, and a gateway has a few names only.
    """
    if name in DEFAULT_RANGES:
        return DEFAULT_RANGES[name]
    for suffix, found in SUFFIX_RANGES:
        if name.endswith(suffix):
            return found
    return None


def range_of(name: str, overrides: Mapping[str, Range]) -> Range | None:
    """The range that applies to ``name``: the sensor's own ``ranges`` entry, else the default."""
    return overrides.get(name) or default_range(name)


def check_ranges(
    values: Mapping[str, float], overrides: Mapping[str, Range]
) -> RangeViolation | None:
    """The first value outside its range (or not finite), or None when all are plausible."""
    for name, value in values.items():
        if not math.isfinite(value):
            return RangeViolation(name, value, -math.inf, math.inf)
        limits = range_of(name, overrides)
        if limits is not None and not limits[0] <= value <= limits[1]:
            return RangeViolation(name, value, limits[0], limits[1])
    return None


def check_range_table(ranges: Mapping[str, Range]) -> None:
    """Raise ValueError unless every entry is ``[low, high]`` of finite numbers, low <= high."""
    for name, (low, high) in ranges.items():
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(
                f"ranges for {name!r} is [{low}, {high}]; give [low, high] as finite numbers "
                "with low <= high"
            )
