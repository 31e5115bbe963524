"""InfluxDB line protocol: the one serializer every write path uses (v1 ``/write`` and v2).

``measurement,tag=value,... field=value,... timestamp_ns``. Escaping follows the parser
of InfluxDB 1.x (``models/points.go``) and the line protocol reference of 2.x/3.x:

- measurement: ``,`` and space get a backslash;
- tag keys, tag values, field keys: ``,``, ``=`` and space get a backslash;
- string field values are double-quoted; ``"`` and ``\\`` in them get a backslash.

Points the server could not store exactly are refused with :class:`LineProtocolError`
instead of being mangled or silently dropped (influxdb-client drops some without a word):
empty names or tag values, NaN and infinities, points without fields, newlines anywhere,
NUL in names and tag values (InfluxQL could never select them), a name starting with
``_`` (reserved by InfluxDB 2/3), a measurement or field key starting with ``#`` or tab
(the parser reads those as a comment or skips them), the keys
``time`` (refused by the server), and a backslash the parser would take for an escape:
at the end of a name or tag value, before a space in the tags, before a space, ``,``, ``=``
or ``"`` in the measurement, and before
``,``, ``=``, space or ``"`` in a field key (no escaping can write those strings).
A key used both as a tag and as a field is refused too: the server stores it, but a query
returns the tag as ``key_1``.

Floats are written as orjson writes them (:func:`float_text`: the shortest string that
reads back as the same double, as ``repr`` finds it, but ``1e-7`` where ``repr`` writes
``1e-07`` and ``0.00001`` for ``1e-05``; InfluxDB 1.6.7 reads every such form back exactly,
tests/ingest/test_influx.py), integers with the ``i`` suffix, booleans as ``true``/``false``.
Tags are sorted by key, the order InfluxDB stores them in, which saves the server a sort per
point.

Escaped names are cached (ids and value names repeat in every batch), which keeps a
typical reading at a few microseconds.
"""

from collections.abc import Callable, Iterable, Mapping
from math import isfinite

import orjson

FieldValue = float | int | str | bool

MIN_TIME_NS = -9_223_372_036_854_775_806
"""Earliest timestamp InfluxDB 1.x accepts (``models.MinNanoTime``)."""
MAX_TIME_NS = 9_223_372_036_854_775_806
"""Latest timestamp InfluxDB 1.x accepts (``models.MaxNanoTime``)."""
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_CACHE_LIMIT = 65_536
"""Entries per name cache; cleared when full (a few MiB at most)."""


class LineProtocolError(ValueError):
    """A point cannot be written as line protocol; the message names the part and why."""


def _check_name(value: object, what: str, specials: str, no_backslash_before: str) -> str:
    """Validate a measurement, tag key, tag value or field key; return it escaped.

    ``specials`` get a backslash; a backslash in ``value`` must not end it nor stand
    before a character of ``no_backslash_before``, because InfluxDB's parser would take
    that pair for an escape and split the line somewhere else.
    """
    if not isinstance(value, str):
        raise LineProtocolError(f"{what} {value!r} is a {type(value).__name__}, not a str")
    if not value:
        raise LineProtocolError(f"{what} is empty; InfluxDB cannot store an empty {what}")
    if "\n" in value or "\r" in value:
        raise LineProtocolError(f"{what} {value!r} contains a line break; remove it")
    if "\0" in value:
        # InfluxQL reads NUL as the end of the query: the name could never be selected.
        raise LineProtocolError(f"{what} {value!r} contains a NUL character; remove it")
    _check_utf8(value, what)
    if "\\" in value:
        if value.endswith("\\"):
            raise LineProtocolError(
                f"{what} {value!r} ends with a backslash, which InfluxDB would read as an "
                "escape; remove or replace it"
            )
        for special in no_backslash_before:
            if "\\" + special in value:
                raise LineProtocolError(
                    f"{what} {value!r} has a backslash before {special!r}, which InfluxDB "
                    "would read as an escape; remove or replace it"
                )
    for special in specials:
        if special in value:
            value = value.replace(special, "\\" + special)
    return value


def _check_utf8(value: str, what: str) -> None:
    """Refuse lone surrogates (from bad decoding upstream): they have no UTF-8 form."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise LineProtocolError(
                f"{what} {value!r} is not valid Unicode (lone surrogate)"
            ) from None


def _check_reserved_start(value: str, what: str, also: str = "") -> None:
    if value[0] == "_":
        raise LineProtocolError(
            f"{what} {value!r} starts with '_', which InfluxDB reserves for its own names"
        )
    if value[0] in also:
        raise LineProtocolError(
            f"{what} {value!r} starts with {value[0]!r}, which the InfluxDB parser "
            "reads as a comment or skips"
        )


def _measurement(value: object) -> str:
    # InfluxDB 1.6 unescapes \, \= and \" in a measurement (seen: "a\=b" is stored as
    # "a=b"), so no escaping can write a backslash before those: refuse it.
    escaped = _check_name(value, "measurement", ", ", ' ,="')
    _check_reserved_start(escaped, "measurement", "#\t")
    return escaped


def _tag_key(value: object) -> str:
    escaped = _check_name(value, "tag key", ",= ", " ")
    _check_reserved_start(escaped, "tag key")
    if escaped == "time":
        raise LineProtocolError("tag key 'time' is refused by InfluxDB; rename the tag")
    return escaped


def _tag_value(value: object) -> str:
    return _check_name(value, "tag value", ",= ", " ")


def _field_key(value: object) -> str:
    escaped = _check_name(value, "field key", ",= ", ',= "')
    _check_reserved_start(escaped, "field key", "\t")
    if escaped == "time":
        raise LineProtocolError("field key 'time' is refused by InfluxDB; rename the field")
    return escaped


_measurements: dict[str, str] = {}
_tag_keys: dict[str, str] = {}
_tag_values: dict[str, str] = {}
_field_keys: dict[str, str] = {}


def _slow_name(cache: dict[str, str], check: Callable[[object], str], value: object) -> str:
    """Check and escape a name missing from ``cache``; remember it (only valid names are)."""
    escaped = check(value)
    if isinstance(value, str):
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[value] = escaped
    return escaped


def float_text(value: float) -> str:
    """A finite float as line protocol writes it: orjson's shortest round-trip form.

    The ingest's fast path formats a whole batch's values with one ``orjson.dumps`` (a third
    of the cost of ``repr`` per value, docs/performance.md), so every path writes this form
    and the lines stay the same text whichever path wrote them.
    """
    return orjson.dumps(value).decode()


_string_values: dict[str, str] = {}
_CACHED_STRING_MAX = 64
"""Short string fields (``clock = "synced"``, calibration ids) repeat; long ones do not."""


def _slow_string(key: str, value: str) -> str:
    quoted = _field_value(key, value)
    if len(value) <= _CACHED_STRING_MAX:
        if len(_string_values) >= _CACHE_LIMIT:
            _string_values.clear()
        _string_values[value] = quoted
    return quoted


def _field_value(key: str, value: object) -> str:
    """One field's value in line protocol (the slow path: all but plain floats and ints)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise LineProtocolError(f"field {key!r} = {value} does not fit a 64-bit integer")
        return f"{int(value)}i"
    if isinstance(value, float):
        if not isfinite(value):
            raise LineProtocolError(
                f"field {key!r} = {value!r}; InfluxDB cannot store NaN or infinity "
                "(leave the field out or record a gap)"
            )
        return float_text(float(value))
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            raise LineProtocolError(f"field {key!r} string {value!r} contains a line break")
        _check_utf8(value, f"field {key!r} string")
        if "\\" in value:
            value = value.replace("\\", "\\\\")
        if '"' in value:
            value = value.replace('"', '\\"')
        return f'"{value}"'
    raise LineProtocolError(
        f"field {key!r} has a {type(value).__name__} value {value!r}; use float, int, str or bool"
    )


def encode_point(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    ts_ns: int,
) -> str:
    """One point as a line of line protocol (no trailing newline), timestamp in ns.

    Raises :class:`LineProtocolError` naming the measurement, tag or field at fault; see
    the module docstring for what is refused.
    """
    if not fields:
        raise LineProtocolError(
            f"point of measurement {measurement!r} has no fields; InfluxDB needs at least one"
        )
    if type(ts_ns) is not int or not MIN_TIME_NS <= ts_ns <= MAX_TIME_NS:
        raise LineProtocolError(
            f"timestamp {ts_ns!r} must be an int of nanoseconds within InfluxDB's range "
            f"[{MIN_TIME_NS}, {MAX_TIME_NS}]"
        )
    # Cache lookups are inline rather than in a helper: a call costs ~0.1 us on a small
    # machine, and this runs for every reading. A cached name has passed its checks.
    try:
        head = _measurements.get(measurement) or _slow_name(
            _measurements, _measurement, measurement
        )
        if tags:
            if not tags.keys().isdisjoint(fields):
                both = sorted(str(k) for k in tags.keys() & fields.keys())
                raise LineProtocolError(
                    f"{both} used as both tag and field key in measurement {measurement!r}; "
                    "a query would return the tag renamed to <key>_1"
                )
            pairs = [
                f",{_tag_keys.get(k) or _slow_name(_tag_keys, _tag_key, k)}"
                f"={_tag_values.get(v) or _slow_name(_tag_values, _tag_value, v)}"
                for k, v in tags.items()
            ]
            # Sorted by escaped key, the order InfluxDB keeps (',' and '=' sort before
            # letters and digits, so "a=" < "ab=" as the server compares them).
            pairs.sort()
            head += "".join(pairs)
        body = []
        for key, value in fields.items():
            escaped_key = _field_keys.get(key) or _slow_name(_field_keys, _field_key, key)
            if type(value) is float and isfinite(value):
                body.append(f"{escaped_key}={float_text(value)}")
            elif type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
                body.append(f"{escaped_key}={value}i")
            elif type(value) is str:
                quoted = _string_values.get(value) or _slow_string(key, value)
                body.append(f"{escaped_key}={quoted}")
            else:
                body.append(f"{escaped_key}={_field_value(key, value)}")
    except TypeError as err:  # an unhashable name, or keys that cannot be compared
        raise LineProtocolError(
            f"point of measurement {measurement!r} has a name that is not a str ({err})"
        ) from None
    return f"{head} {','.join(body)} {ts_ns}"


def encode_series(measurement: str, tags: Mapping[str, str]) -> str:
    """The escaped ``measurement,tag=value,...`` head of a line, tags sorted by key.

    The same text :func:`encode_point` starts its line with, checked the same way; for
    callers that write many points of one series and cache the head (ingest/mapping.py).
    Raises :class:`LineProtocolError` for a name :func:`encode_point` would refuse.
    """
    try:
        head = _measurements.get(measurement) or _slow_name(
            _measurements, _measurement, measurement
        )
        pairs = [
            f",{_tag_keys.get(k) or _slow_name(_tag_keys, _tag_key, k)}"
            f"={_tag_values.get(v) or _slow_name(_tag_values, _tag_value, v)}"
            for k, v in tags.items()
        ]
    except TypeError as err:
        raise LineProtocolError(
            f"point of measurement {measurement!r} has a name that is not a str ({err})"
        ) from None
    pairs.sort()
    return head + "".join(pairs)


def escape_field_key(key: str) -> str:
    """``key`` escaped as a field key; :class:`LineProtocolError` where encode_point refuses it."""
    return _field_keys.get(key) or _slow_name(_field_keys, _field_key, key)


Point = tuple[str, Mapping[str, str], Mapping[str, FieldValue], int]
"""``(measurement, tags, fields, ts_ns)``, the arguments of :func:`encode_point`."""


def encode_points(points: Iterable[Point]) -> bytes:
    """Points as a ``/write`` body: lines joined by newlines, UTF-8 encoded.

    Raises :class:`LineProtocolError` for the first point that cannot be encoded.
    """
    return "\n".join([encode_point(m, t, f, ts) for m, t, f, ts in points]).encode()
