"""Sensor profiles: what the values of an SDI-12 sensor's ``aM!`` are and how they convert.

Profiles are data: a :class:`Profile` lists the values in the order the sensor sends them
(with a plausible range and the decimals the simulator uses), and the outputs computed from
them: a polynomial in one raw value, coefficients lowest power first. Check a profile
against your sensor's manual before you rely on it; add your own with ``profile =
"generic"`` and ``values = [...]`` in the config.

No device library is imported here (the config validates profile names with it).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class RawValue:
    """One value as the sensor sends it."""

    name: str
    """What it is (documentation and simulator only)."""
    low: float
    high: float
    """Plausible range; the simulator draws values inside it."""
    decimals: int
    """Digits after the point the sensor prints."""


@dataclass(frozen=True)
class Output:
    """One value the driver reports: ``sum(c[i] * raw[source] ** i)``, rounded."""

    name: str
    """Value name with its unit (contract.wire.check_value_name)."""
    source: int
    """Index of the raw value it is computed from."""
    coefficients: tuple[float, ...] = (0.0, 1.0)
    """Polynomial coefficients, lowest power first; (0, 1) copies the raw value."""
    decimals: int = 3
    """Rounding of the result (float noise like 30.100000000000001 helps nobody)."""

    def convert(self, raw: list[float]) -> float:
        x = raw[self.source]
        result = 0.0
        for power, coefficient in enumerate(self.coefficients):
            result += coefficient * x**power
        return round(result, self.decimals)


@dataclass(frozen=True)
class Profile:
    """The values of one sensor model's ``aM!`` answer and the outputs made from them."""

    summary: str
    raw: tuple[RawValue, ...]
    outputs: tuple[Output, ...]

    def convert(self, raw: list[float]) -> dict[str, float]:
        """The outputs for one measurement; ``raw`` must have ``len(self.raw)`` values."""
        return {output.name: output.convert(raw) for output in self.outputs}


GENERIC = "generic"
"""The profile whose value names come from the config's ``values`` list, unconverted."""

PROFILES: dict[str, Profile] = {
    "teros12": Profile(
        summary="METER TEROS 12: raw VWC counts, temperature C, bulk EC uS/cm. Moisture from "
        "METER's mineral-soil equation VWC = 3.879e-4 * RAW - 0.6956 (m3/m3), x100 for %.",
        raw=(
            RawValue("vwc_raw", 1900.0, 2900.0, 2),
            RawValue("temp_c", -10.0, 35.0, 1),
            RawValue("ec_us_cm", 0.0, 1500.0, 0),
        ),
        outputs=(
            Output("moisture_pct", 0, (-69.56, 0.03879), 2),
            Output("temp_c", 1, decimals=1),
            Output("ec_us_cm", 2, decimals=0),
        ),
    ),
    "gs3": Profile(
        summary="METER GS3: dielectric permittivity, temperature C, bulk EC uS/cm. Moisture "
        "from the GS3 manual's mineral-soil equation 5.89e-6 e^3 - 7.62e-4 e^2 + 3.67e-2 e "
        "- 7.53e-2 (m3/m3), x100 for %.",
        raw=(
            RawValue("permittivity", 5.0, 40.0, 2),
            RawValue("temp_c", -10.0, 35.0, 1),
            RawValue("ec_us_cm", 0.0, 1500.0, 0),
        ),
        outputs=(
            Output("moisture_pct", 0, (-7.53, 3.67, -0.0762, 0.000589), 2),
            Output("permittivity", 0, decimals=2),
            Output("temp_c", 1, decimals=1),
            Output("ec_us_cm", 2, decimals=0),
        ),
    ),
    "cs655": Profile(
        summary="Campbell CS655 aM!: VWC m3/m3, EC dS/m, temperature C, permittivity, "
        "period average us, voltage ratio. VWC x100 for %, EC x1000 for uS/cm.",
        raw=(
            RawValue("vwc_m3_m3", 0.05, 0.45, 3),
            RawValue("ec_ds_m", 0.0, 1.5, 3),
            RawValue("temp_c", -10.0, 35.0, 1),
            RawValue("permittivity", 5.0, 40.0, 2),
            RawValue("period_us", 1.0, 3.0, 3),
            RawValue("voltage_ratio", 0.5, 1.0, 3),
        ),
        outputs=(
            Output("moisture_pct", 0, (0.0, 100.0), 1),
            Output("ec_us_cm", 1, (0.0, 1000.0), 0),
            Output("temp_c", 2, decimals=1),
            Output("permittivity", 3, decimals=2),
            Output("period_us", 4, decimals=3),
            Output("voltage_ratio", 5, decimals=3),
        ),
    ),
}
"""Built-in profiles by name."""


def generic(values: list[str]) -> Profile:
    """A profile that takes ``values`` (names with units) in order, unconverted."""
    return Profile(
        summary="values named in the config, in the order the sensor sends them",
        raw=tuple(RawValue(name, 0.0, 100.0, 2) for name in values),
        outputs=tuple(Output(name, i, decimals=7) for i, name in enumerate(values)),
    )
