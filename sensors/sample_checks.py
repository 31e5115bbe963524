"""What every sample goes through before it is stored: calibration, then plausibility.

The agent's scheduler calls :func:`check_sample` on every sample of every driver, so no
driver has to know about calibration or ranges. (``farmtel sensors read`` prints the raw
values, as the device sends them.)
"""

from dataclasses import dataclass

from sensors.base import SensorConfig
from sensors.calibration import apply_calibration
from sensors.plausibility import RangeViolation, check_ranges

OUT_OF_RANGE = "out_of_range"
"""Rejection reason of a sample with a value outside its plausible range."""


@dataclass(frozen=True, slots=True)
class CheckedValues:
    """Values ready to store, and the calibration version that produced them (or None)."""

    values: dict[str, float]
    cal: str | None


def check_sample(config: SensorConfig, values: dict[str, float]) -> CheckedValues | RangeViolation:
    """Calibrate ``values`` with ``config.calibration`` and check them against the ranges.

    Returns the calibrated values with the calibration's version, or the first
    :class:`RangeViolation` (then the whole sample must be rejected: count it as
    :data:`OUT_OF_RANGE` and log the violation).
    """
    calibrated = apply_calibration(values, config.calibration)
    violation = check_ranges(calibrated, config.ranges)
    if violation is not None:
        return violation
    cal = config.calibration.version if config.calibration is not None else None
    return CheckedValues(calibrated, cal)
