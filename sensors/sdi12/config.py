"""Config of the ``sdi12`` driver: which sensor on the SDI-12 bus, and what its values are.

Imports no device library, so a gateway config is validated without pyserial.
"""

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from contract.wire import check_value_name
from sensors.base import SensorConfig
from sensors.sdi12.frames import check_address
from sensors.sdi12.profiles import GENERIC, PROFILES, Profile, generic

MAX_VALUES = 99
"""aC! may announce up to 99 values; aM! at most 9."""


class Config(SensorConfig):
    """One sensor at one address of an SDI-12 bus, read through a serial SDI-12 adapter."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    driver: Literal["sdi12"] = "sdi12"
    """Driver name: sdi12."""
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 1200
    """Serial speed in baud: SDI-12 is 1200 baud, 7 data bits, even parity, 1 stop bit.
    Change it only for an adapter that speaks another speed to the host."""
    address: str = "0"
    """SDI-12 address of the sensor: one of 0-9, A-Z, a-z (find them with
    `farmtel sensors scan --driver sdi12`)."""
    profile: str = "teros12"
    """Sensor profile naming and converting the values: teros12, gs3, cs655, or generic
    (then name the values in `values`)."""
    values: list[str] = Field(default_factory=list)
    """generic profile only: value names with units, in the order the sensor sends them,
    e.g. ["moisture_pct", "temp_c"]."""
    use_crc: bool = True
    """Ask for a CRC on the data (aMC! / aCC!) and reject data whose CRC is wrong."""
    concurrent: bool = False
    """Start the measurement with aC! (no service request; the driver waits the announced
    seconds) instead of aM!."""
    response_timeout: Annotated[float, Field(ge=0.02, le=5.0)] = 0.2
    """Seconds to wait for the answer to one command before trying again. The spec gives a
    sensor 15 ms; USB adapters add latency."""
    retries: Annotated[int, Field(ge=1, le=10)] = 3
    """Tries of a command (each after a break when the bus was idle) before the read fails."""

    @field_validator("address")
    @classmethod
    def _check_address(cls, address: str) -> str:
        return check_address(address)

    @field_validator("profile")
    @classmethod
    def _check_profile(cls, profile: str) -> str:
        if profile != GENERIC and profile not in PROFILES:
            raise ValueError(
                f"profile {profile!r} is not known; use one of {', '.join(sorted(PROFILES))} "
                f'or "{GENERIC}" with values = [...]'
            )
        return profile

    @field_validator("values")
    @classmethod
    def _check_values(cls, values: list[str], info: ValidationInfo) -> list[str]:
        for name in values:
            check_value_name(name)
        doubled = sorted({n for n in values if values.count(n) > 1})
        if doubled:
            raise ValueError(f"values name {doubled} more than once; each value needs its own")
        if len(values) > MAX_VALUES:
            raise ValueError(f"values has {len(values)} names; SDI-12 sends at most {MAX_VALUES}")
        return values

    @model_validator(mode="after")
    def _check_profile_values(self) -> "Config":
        if self.profile == GENERIC and not self.values:
            raise ValueError(
                'profile = "generic" needs the value names in order, e.g. '
                'values = ["moisture_pct", "temp_c"]'
            )
        if self.profile != GENERIC and self.values:
            raise ValueError(
                f'values apply to profile = "{GENERIC}" only; profile {self.profile!r} names '
                'its own values (remove values, or set profile = "generic")'
            )
        if not self.concurrent and len(self.profile_spec().raw) > 9:
            raise ValueError("aM! returns at most 9 values; set concurrent = true for more")
        return self

    def profile_spec(self) -> Profile:
        """The profile in use (built from ``values`` for the generic profile)."""
        return generic(self.values) if self.profile == GENERIC else PROFILES[self.profile]
