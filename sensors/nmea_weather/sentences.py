"""NMEA 0183 weather sentences to values in SI units, with the unit in each name.

Parsed by hand rather than with pynmea2: pynmea2 turns a field it cannot convert into
None, the same as an empty field, so line noise inside a number would pass as "not
measured"; and it leaves XDR's quadruples and the unit letters unchecked. Here:

- an empty field is "not measured": the value is left out, never 0;
- a field that is not a number, or whose unit letter is not the expected one, rejects
  the whole sentence (``bad_format``);
- ``$WIMWV`` with status V (void) gives no reading (``void_status``);
- a sentence whose fields are all empty gives no reading (``not_measured``).

Any talker id is accepted (WI weather instrument, II integrated instrumentation, YX ...):
only the sentence type (MDA, MWV, XDR) decides the parsing.
"""

import re
from collections.abc import Mapping

from contract.wire import check_value_name

KNOTS_TO_MS = 1852.0 / 3600.0
KMH_TO_MS = 1.0 / 3.6
MPH_TO_MS = 0.44704
INHG_TO_HPA = 33.8639
DECIMALS = 3
"""Converted values are rounded to this many decimals (1.0236 bar is 1023.6 hPa, not
1023.6000000000001)."""

SENTENCE_TYPES = ("MDA", "MWV", "XDR")

_NUMBER_RE = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)$")
_HEX = frozenset("0123456789ABCDEFabcdef")

Parsed = dict[str, float] | str
"""Values of a sentence, or the reason it gives no reading."""

XDR_DEFAULT_NAMES: Mapping[str, str] = {
    "tempair": "air_temp_c",
    "airtemp": "air_temp_c",
    "env_outair_t": "air_temp_c",
    "env_water_t": "water_temp_c",
    "tempwater": "water_temp_c",
    "barometer": "pressure_hpa",
    "env_atmos_p": "pressure_hpa",
    "relhumidity": "humidity_pct",
    "humidity": "humidity_pct",
    "env_outside_h": "humidity_pct",
    "dewpoint": "dew_point_c",
    "tempdew": "dew_point_c",
}
"""XDR transducer ids (lower case) of common stations -> value names; ``xdr_names`` in the
config overrides and extends this."""

# XDR (type, unit) -> (quantity for a derived name, unit suffix, factor to the SI unit).
_XDR_UNITS: Mapping[tuple[str, str], tuple[str, str, float]] = {
    ("C", "C"): ("temp", "_c", 1.0),
    ("P", "B"): ("pressure", "_hpa", 1000.0),
    ("P", "P"): ("pressure", "_hpa", 0.01),
    ("H", "P"): ("humidity", "_pct", 1.0),
    ("U", "V"): ("voltage", "_v", 1.0),
    ("A", "D"): ("angle", "_deg", 1.0),
    ("I", "A"): ("current", "_a", 1.0),
    ("V", "M"): ("volume", "_m3", 1.0),
}


class Unknown(Exception):
    """A sentence type this module does not read (counted as ignored, not rejected)."""


def checksum(body: bytes) -> int:
    """XOR of the bytes between ``$`` and ``*``."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def with_checksum(body: str) -> bytes:
    """``$body*hh`` CR LF: what a station sends for ``body`` (e.g. ``WIMWV,...``)."""
    return f"${body}*{checksum(body.encode('ascii')):02X}\r\n".encode("ascii")


def split_sentence(line: bytes, require_checksum: bool) -> tuple[str, list[str]] | str:
    """``(sentence type, fields)`` of one line (LF removed), or the reason it is rejected:
    ``not_ascii``, ``bad_format`` (no ``$``, no address field), ``bad_checksum`` (wrong, or
    missing while ``require_checksum``)."""
    line = line.strip()
    if not line.isascii() or not all(0x20 <= b < 0x7F for b in line):
        return "not_ascii"
    if not line.startswith(b"$"):
        return "bad_format"
    star = line.rfind(b"*")
    if star >= 0:
        given = line[star + 1 :]
        body = line[1:star]
        if len(given) != 2 or not _HEX.issuperset(given.decode()):
            return "bad_checksum"
        if int(given, 16) != checksum(body):
            return "bad_checksum"
    elif require_checksum:
        return "bad_checksum"
    else:
        body = line[1:]
    fields = body.decode("ascii").split(",")
    address = fields[0]
    if len(address) != 5 or not address.isalnum() or not address.isupper():
        return "bad_format"
    return address[2:], fields[1:]


class _BadField(Exception):
    pass


def _number(text: str) -> float | None:
    """The number in a field; None for an empty field; _BadField if it is not a number."""
    if text == "":
        return None
    if not _NUMBER_RE.match(text):
        raise _BadField(text)
    return float(text)


def _with_unit(fields: list[str], index: int, unit: str) -> float | None:
    """Field ``index`` whose next field must be ``unit`` when the value is present."""
    value = _number(fields[index])
    if value is not None and fields[index + 1] != unit:
        raise _BadField(f"unit {fields[index + 1]!r} after {fields[index]!r}, expected {unit!r}")
    return value


def _si(value: float, factor: float) -> float:
    return value if factor == 1.0 else round(value * factor, DECIMALS)


def parse_mda(fields: list[str]) -> dict[str, float]:
    """$--MDA: pressure (inHg I, bar B), air and water temperature C, relative humidity %,
    absolute humidity (not kept: its unit varies between stations), dew point C, wind
    direction true T and magnetic M, wind speed knots N and m/s M. Raises _BadField."""
    if len(fields) < 20:
        raise _BadField(f"MDA has {len(fields)} fields, needs 20")
    values: dict[str, float] = {}
    bar = _with_unit(fields, 2, "B")
    inhg = _with_unit(fields, 0, "I")
    if bar is not None:
        values["pressure_hpa"] = _si(bar, 1000.0)
    elif inhg is not None:
        values["pressure_hpa"] = _si(inhg, INHG_TO_HPA)
    for index, unit, name in (
        (4, "C", "air_temp_c"),
        (6, "C", "water_temp_c"),
        (10, "C", "dew_point_c"),
        (12, "T", "wind_dir_deg"),
        (14, "M", "wind_dir_mag_deg"),
    ):
        value = _with_unit(fields, index, unit)
        if value is not None:
            values[name] = value
    humidity = _number(fields[8])
    if humidity is not None:
        values["humidity_pct"] = humidity
    _number(fields[9])  # checked, not kept
    knots = _with_unit(fields, 16, "N")
    ms = _with_unit(fields, 18, "M")
    if ms is not None:
        values["wind_ms"] = ms
    elif knots is not None:
        values["wind_ms"] = _si(knots, KNOTS_TO_MS)
    return values


_SPEED_UNITS = {"M": 1.0, "N": KNOTS_TO_MS, "K": KMH_TO_MS, "S": MPH_TO_MS}


def parse_mwv(fields: list[str]) -> Parsed:
    """$--MWV: angle, reference (R relative, T true), speed, unit (K km/h, M m/s, N knots,
    S mph), status (A valid, V void). T gives wind_dir_deg, R wind_angle_rel_deg."""
    if len(fields) < 5:
        raise _BadField(f"MWV has {len(fields)} fields, needs 5")
    status = fields[4]
    if status == "V":
        return "void_status"
    if status != "A":
        raise _BadField(f"status {status!r}")
    values: dict[str, float] = {}
    angle = _number(fields[0])
    if angle is not None:
        if fields[1] == "T":
            values["wind_dir_deg"] = angle
        elif fields[1] == "R":
            values["wind_angle_rel_deg"] = angle
        else:
            raise _BadField(f"reference {fields[1]!r}")
    speed = _number(fields[2])
    if speed is not None:
        factor = _SPEED_UNITS.get(fields[3])
        if factor is None:
            raise _BadField(f"speed unit {fields[3]!r}")
        values["wind_ms"] = _si(speed, factor)
    return values


def xdr_name(kind: str, unit: str, ident: str, names: Mapping[str, str]) -> str | None:
    """The value name of an XDR quadruple, or None if its type/unit is not known."""
    spec = _XDR_UNITS.get((kind, unit))
    if spec is None:
        return None
    if ident in names:
        return names[ident]
    known = XDR_DEFAULT_NAMES.get(ident.lower())
    if known is not None and known.endswith(spec[1]):
        return known
    stem = re.sub(r"[^a-z0-9]+", "_", ident.lower()).strip("_")
    if not stem or not stem[0].isalpha():
        stem = f"{spec[0]}_{stem}" if stem else spec[0]
    return f"{stem}{spec[1]}"


def parse_xdr(fields: list[str], names: Mapping[str, str]) -> tuple[dict[str, float], int]:
    """$--XDR: (type, value, unit, id) quadruples. Returns the values and the number of
    quadruples skipped because their type/unit is not known. Raises _BadField."""
    while fields and len(fields) % 4 and fields[-1] == "":
        fields = fields[:-1]
    if not fields or len(fields) % 4:
        raise _BadField(f"XDR has {len(fields)} fields, not a multiple of 4")
    values: dict[str, float] = {}
    skipped = 0
    for i in range(0, len(fields), 4):
        kind, text, unit, ident = fields[i : i + 4]
        value = _number(text)
        name = xdr_name(kind, unit, ident, names)
        if name is None:
            skipped += 1
            continue
        if value is None:
            continue
        try:
            check_value_name(name)
        except ValueError as err:
            raise _BadField(str(err)) from None
        if name in values:
            raise _BadField(f"two quadruples give {name}; name them with xdr_names")
        values[name] = _si(value, _XDR_UNITS[(kind, unit)][2])
    return values, skipped


def parse(kind: str, fields: list[str], xdr_names: Mapping[str, str]) -> tuple[Parsed, int]:
    """Values of one sentence of type ``kind`` (or the reason for none) and the number of
    XDR quadruples skipped. Raises :class:`Unknown` for a type this module does not read."""
    try:
        if kind == "MDA":
            parsed: Parsed = parse_mda(fields)
            skipped = 0
        elif kind == "MWV":
            parsed, skipped = parse_mwv(fields), 0
        elif kind == "XDR":
            parsed, skipped = parse_xdr(fields, xdr_names)
        else:
            raise Unknown(kind)
    except _BadField:
        return "bad_format", 0
    if isinstance(parsed, dict) and not parsed:
        return "not_measured", skipped
    return parsed, skipped
