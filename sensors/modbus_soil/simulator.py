"""Modbus RTU soil probes on one simulated RS-485 bus (the master end of a pty).

    python -m sensors.modbus_soil.simulator --link /tmp/rs485 --profile soil_7in1 \\
        --address 1 --address 2 --seed 1 --fault crc:0.1 --fault silence:0.05

Each ``--address`` is one probe answering read requests (function 03/04) with the
profile's register map, as a real probe does: values are random walks by value name
(temperatures go below zero), encoded with the profile's types, scale and offset.
A request for another slave id gets no answer (another device's business); a request for
another function gets exception 1, one outside the map exception 2.

Faults, each ``KIND:PROBABILITY`` per answer: ``crc`` (last CRC byte flipped),
``exception`` (exception 4, slave device failure), ``silence`` (no answer), ``short``
(the answer cut in half). ``--noise P`` writes, with probability P, a burst of 1-64
random bytes before an answer and another after it.

Our own responder rather than pymodbus's server: faults must be injected on the bytes of
one answer, and the framing is 100 lines (sensors/modbus_soil/rtu.py); the tests check
the answers with pymodbus's client as an independent reader.

It prints ``{"event": "ready", ...}`` on stdout once the link exists and
``{"event": "done", "requests": n, "answers": n}`` when SIGTERM or SIGINT ends it (exit 0,
link removed). ``--record FILE`` appends one JSON line per valid answer:
``{"address": 1, "values": {...}}``.
"""

import argparse
import contextlib
import json
import os
import random
import select
import signal
import sys
import threading
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from sensors.modbus_soil import rtu
from sensors.modbus_soil.profiles import (
    BUILTIN_PROFILES,
    Profile,
    ProfileError,
    RegisterValue,
    builtin_profile,
)
from sensors.pty_link import PtyLink, PtyLinkError

FAULT_KINDS = ("crc", "exception", "silence", "short")

# (name suffix, low, high) of the random walks; first match wins.
_WALKS: tuple[tuple[str, float, float], ...] = (
    ("_temp_c", -5.0, 30.0),
    ("temp_c", -5.0, 30.0),
    ("_us_cm", 50.0, 3000.0),
    ("_mg_kg", 0.0, 400.0),
    ("_pct", 5.0, 60.0),
    ("ph", 4.0, 8.5),
)


def _walk_range(value: RegisterValue) -> tuple[float, float]:
    for suffix, low, high in _WALKS:
        if value.name.endswith(suffix):
            return low, high
    return 0.0, 100.0


@dataclass
class Probe:
    """One simulated probe: its slave id and current values (physical units)."""

    address: int
    profile: Profile
    rng: random.Random
    values: dict[str, float] = field(default_factory=dict)

    def step(self) -> dict[str, float]:
        """Move every value a little and return them, rounded to what the registers hold."""
        for value in self.profile.registers:
            low, high = _walk_range(value)
            current = self.values.get(value.name, self.rng.uniform(low, high))
            moved = current + self.rng.uniform(-0.05, 0.05) * (high - low)
            # What the registers can hold, as the driver will decode it.
            self.values[value.name] = value.decode(value.encode(min(high, max(low, moved))))
        return dict(self.values)


@dataclass
class Bus:
    """The probes on one bus and the faults to inject; :meth:`answer` is the whole protocol."""

    probes: dict[int, Probe]
    faults: dict[str, float] = field(default_factory=dict)
    noise: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    on_answer: Callable[[int, dict[str, float]], None] | None = None
    requests: int = 0
    answers: int = 0

    def _fault(self, kind: str) -> bool:
        return self.rng.random() < self.faults.get(kind, 0.0)

    def answer(self, request: rtu.Request) -> bytes | None:
        """The bytes on the line after ``request`` (None: no answer)."""
        self.requests += 1
        probe = self.probes.get(request.slave)
        if probe is None or self._fault("silence"):
            return None
        profile = probe.profile
        if request.function != profile.function:
            return rtu.exception_response(request.slave, request.function, 1)
        first = request.start - profile.start
        if first < 0 or request.count < 1 or first + request.count > profile.count:
            return rtu.exception_response(request.slave, request.function, 2)
        if self._fault("exception"):
            return rtu.exception_response(request.slave, request.function, 4)
        values = probe.step()
        words = profile.encode(values)[first : first + request.count]
        frame = rtu.register_response(request.slave, request.function, words)
        if self._fault("crc"):
            frame = frame[:-1] + bytes((frame[-1] ^ 0x5A,))
        elif self._fault("short"):
            frame = frame[: len(frame) // 2]
        else:
            self.answers += 1
            if self.on_answer is not None:
                self.on_answer(request.slave, values)
        if self.noise and self.rng.random() < self.noise:
            before = self.rng.randbytes(self.rng.randint(1, 64))
            after = self.rng.randbytes(self.rng.randint(1, 64))
            frame = before + frame + after
        return frame

    def serve(self, master_fd: int, stop: threading.Event) -> None:
        """Answer requests read from ``master_fd`` until ``stop`` is set or the pty closes."""
        buffer = bytearray()
        while not stop.is_set():
            readable, _, _ = select.select([master_fd], [], [], 0.05)
            if not readable:
                continue
            try:
                chunk = os.read(master_fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while True:
                request, consumed = rtu.find_request(buffer)
                del buffer[:consumed]
                if request is None:
                    break
                reply = self.answer(request)
                if reply:
                    _write_all(master_fd, reply)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def parse_fault(text: str) -> tuple[str, float]:
    """``crc:0.1`` -> ("crc", 0.1); raise ValueError saying what is allowed."""
    kind, _, probability = text.partition(":")
    try:
        chance = float(probability)
    except ValueError:
        chance = -1.0
    if kind not in FAULT_KINDS or not 0.0 <= chance <= 1.0:
        raise ValueError(
            f"--fault {text!r} must be KIND:PROBABILITY with KIND one of "
            f"{', '.join(FAULT_KINDS)} and PROBABILITY in 0..1, e.g. crc:0.1"
        )
    return kind, chance


def load_profile(name: str, profile_file: str | None) -> Profile:
    """The built-in profile ``name``, or the one in ``profile_file`` (TOML of a Profile)."""
    if profile_file is None:
        return builtin_profile(name)
    try:
        return Profile.model_validate(tomllib.loads(Path(profile_file).read_text()))
    except (OSError, ValueError) as err:
        raise ProfileError(f"--profile-file {profile_file!r}: {err}") from err


class _Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler."""


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m sensors.modbus_soil.simulator")
    parser.add_argument("--link", required=True, help="symlink path of the slave end")
    parser.add_argument("--profile", default="soil_7in1", choices=BUILTIN_PROFILES)
    parser.add_argument("--profile-file", help="TOML file holding a custom profile")
    parser.add_argument("--address", type=int, action="append", help="slave id (repeatable)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--fault", action="append", default=[], help="KIND:PROBABILITY")
    parser.add_argument("--noise", type=float, default=0.0, help="probability of noise bursts")
    parser.add_argument("--record", help="append one JSON line per valid answer")
    args = parser.parse_args(argv)
    addresses = args.address or [1]
    bad = [a for a in addresses if not 1 <= a <= 247]
    if bad:
        parser.error(f"--address {bad} must be slave ids 1-247")
    try:
        faults = dict(parse_fault(text) for text in args.fault)
        profile = load_profile(args.profile, args.profile_file)
    except ValueError as err:
        parser.error(str(err))
    rng = random.Random(args.seed)
    record = open(args.record, "a", encoding="utf-8") if args.record else None  # noqa: SIM115

    def recorded(address: int, values: dict[str, float]) -> None:
        if record is not None:
            record.write(json.dumps({"address": address, "values": values}) + "\n")
            record.flush()

    bus = Bus(
        probes={a: Probe(a, profile, random.Random(rng.random())) for a in addresses},
        faults=faults,
        noise=args.noise,
        rng=rng,
        on_answer=recorded,
    )

    def handle(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    try:
        with PtyLink(args.link) as pty:
            event = {"event": "ready", "link": args.link, "addresses": addresses}
            print(json.dumps(event), file=out, flush=True)
            with contextlib.suppress(_Stop):
                bus.serve(pty.master_fd, threading.Event())
    except PtyLinkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if record is not None:
            record.close()
    done = {"event": "done", "requests": bus.requests, "answers": bus.answers}
    print(json.dumps(done), file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
