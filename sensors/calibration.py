"""Per-sensor calibration: a linear offset/scale or a two-point correction, with a version.

The calibration of a sensor is part of its ``[[sensors]]`` table in the gateway config::

    calibration = { version = "2026-04-01-lab", date = "2026-04-01", by = "J. Wang",
                    values = { moisture_pct = { offset = -1.2, scale = 1.03 },
                               ec_us_cm = { two_point = [[120, 100], [1450, 1413]] } } }

The gateway config is therefore the calibration history: keep the old tables (commented
out, or in version control) when a sensor is recalibrated. The ``version`` string travels
with every reading the calibration produced (``cal`` in the store), so an export shows which
coefficients made a value.

Imports only pydantic: a config is validated without any device library.
"""

import math
from collections.abc import Mapping
from datetime import date as Date
from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator

from contract.settings import Strict
from contract.wire import check_value_name


class ValueCalibration(Strict):
    """How one value is corrected: ``scale * raw + offset``, or a line through two points.

    Give either ``offset``/``scale`` or ``two_point``, not both.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    offset: float = 0.0
    """Added after scaling, in the value's own unit (linear calibration)."""
    scale: float = 1.0
    """Multiplies the raw value (linear calibration); must not be 0."""
    two_point: list[tuple[float, float]] | None = None
    """Two-point calibration: [[raw1, reference1], [raw2, reference2]]: the raw reading seen
    against each of two reference standards; values are mapped on the line through both."""

    @field_validator("offset", "scale")
    @classmethod
    def _finite(cls, number: float) -> float:
        if not math.isfinite(number):
            raise ValueError(f"{number} is not a finite number")
        return number

    @model_validator(mode="after")
    def _check(self) -> "ValueCalibration":
        if self.scale == 0:
            raise ValueError("scale = 0 would turn every reading into the offset; give scale != 0")
        if self.two_point is None:
            return self
        if "offset" in self.model_fields_set or "scale" in self.model_fields_set:
            raise ValueError("give either offset/scale or two_point, not both")
        if len(self.two_point) != 2:
            raise ValueError(
                f"two_point needs exactly two [raw, reference] pairs, got {len(self.two_point)}"
            )
        (raw1, ref1), (raw2, ref2) = self.two_point
        if not all(math.isfinite(x) for x in (raw1, ref1, raw2, ref2)):
            raise ValueError("two_point values must be finite numbers")
        if raw1 == raw2:
            raise ValueError(
                f"two_point raw values are both {raw1}; the two standards must read differently"
            )
        return self

    def coefficients(self) -> tuple[float, float]:
        """``(scale, offset)`` such that calibrated = scale * raw + offset."""
        if self.two_point is None:
            return self.scale, self.offset
        (raw1, ref1), (raw2, ref2) = self.two_point
        scale = (ref2 - ref1) / (raw2 - raw1)
        return scale, ref1 - scale * raw1

    def apply(self, raw: float) -> float:
        scale, offset = self.coefficients()
        return scale * raw + offset


class Calibration(Strict):
    """A versioned calibration of one sensor: who made it, when, and the coefficients."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    version: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[!-~]+$")]
    """Name of this calibration, stored with each reading as ``cal`` (printable ASCII, no
    spaces), e.g. "2026-04-01-lab"."""
    date: Date
    """Day the calibration was made (YYYY-MM-DD)."""
    by: Annotated[str, Field(min_length=1, max_length=128)]
    """Who made it (person or lab)."""
    values: dict[str, ValueCalibration] = Field(min_length=1)
    """Value name -> its correction; values not named pass through unchanged."""

    @field_validator("values")
    @classmethod
    def _names(cls, values: dict[str, ValueCalibration]) -> dict[str, ValueCalibration]:
        for name in values:
            check_value_name(name)
        return values


def apply_calibration(
    values: Mapping[str, float], calibration: Calibration | None
) -> dict[str, float]:
    """The values corrected by ``calibration`` (a new dict; ``None`` copies them unchanged).

    Values the calibration does not name pass through; a named value the sample lacks is
    simply absent. A result that is not finite (only possible with extreme coefficients) is
    kept as is: the plausibility check that follows rejects it.
    """
    if calibration is None:
        return dict(values)
    out = dict(values)
    for name, correction in calibration.values.items():
        if name in out:
            out[name] = correction.apply(out[name])
    return out
