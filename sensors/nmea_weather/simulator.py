"""An NMEA 0183 weather station printing sentences on a pty.

    python -m sensors.nmea_weather.simulator --link /tmp/weather --rate 1 \\
        --sentences MDA,MWV,XDR --seed 1 --record sent.jsonl

Each cycle (``--rate`` cycles/s) sends one sentence of each type in ``--sentences``, from
one random-walk state of the weather: ``$WIMDA`` (pressure in inHg and bar, air
temperature, humidity, dew point, wind direction true and magnetic, wind speed in knots
and m/s; water temperature and absolute humidity left empty: "not measured"), ``$WIMWV``
(true wind angle, speed in m/s, status A) and ``$WIXDR`` (air temperature, pressure in
bar, humidity as quadruples). With the defaults the sentences match ``sample.toml``.

``--record FILE`` appends one JSON line per valid sentence sent: ``{"n": cycle,
"sentence": "MDA", "sent_ns": ..., "values": {...}}`` (values in the driver's names and
units). ``--noise P`` puts, with probability P before each sentence, one broken item that
the driver must reject: random bytes, a wrong checksum, a letter inside a number, or an
MWV with status V. Each ends with CR LF, so noise never swallows the sentence after it.

It prints ``{"event": "ready", ...}`` once the link exists and ``{"event": "done", ...}``
at the end; with ``--count N`` it stops after N cycles (waiting up to ``--drain-timeout``
s for the reader), unless ``--stay``. SIGTERM and SIGINT end it cleanly (exit 0).
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
from typing import TextIO

import orjson

from sensors.nmea_weather.sentences import (
    INHG_TO_HPA,
    SENTENCE_TYPES,
    parse,
    split_sentence,
    with_checksum,
)
from sensors.pty_link import PtyLink, PtyLinkError

TALKER = "WI"


class _Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the write loop."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


# name -> (low, high, step sigma)
_WEATHER: dict[str, tuple[float, float, float]] = {
    "pressure_hpa": (980.0, 1040.0, 0.3),
    "air_temp_c": (-10.0, 38.0, 0.2),
    "humidity_pct": (15.0, 100.0, 0.8),
    "wind_dir_deg": (0.0, 359.9, 8.0),
    "wind_ms": (0.0, 20.0, 0.4),
}


class Station:
    """The weather as a random walk, and the sentences that describe it."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.state = {
            name: self.rng.uniform(low + (high - low) / 4, high - (high - low) / 4)
            for name, (low, high, _) in _WEATHER.items()
        }

    def step(self) -> None:
        for name, (low, high, sigma) in _WEATHER.items():
            value = self.state[name] + self.rng.gauss(0.0, sigma)
            if name == "wind_dir_deg":
                value %= 360.0
            else:
                value = min(max(value, low), high)
            self.state[name] = value

    def body(self, kind: str) -> str:
        """The text between ``$`` and ``*`` of one sentence of ``kind`` for the current state."""
        s = self.state
        hpa, air, hum = s["pressure_hpa"], s["air_temp_c"], s["humidity_pct"]
        direction, wind = s["wind_dir_deg"], s["wind_ms"]
        dew = air - (100.0 - hum) / 5.0
        if kind == "MDA":
            fields = [
                f"{hpa / INHG_TO_HPA:.4f}", "I", f"{hpa / 1000:.4f}", "B",
                f"{air:.1f}", "C", "", "", f"{hum:.1f}", "", f"{dew:.1f}", "C",
                f"{direction:.1f}", "T", f"{(direction - 3.0) % 360:.1f}", "M",
                f"{wind / (1852 / 3600):.1f}", "N", f"{wind:.1f}", "M",
            ]  # fmt: skip
        elif kind == "MWV":
            fields = [f"{direction:.1f}", "T", f"{wind:.1f}", "M", "A"]
        else:
            fields = [
                "C", f"{air:.1f}", "C", "TempAir",
                "P", f"{hpa / 1000:.5f}", "B", "Barometer",
                "H", f"{hum:.1f}", "P", "RelHumidity",
            ]  # fmt: skip
        return ",".join([f"{TALKER}{kind}", *fields])

    def noise(self, body: str) -> bytes:
        """One broken item the driver must reject; ends with CR LF."""
        kind = self.rng.choice(["bytes", "checksum", "letter", "void"])
        if kind == "bytes":
            return self.rng.randbytes(self.rng.randint(1, 80)) + b"\r\n"
        if kind == "void":
            return with_checksum(f"{TALKER}MWV,{self.state['wind_dir_deg']:.1f},T,,M,V")
        if kind == "letter":
            digits = [i for i, c in enumerate(body) if c.isdigit() and i > 6]
            i = self.rng.choice(digits)
            return with_checksum(body[:i] + "x" + body[i + 1 :])
        good = with_checksum(body)
        wrong = b"0" if good[-3:-2] != b"0" else b"1"
        return good[:-3] + wrong + b"\r\n"


def expected_values(body: str) -> dict[str, float]:
    """What the driver (default config) reads from ``$body*hh``."""
    split = split_sentence(with_checksum(body), True)
    assert not isinstance(split, str), split
    parsed, _ = parse(split[0], split[1], {})
    assert not isinstance(parsed, str), parsed
    return parsed


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass
class Progress:
    cycles: int = 0
    sent: int = 0
    noise: int = 0


def run(args: argparse.Namespace, link: PtyLink, record: TextIO | None, progress: Progress) -> None:
    station = Station(args.seed)
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    _write_all(link.master_fd, b"\r\n")
    next_at = time.monotonic()
    while args.count == 0 or progress.cycles < args.count:
        if period:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                next_at = time.monotonic()
            next_at += period
        station.step()
        progress.cycles += 1
        for kind in args.sentences:
            body = station.body(kind)
            if args.noise and station.rng.random() < args.noise:
                _write_all(link.master_fd, station.noise(body))
                progress.noise += 1
            sent_ns = time.time_ns()
            _write_all(link.master_fd, with_checksum(body))
            progress.sent += 1
            if record is not None:
                entry = {
                    "n": progress.cycles,
                    "sentence": kind,
                    "sent_ns": sent_ns,
                    "values": expected_values(body),
                }
                record.write(orjson.dumps(entry).decode() + "\n")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sensors.nmea_weather.simulator",
        description="An NMEA 0183 weather station on a pty (see the module docstring).",
    )
    parser.add_argument("--link", required=True, help="symlink path to create for the pty slave")
    parser.add_argument("--rate", type=float, default=1.0, help="cycles/s; 0 = unpaced")
    parser.add_argument("--sentences", default=",".join(SENTENCE_TYPES))
    parser.add_argument("--count", type=int, default=0, help="cycles to send; 0 = forever")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.0, help="probability of noise per line")
    parser.add_argument("--record", help="append one JSON line per valid sentence sent")
    parser.add_argument("--start-delay", type=float, default=0.0)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--stay", action="store_true", help="keep the pty open after --count")
    args = parser.parse_args(argv)
    sentences = [s.strip().upper() for s in args.sentences.split(",") if s.strip()]
    unknown = [s for s in sentences if s not in SENTENCE_TYPES]
    if not sentences or unknown:
        parser.error(f"--sentences {args.sentences!r}: use some of {','.join(SENTENCE_TYPES)}")
    args.sentences = list(dict.fromkeys(sentences))
    if not math.isfinite(args.rate) or args.rate < 0:
        parser.error(f"--rate {args.rate} must be 0 (unpaced) or a positive number of cycles/s")
    if not 0.0 <= args.noise <= 1.0:
        parser.error(f"--noise {args.noise} must be a probability between 0 and 1")
    if args.count < 0:
        parser.error(f"--count {args.count} must be 0 (forever) or more")
    if not math.isfinite(args.start_delay) or args.start_delay < 0:
        parser.error(f"--start-delay {args.start_delay} must be 0 or more seconds")
    return args


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    progress = Progress()
    reason = "count"
    try:
        with (
            PtyLink(args.link) as link,
            open(args.record or os.devnull, "a", buffering=1, encoding="utf-8") as record,
        ):
            _emit("ready", port=link.port, slave=link.slave_path, sentences=args.sentences)
            try:
                time.sleep(args.start_delay)
                run(args, link, record if args.record else None, progress)
                if not link.wait_drained(args.drain_timeout):
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
    _emit("done", reason=reason, cycles=progress.cycles, sent=progress.sent, noise=progress.noise)
    return 0


if __name__ == "__main__":
    sys.exit(main())
