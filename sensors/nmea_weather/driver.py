"""The ``nmea_weather`` driver: one sample per valid NMEA 0183 weather sentence.

Lines are framed by :class:`sensors.line_reader.LineReader` (capped at ``max_line_bytes``)
and parsed by :mod:`sensors.nmea_weather.sentences`. A sample holds the values of one
sentence: sentences are never merged, because each is a complete observation at the
time its bytes arrived (MDA and MWV may both carry the wind; both are kept as sent).

Counted in ``rejected`` (never raised): ``too_long``, ``not_ascii``,
``bad_format``, ``bad_checksum``, ``void_status`` (MWV status V), ``not_measured`` (every
field empty). Counted in ``ignored``: sentence types not in ``sentences`` (a GPS on the
same line), XDR quadruples of an unknown type/unit.
"""

import logging
from collections import Counter
from typing import Any, ClassVar

import serial

from sensors import base
from sensors.base import SensorConfig, SensorPortError, port_hint
from sensors.line_reader import LineReader, Pace, read_stream
from sensors.nmea_weather.config import Config
from sensors.nmea_weather.sentences import Unknown, parse, split_sentence

log = logging.getLogger(__name__)

PORT_POLL_S = 0.1
"""pyserial's own read timeout: how often ``read()`` looks at its deadline while idle."""
_STEP_BACK_NS = 1_000_000_000


class Driver(base.Driver):
    """Streams NMEA sentences from a serial port; see the module docstring."""

    name: ClassVar[str] = "nmea_weather"
    streaming: ClassVar[bool] = True
    config: Config

    def __init__(self, config: SensorConfig):
        if not isinstance(config, Config):
            raise TypeError(
                "nmea_weather driver needs a sensors.nmea_weather.config.Config, got "
                f"{type(config)}"
            )
        super().__init__(config)
        self.config = config
        self.accepted = 0
        """Sentences turned into samples since the driver was made."""
        self.ignored: Counter[str] = Counter()
        """Sentences of other types and unknown XDR quadruples, by type."""
        self._port: Any = None
        self._pace = Pace(config.read_window)
        self._lines = LineReader(config.max_line_bytes, self.reject, keep_first=True)
        self._wanted = frozenset(config.sentences)
        self._last_ts = 0

    def open(self) -> None:
        """Open ``config.port`` (any pyserial URL); raise SensorPortError if it cannot be."""
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
                self.config.id,
                f"cannot open port {url!r} (option port): {err}; {port_hint(err)}",
            ) from err
        self._lines.reset()

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
        """Samples of the sentences completed within ``config.timeout`` s (maybe none).

        Returns as soon as one valid sentence is complete. ``ts`` is the wall-clock time
        (ns) the end of the sentence was read: when it arrived, or up to ``read_window`` s
        later if it came within the window after the previous read
        (sensors/line_reader.py); sentences read together are stamped 1 ns apart.
        Raises SensorPortError if the port is not open or goes away.
        """
        cfg = self.config
        return read_stream(cfg.id, cfg.port, self._port, cfg.timeout, self.feed, self._pace)

    def read_waiting(self) -> list[base.Sample]:
        """:meth:`read` of what the port already holds: no wait, no ``read_window``."""
        cfg = self.config
        return read_stream(cfg.id, cfg.port, self._port, 0.0, self.feed)

    def feed(self, chunk: bytes, arrival_ns: int) -> list[base.Sample]:
        """Take bytes read from the port; return the samples of the sentences they complete."""
        samples: list[base.Sample] = []
        for line in self._lines.feed(chunk):
            values = self._sentence_values(line)
            if values is None:
                continue
            ts = arrival_ns
            if self._last_ts - _STEP_BACK_NS < ts <= self._last_ts:
                ts = self._last_ts + 1
            self._last_ts = ts
            samples.append(base.Sample(values=values, ts=ts))
        self.accepted += len(samples)
        return samples

    def _sentence_values(self, line: bytes) -> dict[str, float] | None:
        if not line.strip():
            return None
        split = split_sentence(line, self.config.require_checksum)
        if isinstance(split, str):
            self.reject(split, line)
            return None
        kind, fields = split
        if kind not in self._wanted:
            self.ignored[kind] += 1
            return None
        try:
            parsed, skipped = parse(kind, fields, self.config.xdr_names)
        except Unknown:
            self.ignored[kind] += 1
            return None
        if skipped:
            self.ignored["xdr_quadruple"] += skipped
        if isinstance(parsed, str):
            self.reject(parsed, line)
            return None
        return parsed
