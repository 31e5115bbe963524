"""The ``text_line`` driver: one sample per valid line a microcontroller prints.

Bytes are read from the port pyserial opened (see sensors/line_reader.py) into a buffer of
our own, capped at ``max_line_bytes`` (pyserial's ``readline()`` buffers without limit when
no line end comes). A line ends at LF; a CR before it and surrounding whitespace are
dropped; blank lines are skipped.

Lines that are not used are counted in ``rejected`` by reason, never raised:

- ``partial_line``: the bytes before the first line end after ``open()``, however long. We
  cannot know whether the port was opened at a line boundary, so that fragment is dropped
  (a blank one silently);
- ``too_long``: a line longer than ``max_line_bytes``, or that many bytes with no line end
  (then everything up to the next line end is dropped: the driver resynchronises there);
- ``not_ascii`` / ``not_utf8``: bytes that are not text in the configured ``encoding``;
- ``bad_checksum``: missing or wrong ``*hh`` / ``*hhhh`` checksum;
- ``bad_format``: wrong column count, a value that is not a number, a missing mapped key,
  a key that is not a valid value name, JSON that is not an object of numbers;
- ``not_finite``: NaN or infinity; ``out_of_range``: outside the configured ``limits``.
"""

import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
import serial

from contract.wire import check_value_name
from sensors import base
from sensors.base import SensorConfig, SensorPortError, port_hint
from sensors.line_reader import Pace, read_stream
from sensors.text_line.checksum import split_checked
from sensors.text_line.config import IGNORED_COLUMN, MAX_VALUES, Config

log = logging.getLogger(__name__)

PORT_POLL_S = 0.1
"""pyserial's own read timeout: how often ``read()`` looks at its deadline while idle (only
for ports read through pyserial: a local device is read by sensors.line_reader from its fd)."""
_STEP_BACK_NS = 1_000_000_000

Parsed = dict[str, float] | str
"""Values of a line, or the reason it is rejected."""


class Driver(base.Driver):
    """Streams lines from a serial port; see the module docstring for what is rejected."""

    name: ClassVar[str] = "text_line"
    streaming: ClassVar[bool] = True
    config: Config

    def __init__(self, config: SensorConfig):
        if not isinstance(config, Config):
            raise TypeError(
                f"text_line driver needs a sensors.text_line.config.Config, got {type(config)}"
            )
        super().__init__(config)
        self.config = config
        self.accepted = 0
        """Lines turned into samples since the driver was made."""
        self._port: Any = None
        self._pace = Pace(config.read_window)
        self._pending = b""
        self._dropping = False
        self._synced = False
        self._last_ts = 0
        self._max_line = config.max_line_bytes
        self._checksum = config.checksum
        self._ascii_only = config.encoding == "ascii"
        self._separator = config.separator
        self._columns: list[str | None] = [
            None if c == IGNORED_COLUMN else c for c in config.columns
        ]
        self._mapping = dict(config.mapping)
        self._good_keys: set[str] = set()
        self._limits = dict(config.limits)
        parsers: dict[str, Callable[[bytes], Parsed]] = {
            "csv": self._parse_csv,
            "kv": self._parse_kv,
            "json": self._parse_json,
        }
        self._parse = parsers[config.format]

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Open ``config.port`` (any pyserial URL); raise SensorPortError if it cannot be.

        Device paths are locked (flock) so that two readers cannot split one stream.
        """
        self.close()
        url = self.config.port
        try:
            self._port = serial.serial_for_url(
                url,
                baudrate=self.config.baudrate,
                timeout=min(PORT_POLL_S, self.config.timeout),
                exclusive=True if "://" not in url else None,
            )
        except (serial.SerialException, OSError, ValueError) as err:
            raise SensorPortError(
                self.config.id, f"cannot open port {url!r} (option port): {err}; {port_hint(err)}"
            ) from err
        self._pending = b""
        self._dropping = False
        self._synced = False

    def close(self) -> None:
        """Close the port; errors while closing are logged, not raised. Safe to call twice."""
        port, self._port = self._port, None
        if port is None:
            return
        try:
            port.close()
        except (serial.SerialException, OSError) as err:
            log.info(
                "close failed sensor=%s port=%s error=%s", self.config.id, self.config.port, err
            )

    def read(self) -> list[base.Sample]:
        """Samples from the lines completed within ``config.timeout`` seconds (maybe none).

        Returns as soon as at least one valid line is complete, so data flows without
        waiting for the timeout. Each sample's ``ts`` is the wall-clock time (ns) the end of
        its line was read: when it arrived, or up to ``read_window`` s later if it came
        within the window after the previous read (sensors/line_reader.py). Lines read
        together get timestamps 1 ns apart so that none overwrites another in the store.
        Raises SensorPortError if the port is not open or goes away (unplugged adapter).
        """
        cfg = self.config
        return read_stream(cfg.id, cfg.port, self._port, cfg.timeout, self.feed, self._pace)

    def read_waiting(self) -> list[base.Sample]:
        """:meth:`read` of what the port already holds: no wait, no ``read_window``."""
        cfg = self.config
        return read_stream(cfg.id, cfg.port, self._port, 0.0, self.feed)

    # -- bytes to samples -----------------------------------------------------------------

    def feed(self, chunk: bytes, arrival_ns: int) -> list[base.Sample]:
        """Take bytes read from the port and return the samples of the lines they complete.

        Used by :meth:`read`; public so that a benchmark can measure parsing alone.
        """
        if self._dropping:
            newline = chunk.find(b"\n")
            if newline < 0:
                return []
            self._dropping = False
            self._synced = True
            chunk = chunk[newline + 1 :]
        data = self._pending + chunk if self._pending else chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        start = 0
        if not self._synced and lines:
            self._synced = True
            start = 1
            if lines[0].strip() or len(lines[0]) > self._max_line + 1:
                self.reject("partial_line", lines[0][:80])
        samples: list[base.Sample] = []
        for i in range(start, len(lines)):
            values = self._line_values(lines[i])
            if values is not None:
                ts = arrival_ns
                if self._last_ts - _STEP_BACK_NS < ts <= self._last_ts:
                    ts = self._last_ts + 1
                self._last_ts = ts
                samples.append(base.Sample(values=values, ts=ts))
        # One byte more than max_line_bytes: room for the CR of a CR LF line end.
        if len(self._pending) > self._max_line + 1:
            # Counted as it would be had the whole line come in one chunk.
            self.reject("too_long" if self._synced else "partial_line", self._pending[:80])
            self._pending = b""
            self._dropping = True
        self.accepted += len(samples)
        return samples

    def _line_values(self, raw: bytes) -> dict[str, float] | None:
        """The values of one line (without its LF), or None if it is blank or rejected."""
        length = len(raw) - 1 if raw.endswith(b"\r") else len(raw)
        if length > self._max_line:
            self.reject("too_long", raw[:80])
            return None
        line = raw.strip()
        if not line:
            return None
        if self._ascii_only:
            if not line.isascii():
                self.reject("not_ascii", line)
                return None
        else:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                self.reject("not_utf8", line)
                return None
        kind = self._checksum
        body = line if kind == "none" else split_checked(kind, line)
        if body is None:
            self.reject("bad_checksum", line)
            return None
        parsed = self._parse(body)
        if isinstance(parsed, str):
            self.reject(parsed, line)
            return None
        return parsed

    def _number(self, text: str) -> float | None:
        """``text`` as a float, or None. Refuses what float() takes but a device never
        prints: digit separators (``1_000``) and non-ASCII digits."""
        try:
            value = float(text)
        except ValueError:
            return None
        if "_" in text or not text.isascii():
            return None
        return value

    def _checked(self, values: dict[str, float]) -> Parsed:
        for name, value in values.items():
            if not math.isfinite(value):
                return "not_finite"
            limit = self._limits.get(name)
            if limit is not None and not limit[0] <= value <= limit[1]:
                return "out_of_range"
        return values

    def _parse_csv(self, body: bytes) -> Parsed:
        text = body.decode("utf-8")
        fields = text.split(self._separator)
        if len(fields) != len(self._columns):
            return "bad_format"
        if "_" not in text and text.isascii():
            # What a device prints: _number's extra refusals cannot apply, float() decides.
            plain: dict[str, float] = {}
            limits = self._limits
            suspect = False
            try:
                for name, field in zip(self._columns, fields, strict=True):
                    if name is not None:
                        number = plain[name] = float(field)
                        # number - number is 0.0 only for a finite float.
                        suspect = suspect or number - number != 0.0 or name in limits
            except ValueError:
                return "bad_format"
            # _checked decides (and names the reason) only for what can fail it.
            return self._checked(plain) if suspect else plain
        values: dict[str, float] = {}
        for name, text in zip(self._columns, fields, strict=True):
            if name is None:
                continue
            value = self._number(text)
            if value is None:
                return "bad_format"
            values[name] = value
        return self._checked(values)

    def _value_name(self, key: str) -> str | None:
        """The value name for a device key: mapped, or the key itself if valid; None to skip.

        Returns ``""`` for an unmapped key that is not a valid value name.
        """
        if self._mapping:
            return self._mapping.get(key)
        if key not in self._good_keys:
            try:
                check_value_name(key)
            except ValueError:
                return ""
            self._good_keys.add(key)
        return key

    def _finish(self, values: dict[str, float]) -> Parsed:
        if not values or len(values) > MAX_VALUES:
            return "bad_format"
        if self._mapping and len(values) != len(self._mapping):
            return "bad_format"
        return self._checked(values)

    def _parse_kv(self, body: bytes) -> Parsed:
        values: dict[str, float] = {}
        for part in body.decode("utf-8").split(self._separator):
            key, equals, text = part.partition("=")
            key = key.strip()
            if not equals:
                if key:
                    return "bad_format"
                continue  # an empty pair: a trailing or doubled separator
            name = self._value_name(key)
            if name is None:
                continue
            value = self._number(text.strip())
            if not name or value is None or name in values:
                return "bad_format"
            values[name] = value
        return self._finish(values)

    def _parse_json(self, body: bytes) -> Parsed:
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return "bad_format"
        if not isinstance(obj, dict):
            return "bad_format"
        values: dict[str, float] = {}
        for key, item in obj.items():
            name = self._value_name(key)
            if name is None:
                continue
            if not name or isinstance(item, bool) or not isinstance(item, int | float):
                return "bad_format"
            try:
                values[name] = float(item)
            except OverflowError:
                return "not_finite"
        return self._finish(values)

    # -- rejections -----------------------------------------------------------------------
