"""Config of the ``modbus_soil`` driver: which probe, at which slave id, with which map.

Imports no device library, so a gateway config is validated without pyserial or pymodbus.
"""

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from sensors.base import SensorConfig
from sensors.modbus_soil.profiles import (
    BUILTIN_PROFILES,
    Profile,
    ProfileError,
    builtin_profile,
)

DEFAULT_PROFILE = "soil_7in1"


class Config(SensorConfig):
    """One Modbus RTU soil probe on an RS-485 bus (several may share a port)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    driver: Literal["modbus_soil"] = "modbus_soil"
    """Driver name: modbus_soil."""
    address: Annotated[int, Field(ge=1, le=247)] = 1
    """Modbus slave id of the probe, 1-247 (probes ship as 1: give each on a bus its own)."""
    profile: str | None = None
    """Built-in register map: soil_3in1, soil_4in1, soil_7in1 (family A, 4800 baud) or
    jxbs_7in1 (family B, 9600 baud); default soil_7in1 unless custom_profile is given."""
    custom_profile: Profile | None = None
    """A register map of your own: { function = 3, start = 0, baudrate = 9600, registers =
    [{ name = "moisture_pct", type = "uint16", scale = 0.1 }, ...] }; types uint16, int16,
    uint32, int32, float32 (with word_order = "big" or "little"), scale, offset, address."""
    function: Literal[3, 4] | None = None
    """Override the profile's function code: 3 (holding registers) or 4 (input registers)."""
    parity: Literal["N", "E", "O"] = "N"
    """Serial parity: N (none), E (even) or O (odd)."""
    bytesize: Literal[7, 8] = 8
    """Data bits per character."""
    stopbits: Literal[1, 2] = 1
    """Stop bits per character."""

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        """Check the profile name and take the baud rate from the profile when not given."""
        if not isinstance(data, dict):
            return data
        custom = data.get("custom_profile")
        if custom is not None and data.get("profile") is not None:
            raise ValueError(
                "give either profile (a built-in map) or custom_profile (your own), not both"
            )
        baudrate: Any = None
        if custom is None:
            name = data.get("profile") or DEFAULT_PROFILE
            if not isinstance(name, str) or name not in BUILTIN_PROFILES:
                raise ValueError(
                    f"profile {name!r} is not built in; use one of "
                    f"{', '.join(BUILTIN_PROFILES)}, or give custom_profile = {{ ... }}"
                )
            try:
                baudrate = builtin_profile(name).baudrate
            except ProfileError as err:
                raise ValueError(str(err)) from None
        elif isinstance(custom, dict):
            baudrate = custom.get("baudrate", Profile.model_fields["baudrate"].default)
        elif isinstance(custom, Profile):
            baudrate = custom.baudrate
        if "baudrate" not in data and baudrate is not None:
            data = {**data, "baudrate": baudrate}
        return data

    def register_map(self) -> Profile:
        """The profile in use (custom_profile, else the built-in one), function overridden."""
        chosen = self.custom_profile or builtin_profile(self.profile or DEFAULT_PROFILE)
        if self.function is not None and self.function != chosen.function:
            chosen = chosen.model_copy(update={"function": self.function})
        return chosen
