"""Config of the ``text_line`` driver: how the lines a microcontroller prints are read.

Imports no device library, so a gateway config is validated without pyserial.
"""

import math
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from contract.wire import check_value_name
from sensors.base import StreamingConfig
from sensors.text_line.checksum import ChecksumKind

IGNORED_COLUMN = "_"
"""A column named ``_`` is skipped."""

MAX_VALUES = 64
"""A reading holds at most this many values (contract.wire.Reading)."""

_NUMBER_CHARS = frozenset("0123456789.+-")

Limit = tuple[float, float]
"""An inclusive physical range: (low, high)."""


class Config(StreamingConfig):
    """One microcontroller printing one reading per line (CSV, key=value or JSON)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    driver: Literal["text_line"] = "text_line"
    """Driver name: text_line."""
    format: Literal["csv", "kv", "json"] = "csv"
    """Line format: csv (values in a fixed column order), kv (key=value pairs) or json
    (one JSON object per line)."""
    columns: list[str] = Field(default_factory=list, validate_default=True)
    """csv only: value names with units (temp_c, moisture_pct) for the columns, in order;
    "_" skips a column. A line with a different number of columns is rejected."""
    separator: str = ","
    """csv: the column separator; kv: the separator between key=value pairs."""
    mapping: dict[str, str] = Field(default_factory=dict)
    """kv and json only: device key -> value name. When set, exactly these keys are taken
    (each must be present) and other keys are ignored; when empty, every key is taken as-is
    and must be a valid value name."""
    checksum: ChecksumKind = "none"
    """none; nmea_xor (line ends with *hh: XOR of the bytes before '*', without a leading '$');
    or crc16 (line ends with *hhhh: CRC-16/CCITT-FALSE of the bytes before '*')."""
    max_line_bytes: Annotated[int, Field(ge=16, le=1_048_576)] = 1024
    """Longest line accepted, in bytes without the line end. Longer lines (and bytes with no
    line end for this long) are dropped up to the next newline and counted as too_long."""
    encoding: Literal["ascii", "utf-8"] = "ascii"
    """Text encoding of the lines. Numbers must be ASCII either way; utf-8 only lets other
    text (JSON strings, skipped columns) contain non-ASCII characters."""
    limits: dict[str, Limit] = Field(default_factory=dict)
    """Physical range per value name, [low, high] inclusive; a line with a value outside its
    range is rejected as out_of_range, e.g. { temp_c = [-40, 85] }. They also become this
    sensor's plausibility ranges (the shared ``ranges`` key), checked after calibration."""

    @model_validator(mode="before")
    @classmethod
    def _limits_are_ranges(cls, data: Any) -> Any:
        """``limits`` also feed the shared plausibility ``ranges`` (checked after calibration).

        The driver keeps rejecting raw lines outside ``limits`` itself; naming one value in
        both keys with different bounds is an error.
        """
        if isinstance(data, dict) and isinstance(data.get("limits"), dict):
            given = data.get("ranges") or {}
            if not isinstance(given, dict):
                return data  # the field validation reports a malformed ranges
            ranges = dict(given)
            for name, bounds in data["limits"].items():
                if not isinstance(bounds, list | tuple):
                    continue  # malformed: the limits field reports it, once
                other: Any = ranges.get(name)
                both = isinstance(bounds, list | tuple) and isinstance(other, list | tuple)
                if both and list(other) != list(bounds):
                    raise ValueError(
                        f"limits and ranges give {name!r} different bounds ({list(bounds)} and "
                        f"{list(other)}); keep one of them"
                    )
                ranges[name] = bounds
            data = {**data, "ranges": ranges}
        return data

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, columns: list[str], info: ValidationInfo) -> list[str]:
        used = [c for c in columns if c != IGNORED_COLUMN]
        line_format = info.data.get("format")
        if line_format == "csv" and not used:
            raise ValueError(
                'format = "csv" needs the value names of the columns, e.g. '
                'columns = ["moisture_pct", "temp_c"]'
            )
        if line_format in ("kv", "json") and columns:
            raise ValueError(
                f'columns apply to format = "csv" only; with {line_format}, the keys name the '
                "values (rename them with mapping)"
            )
        for name in used:
            check_value_name(name)
        doubled = sorted({c for c in used if used.count(c) > 1})
        if doubled:
            raise ValueError(
                f"columns name {doubled} more than once; each value needs its own name"
            )
        if len(used) > MAX_VALUES:
            raise ValueError(
                f"{len(used)} columns are named; at most {MAX_VALUES} fit in a reading"
            )
        return columns

    @field_validator("separator")
    @classmethod
    def _check_separator(cls, separator: str, info: ValidationInfo) -> str:
        if info.data.get("format") == "json":
            raise ValueError('separator does not apply to format = "json"; remove it')
        if not 1 <= len(separator) <= 8:
            raise ValueError(f"separator {separator!r} must be 1 to 8 characters long")
        if "\n" in separator or "\r" in separator:
            raise ValueError(f"separator {separator!r} must not contain a line end")
        if _NUMBER_CHARS & set(separator) or "=" in separator:
            raise ValueError(
                f"separator {separator!r} must not contain digits, '.', '+', '-' or '=', which "
                'appear inside values; use "," ";" "\\t" or " "'
            )
        return separator

    @field_validator("mapping")
    @classmethod
    def _check_mapping(cls, mapping: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if mapping and info.data.get("format") == "csv":
            raise ValueError(
                'mapping applies to format = "kv" or "json" only; with csv, name the values '
                "in columns"
            )
        for key, name in mapping.items():
            if not key or key != key.strip() or "=" in key:
                raise ValueError(
                    f"mapping key {key!r} must be a device key without surrounding spaces or '='"
                )
            check_value_name(name)
        targets = list(mapping.values())
        doubled = sorted({n for n in targets if targets.count(n) > 1})
        if doubled:
            raise ValueError(f"mapping gives the value names {doubled} to more than one key")
        if len(targets) > MAX_VALUES:
            raise ValueError(f"mapping has {len(targets)} keys; at most {MAX_VALUES} fit")
        return mapping

    @field_validator("limits")
    @classmethod
    def _check_limits(cls, limits: dict[str, Limit], info: ValidationInfo) -> dict[str, Limit]:
        for name, (low, high) in limits.items():
            check_value_name(name)
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(
                    f"limits for {name!r} are [{low}, {high}]; give [low, high] as finite "
                    "numbers with low <= high"
                )
        produced: list[str] | None = None
        if info.data.get("format") == "csv" and "columns" in info.data:
            produced = [c for c in info.data["columns"] if c != IGNORED_COLUMN]
        elif info.data.get("format") in ("kv", "json") and info.data.get("mapping"):
            produced = list(info.data["mapping"].values())
        unknown = sorted(set(limits) - set(produced)) if produced is not None else []
        if unknown:
            raise ValueError(
                f"limits name {unknown}, which are not among the values read "
                f"({', '.join(produced or [])})"
            )
        return limits

    def value_names(self) -> list[str] | None:
        """The value names every sample has, or None when the keys come from the device."""
        if self.format == "csv":
            return [c for c in self.columns if c != IGNORED_COLUMN]
        if self.mapping:
            return list(self.mapping.values())
        return None
