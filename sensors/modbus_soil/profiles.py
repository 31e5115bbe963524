"""Register-map profiles: which registers a soil probe answers and what they mean.

Profiles are data. The built-in ones are TOML files in ``profiles/`` (``soil_3in1``,
``soil_4in1``, ``soil_7in1``, ``jxbs_7in1``); a sensor may bring its own as
``custom_profile = { ... }`` in the gateway config, with the same keys.

A profile reads one block of ``count`` registers from ``start`` with function 03 (holding)
or 04 (input registers). Each value sits at ``address`` (default: right after the previous
value) and is decoded as ``type``, then ``raw * scale + offset``. Registers in the block
that no value names are read and ignored.

Imports only pydantic and the standard library: a config is validated without pymodbus or
pyserial.
"""

import functools
import importlib.resources
import math
import struct
import tomllib
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from contract.settings import Strict
from contract.wire import check_value_name

RegisterType = Literal["uint16", "int16", "uint32", "int32", "float32"]
WordOrder = Literal["big", "little"]

MAX_READ_REGISTERS = 125
"""Modbus allows at most 125 registers in one read (a 250-byte answer)."""

WORDS: dict[str, int] = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}
"""Registers (16-bit words) each type takes."""

_STRUCT: dict[str, str] = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i"}


class ProfileError(ValueError):
    """A profile is malformed or unknown; the message says which key and what is allowed."""


class RegisterValue(Strict):
    """One value in a register map."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    name: str
    """Value name with its unit (moisture_pct, temp_c, ec_us_cm, ph, n_mg_kg)."""
    type: RegisterType = "uint16"
    """uint16, int16 (two's complement, for temperatures below zero), uint32, int32 or
    float32 (IEEE 754); 32-bit types take two registers."""
    word_order: WordOrder = "big"
    """32-bit types: "big" when the first register holds the high word (Modbus convention),
    "little" when it holds the low word (many probes and PLCs)."""
    scale: float = 1.0
    """The register's number is multiplied by this (0.1 for a register in tenths)."""
    offset: float = 0.0
    """Added after scaling, in the value's unit."""
    address: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    """Register number of the value's first word; default: right after the previous value."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        return check_value_name(name)

    @field_validator("scale", "offset")
    @classmethod
    def _finite(cls, number: float) -> float:
        if not math.isfinite(number):
            raise ValueError(f"{number} is not a finite number")
        return number

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, scale: float) -> float:
        if scale == 0:
            raise ValueError("scale = 0 would make every reading the offset; give scale != 0")
        return scale

    def decode(self, words: Sequence[int]) -> float:
        """The value from its registers (1 or 2 words, as read), scaled."""
        if self.type in ("uint16", "int16"):
            raw_bytes = struct.pack(">H", words[0])
        else:
            high, low = (words[0], words[1]) if self.word_order == "big" else (words[1], words[0])
            raw_bytes = struct.pack(">HH", high, low)
        if self.type == "float32":
            number: float = struct.unpack(">f", raw_bytes)[0]
            return number * self.scale + self.offset
        integer: int = struct.unpack(_STRUCT[self.type], raw_bytes)[0]
        # 301 * 0.1 is 30.100000000000001 in binary; the register means 30.1.
        return round(integer * self.scale + self.offset, self._decimals())

    def _decimals(self) -> int:
        """Decimal places an integer register can carry after scale and offset."""
        places = 0
        for number in (self.scale, self.offset):
            text = repr(float(number))
            if "e" in text:
                return 12
            places = max(places, len(text.partition(".")[2].rstrip("0")))
        return places

    def encode(self, value: float) -> list[int]:
        """The registers a device sends for ``value`` (the inverse of :meth:`decode`).

        Used by the simulator. Raises ValueError if the value does not fit the type.
        """
        raw = (value - self.offset) / self.scale
        if self.type == "float32":
            packed = struct.pack(">f", raw)
        else:
            try:
                packed = struct.pack(_STRUCT[self.type], round(raw))
            except struct.error as err:
                raise ValueError(f"{self.name}={value} does not fit {self.type}: {err}") from None
        words = list(struct.unpack(f">{len(packed) // 2}H", packed))
        return words if self.word_order == "big" else words[::-1]


class Profile(Strict):
    """A register map: one read request and the values in its answer."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    description: str = ""
    """What probe this map is for."""
    function: Literal[3, 4] = 3
    """Modbus function: 3 reads holding registers, 4 reads input registers."""
    start: Annotated[int, Field(ge=0, le=0xFFFF)] = 0
    """First register read."""
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 9600
    """The probe's factory baud rate (the sensor's baudrate default)."""
    notes: str = ""
    """Caveats a reader of the data must know."""
    estimates: list[str] = Field(default_factory=list)
    """Values that are estimates rather than measurements (NPK from EC-based probes)."""
    registers: list[RegisterValue] = Field(min_length=1)
    """The values, in register order."""

    @model_validator(mode="after")
    def _layout(self) -> "Profile":
        position = self.start
        names: set[str] = set()
        for value in self.registers:
            if value.name in names:
                raise ValueError(f"value name {value.name!r} appears twice in the register map")
            names.add(value.name)
            address = value.address if value.address is not None else position
            if address < position:
                raise ValueError(
                    f"register {value.name!r} at {address} overlaps or precedes the register "
                    f"before it (next free is {position}); list values in register order"
                )
            position = address + WORDS[value.type]
        if position - self.start > MAX_READ_REGISTERS:
            raise ValueError(
                f"the map spans {position - self.start} registers from {self.start}; one "
                f"Modbus read takes at most {MAX_READ_REGISTERS}"
            )
        unknown = sorted(set(self.estimates) - names)
        if unknown:
            raise ValueError(f"estimates name {unknown}, which the register map does not read")
        return self

    def layout(self) -> list[tuple[int, RegisterValue]]:
        """``(offset in the block, value)`` for every value."""
        out = []
        position = self.start
        for value in self.registers:
            address = value.address if value.address is not None else position
            out.append((address - self.start, value))
            position = address + WORDS[value.type]
        return out

    @property
    def count(self) -> int:
        """Registers read in one request."""
        offset, last = self.layout()[-1]
        return offset + WORDS[last.type]

    def decode(self, words: Sequence[int]) -> dict[str, float]:
        """Values from the ``count`` registers of an answer (not range-checked)."""
        return {
            value.name: value.decode(words[offset : offset + WORDS[value.type]])
            for offset, value in self.layout()
        }

    def encode(self, values: dict[str, float]) -> list[int]:
        """The ``count`` registers a device sends for ``values`` (unnamed registers are 0)."""
        words = [0] * self.count
        for offset, value in self.layout():
            encoded = value.encode(values[value.name])
            words[offset : offset + len(encoded)] = encoded
        return words


BUILTIN_PROFILES = ("soil_3in1", "soil_4in1", "soil_7in1", "jxbs_7in1")
"""Profiles shipped with farmtel (files profiles/<name>.toml)."""


@functools.cache
def builtin_profile(name: str) -> Profile:
    """The built-in profile ``name``; raise ProfileError naming the known ones."""
    if name not in BUILTIN_PROFILES:
        raise ProfileError(
            f"profile {name!r} is not built in; use one of {', '.join(BUILTIN_PROFILES)}, "
            "or describe the register map with custom_profile = { ... }"
        )
    text = (
        importlib.resources.files("sensors.modbus_soil")
        .joinpath(f"profiles/{name}.toml")
        .read_text(encoding="utf-8")
    )
    try:
        return Profile.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as err:
        raise ProfileError(f"built-in profile {name!r} is broken: {err}") from err
