"""A microcontroller printing readings on a serial line, simulated on a pty.

    python -m sensors.text_line.simulator --link /tmp/soil --format csv --rate 10 \\
        --count 0 --seed 1 --columns moisture_pct,temp_c --record sent.jsonl

Every line has a ``counter`` column, the board's line number (1, 2, ...): where
``--columns`` lists it, else first. The other columns are plausible random walks picked by
the name's unit suffix (``_pct`` 0-100, ``_c`` -10..35, ``_us_cm`` 0-3000, ``ph`` 3-9.5
...), with 2 decimals. With the defaults the lines match the driver's ``sample.toml``
(which skips the counter column).

``--record FILE`` appends one JSON line per valid line sent:
``{"n": 12, "sent_ns": <time.time_ns() just before the write>, "values": {...}}``, so a
test can match stored readings to emitted ones. ``--noise P`` puts, with probability P
before each valid line, one broken item: random bytes, a line with a letter inside a
number, a truncated line, or (with a checksum) a line whose checksum is wrong. Each ends
with a line end, so noise never swallows the valid line after it.

Writes block while the pty is full (like hardware flow control), so nothing is lost in
the simulator; lines queued before the driver opens the port are discarded by pyserial's
open. ``--start-delay S`` waits S seconds after making the link before the first line, so
that a reader can open the port first; the first bytes are then a bare CR LF (a board's
boot output ends with one), so such a reader gets every line.

It prints ``{"event": "ready", ...}`` on stdout once the link exists, and
``{"event": "done", ...}`` at the end. With ``--count N`` it waits (up to
``--drain-timeout`` s) for the reader to take the last line, then exits, unless ``--stay``.
SIGTERM and SIGINT end it cleanly (exit 0) and remove the link.
"""

import argparse
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TextIO, get_args

import orjson

from contract.wire import check_value_name
from sensors.pty_link import PtyLink, PtyLinkError
from sensors.text_line.checksum import ChecksumKind, append

DEFAULT_COLUMNS = ("moisture_pct", "temp_c", "ec_us_cm")
COUNTER = "counter"

# (name suffix, low, high); the first suffix that matches picks the range.
_RANGES: tuple[tuple[str, float, float], ...] = (
    ("_us_cm", 0.0, 3000.0),
    ("_mg_kg", 0.0, 400.0),
    ("_hpa", 950.0, 1050.0),
    ("_pct", 0.0, 100.0),
    ("_deg", 0.0, 360.0),
    ("_lux", 0.0, 100_000.0),
    ("_mm", 0.0, 50.0),
    ("_ms", 0.0, 25.0),
    ("_c", -10.0, 35.0),
    ("ph", 3.0, 9.5),
)
_DEFAULT_RANGE = (0.0, 100.0)


class _Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the write loop."""


def value_range(name: str) -> tuple[float, float]:
    """Plausible (low, high) for a value name, from its unit suffix."""
    for suffix, low, high in _RANGES:
        if name == suffix.lstrip("_") or name.endswith(suffix):
            return low, high
    return _DEFAULT_RANGE


class LineMaker:
    """Makes the lines: random-walk values, formatted as csv, kv or json, with a checksum.

    ``columns`` are the value names in line order; ``counter`` is put first if missing.
    """

    def __init__(
        self,
        columns: Sequence[str],
        line_format: str = "csv",
        checksum: ChecksumKind = "none",
        seed: int = 1,
    ):
        self.columns = list(columns) if COUNTER in columns else [COUNTER, *columns]
        self.format = line_format
        self.checksum: ChecksumKind = checksum
        self.rng = random.Random(seed)
        self.count = 0
        self._state: dict[str, float] = {}
        for name in self.columns:
            low, high = value_range(name)
            self._state[name] = self.rng.uniform(low + (high - low) / 4, high - (high - low) / 4)

    def next_values(self) -> dict[str, float]:
        """The next reading, in column order: the counter and one random-walk step of the rest."""
        self.count += 1
        values: dict[str, float] = {}
        for name in self.columns:
            if name == COUNTER:
                values[name] = float(self.count)
                continue
            low, high = value_range(name)
            value = self._state[name] + self.rng.gauss(0.0, (high - low) * 0.01)
            if value < low:
                value = 2 * low - value
            if value > high:
                value = 2 * high - value
            self._state[name] = value
            values[name] = round(value, 2)
        return values

    def _texts(self, values: dict[str, float]) -> list[tuple[str, str]]:
        return [
            (name, str(int(value)) if name == COUNTER else f"{value:.2f}")
            for name, value in values.items()
        ]

    def _join(self, texts: list[tuple[str, str]]) -> bytes:
        if self.format == "csv":
            return ",".join(text for _, text in texts).encode()
        if self.format == "kv":
            return ",".join(f"{name}={text}" for name, text in texts).encode()
        return b"{" + b",".join(b'"%s":%s' % (n.encode(), t.encode()) for n, t in texts) + b"}"

    def line(self, values: dict[str, float]) -> bytes:
        """The bytes of one valid line for ``values``, with checksum and CR LF."""
        return append(self.checksum, self._join(self._texts(values))) + b"\r\n"

    def noise(self, values: dict[str, float]) -> bytes:
        """One broken item that the driver must reject; ends with a line end."""
        kinds = ["bytes", "letter", "truncated"] + (["checksum"] if self.checksum != "none" else [])
        kind = self.rng.choice(kinds)
        if kind == "bytes":
            return self.rng.randbytes(self.rng.randint(1, 80)) + b"\n"
        texts = self._texts(values)
        if kind == "letter":
            i = self.rng.randrange(len(texts))
            name, text = texts[i]
            texts[i] = (name, text[:1] + self.rng.choice("xX#?") + text[1:])
            return append(self.checksum, self._join(texts)) + b"\r\n"
        joined = self._join(texts)
        if kind == "truncated":
            # Cut inside the last column (csv: one column short) or the last key (kv: a pair
            # without '='); a cut JSON object never parses.
            last = joined.rfind(b",")
            cut = last if self.format == "csv" else last + 2
            return joined[: max(cut, 1)] + b"\r\n"
        good = append(self.checksum, joined)
        bad_digit = b"0" if good[-1:] != b"0" else b"1"
        return good[:-1] + bad_digit + b"\r\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Ignore a second signal, so that it cannot interrupt the cleanup (removing the link).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sensors.text_line.simulator",
        description="Print microcontroller-style reading lines on a pty (see module docstring).",
    )
    parser.add_argument("--link", required=True, help="symlink path to create for the pty slave")
    parser.add_argument("--format", choices=["csv", "kv", "json"], default="csv")
    parser.add_argument("--rate", type=float, default=10.0, help="lines/s; 0 = as fast as possible")
    parser.add_argument("--count", type=int, default=0, help="valid lines to send; 0 = forever")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--columns",
        default=",".join(DEFAULT_COLUMNS),
        help="comma-separated value names; 'counter' goes first unless listed elsewhere",
    )
    parser.add_argument(
        "--start-delay", type=float, default=0.0, help="seconds to wait before the first line"
    )
    parser.add_argument(
        "--start-file",
        help="wait until this file exists before the first line (after --start-delay): a "
        "test creates it once the reader has opened the port",
    )
    parser.add_argument("--record", help="append one JSON line per valid line sent to this file")
    parser.add_argument("--noise", type=float, default=0.0, help="probability of noise per line")
    parser.add_argument("--checksum", choices=list(get_args(ChecksumKind)), default="none")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--stay", action="store_true", help="keep the pty open after --count")
    args = parser.parse_args(argv)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    try:
        for name in columns:
            check_value_name(name)
    except ValueError as err:
        parser.error(f"--columns: {err}")
    if len(set(columns)) != len(columns):
        parser.error(f"--columns: {args.columns!r} names a column twice")
    if COUNTER not in columns:
        columns.insert(0, COUNTER)
    if not math.isfinite(args.start_delay) or args.start_delay < 0:
        parser.error(f"--start-delay {args.start_delay} must be 0 or more seconds")
    if not math.isfinite(args.rate) or args.rate < 0:
        parser.error(f"--rate {args.rate} must be 0 (unpaced) or a positive number of lines/s")
    if not 0.0 <= args.noise <= 1.0:
        parser.error(f"--noise {args.noise} must be a probability between 0 and 1")
    if args.count < 0:
        parser.error(f"--count {args.count} must be 0 (forever) or more")
    args.columns = columns
    return args


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


@dataclass
class Progress:
    sent: int = 0
    """Valid lines written."""
    noise: int = 0
    """Noise items written."""


def run(args: argparse.Namespace, link: PtyLink, record: TextIO | None, progress: Progress) -> None:
    """Send lines until ``--count`` is reached (forever for 0), counting them in ``progress``."""
    maker = LineMaker(args.columns, args.format, args.checksum, args.seed)
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    # A board's boot output ends with a line end; without one the driver would rightly drop
    # the first line as partial even when it opened the port during --start-delay.
    _write_all(link.master_fd, b"\r\n")
    next_at = time.monotonic()
    while args.count == 0 or progress.sent < args.count:
        if period:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                next_at = time.monotonic()  # stalled (no reader): resume pacing, do not burst
            next_at += period
        values = maker.next_values()
        if args.noise and maker.rng.random() < args.noise:
            _write_all(link.master_fd, maker.noise(values))
            progress.noise += 1
        data = maker.line(values)
        sent_ns = time.time_ns()
        _write_all(link.master_fd, data)
        progress.sent += 1
        if record is not None:
            record.write(
                orjson.dumps({"n": maker.count, "sent_ns": sent_ns, "values": values}).decode()
                + "\n"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    progress = Progress()
    reason = "count"
    try:
        with (
            PtyLink(args.link) as link,
            open(args.record, "a", buffering=1, encoding="utf-8")
            if args.record
            else open(os.devnull, "w", encoding="utf-8") as record,
        ):
            _emit(
                "ready",
                port=link.port,
                slave=link.slave_path,
                format=args.format,
                columns=args.columns,
                checksum=args.checksum,
            )
            try:
                time.sleep(args.start_delay)
                while args.start_file and not os.path.exists(args.start_file):
                    time.sleep(0.01)
                run(args, link, record if args.record else None, progress)
                drained = link.wait_drained(args.drain_timeout)
                if not drained:
                    print(
                        f"simulator: {link.unread_bytes()} bytes still unread after "
                        f"{args.drain_timeout} s",
                        file=sys.stderr,
                    )
                while args.stay:
                    time.sleep(3600)
            except _Stop as stop:
                reason = str(stop)
    except _Stop as stop:
        reason = str(stop)
    except PtyLinkError as err:
        print(f"simulator: {err}", file=sys.stderr)
        return 2
    _emit("done", reason=reason, sent=progress.sent, noise=progress.noise)
    return 0


if __name__ == "__main__":
    sys.exit(main())
