"""SDI-12 sensors answering on a pty, as they would behind an SDI-12 adapter.

    python -m sensors.sdi12.simulator --link /tmp/sdi12 --address 0 --address 1 \\
        --profile teros12 --seed 1 --record sent.jsonl

Each ``--address`` is one sensor of ``--profile`` on the bus. It answers ``?!``, ``a!``,
``aI!``, ``aAb!`` (change address), ``aM!``/``aMC!`` (``a`` + ttt + n, then the service
request ``a`` CR LF after ``--ready-after`` s), ``aC!``/``aCC!`` (``a`` + ttt + nn, no
service request) and ``aD0!``..``aD9!``. Values are random walks inside the profile's
plausible ranges, printed with the profile's decimals. ``--split-values`` sends the first
value in D0 and the rest in D1 (real sensors split long answers the same way).

What a pty cannot show: the break (TIOCSBRK on a pty does nothing, so the simulator
answers without one) and the 7E1 framing (the pty runs 8-bit bytes; the simulator clears
the parity bit of what it reads and sends 7-bit ASCII).

``--fault crc`` sends a wrong CRC on D answers, ``silence`` never answers, ``garbage``
answers random bytes; ``--fault-rate P`` applies the fault to a fraction P of the answers
(default all).
``--record FILE`` appends one JSON line per measurement whose values were all sent:
``{"n", "address", "sent_ns", "raw": [...], "values": {...}}`` (values as the driver's
profile converts them), so a test can match stored readings to sent ones.

It prints ``{"event": "ready", ...}`` once the link exists and ``{"event": "done", ...}`` on
SIGTERM/SIGINT, which end it cleanly (exit 0) and remove the link.
"""

import argparse
import json
import os
import random
import select
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO

import orjson

from contract.wire import check_value_name
from sensors.pty_link import PtyLink, PtyLinkError
from sensors.sdi12.frames import ADDRESSES, check_address, format_value, with_crc
from sensors.sdi12.profiles import GENERIC, PROFILES, Profile, generic

FAULTS = ("none", "crc", "silence", "garbage")
MAX_COMMAND_BYTES = 16
"""Longest command kept: bytes before it (noise, a break read as NUL) are dropped."""


class _Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the loop."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


@dataclass
class SimulatedSensor:
    """One sensor: its address, profile, random-walk state and the measurement it holds."""

    address: str
    profile: Profile
    rng: random.Random
    state: list[float] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    """The D responses' values of the last measurement (D0, D1 ...), without address/CRC."""
    raw: list[float] = field(default_factory=list)
    crc: bool = False
    measurements: int = 0
    recorded: bool = True

    def __post_init__(self) -> None:
        for spec in self.profile.raw:
            span = spec.high - spec.low
            self.state.append(self.rng.uniform(spec.low + span / 4, spec.high - span / 4))

    def measure(self, split: bool) -> None:
        """Take a new measurement: step every value and lay it out in D responses."""
        texts = []
        self.raw = []
        for i, spec in enumerate(self.profile.raw):
            span = spec.high - spec.low
            value = self.state[i] + self.rng.gauss(0.0, span * 0.01)
            value = min(max(value, spec.low), spec.high)
            self.state[i] = value
            text = format_value(value, spec.decimals)
            texts.append(text)
            self.raw.append(float(text))
        self.data = [texts[0], b"".join(texts[1:])] if split else [b"".join(texts)]
        self.measurements += 1
        self.recorded = False


@dataclass
class Bus:
    """Every simulated sensor on the line, and what the simulator has done."""

    sensors: dict[str, SimulatedSensor]
    args: argparse.Namespace
    rng: random.Random
    record: TextIO | None
    answered: int = 0
    faults: int = 0
    service_requests: list[tuple[float, str]] = field(default_factory=list)

    def answer(self, command: bytes) -> bytes | None:
        """The bytes to send for ``command`` (without the '!'), or None to stay silent."""
        text = command.decode("ascii", "replace")
        if text == "?":
            return (next(iter(self.sensors)) + "\r\n").encode() if self.sensors else None
        if not text or text[0] not in self.sensors:
            return None
        sensor = self.sensors[text[0]]
        rest = text[1:]
        body: bytes | None = None
        a = sensor.address.encode()
        if rest == "":
            body = a
        elif rest == "I":
            model = self.args.profile[:6].upper()
            body = a + b"14FARMTEL " + f"{model:<6}".encode() + b"100SIM" + a
        elif len(rest) == 2 and rest[0] == "A" and rest[1] in ADDRESSES:
            if rest[1] not in self.sensors:
                del self.sensors[sensor.address]
                sensor.address = rest[1]
                self.sensors[rest[1]] = sensor
            body = rest[1].encode()
        elif rest in ("M", "MC", "C", "CC"):
            sensor.measure(self.args.split_values)
            sensor.crc = rest.endswith("C") and len(rest) == 2
            count = len(sensor.profile.raw)
            digits = 2 if rest[0] == "C" else 1
            body = a + f"{self.args.ttt:03d}{count:0{digits}d}".encode()
            if rest[0] == "M" and self.args.ttt:
                due = time.monotonic() + self.args.ready_after
                self.service_requests.append((due, sensor.address))
        elif len(rest) == 2 and rest[0] == "D" and rest[1].isdigit():
            index = int(rest[1])
            values = sensor.data[index] if index < len(sensor.data) else b""
            body = a + values
            if sensor.crc:
                body = with_crc(body)
            if index == len(sensor.data) - 1:
                self._record(sensor)
        if body is None:
            return None
        is_data = rest[:1] == "D"
        return self._faulty(body, is_data and sensor.crc) + b"\r\n"

    def _faulty(self, body: bytes, has_crc: bool) -> bytes:
        """``body`` with the fault applied (crc: only to answers that carry a CRC)."""
        fault = self.args.fault
        if fault == "none" or (fault == "crc" and not has_crc):
            return body
        if self.rng.random() >= self.args.fault_rate:
            return body
        self.faults += 1
        if fault == "crc":
            last = body[-1] ^ 0x01
            return body[:-1] + bytes([last])
        if fault == "garbage":
            return bytes(self.rng.randrange(0x20, 0x7F) for _ in range(self.rng.randint(1, 30)))
        return body

    def _record(self, sensor: SimulatedSensor) -> None:
        if sensor.recorded or self.record is None:
            return
        sensor.recorded = True
        entry = {
            "n": sensor.measurements,
            "address": sensor.address,
            "sent_ns": time.time_ns(),
            "raw": sensor.raw,
            "values": sensor.profile.convert(sensor.raw),
        }
        self.record.write(orjson.dumps(entry).decode() + "\n")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(bus: Bus, link: PtyLink) -> None:
    """Answer commands until a signal stops it."""
    pending = b""
    while True:
        timeout = 1.0
        if bus.service_requests:
            timeout = max(0.0, min(due for due, _ in bus.service_requests) - time.monotonic())
        readable, _, _ = select.select([link.master_fd], [], [], timeout)
        now = time.monotonic()
        for due, address in sorted(bus.service_requests):
            if due <= now:
                bus.service_requests.remove((due, address))
                if bus.args.fault != "silence":
                    _write_all(link.master_fd, address.encode() + b"\r\n")
        if not readable:
            continue
        chunk = os.read(link.master_fd, 4096)
        pending = (pending + bytes(b & 0x7F for b in chunk))[-4 * MAX_COMMAND_BYTES :]
        while (end := pending.find(b"!")) >= 0:
            command, pending = pending[:end][-MAX_COMMAND_BYTES:], pending[end + 1 :]
            # A break or line noise may leave bytes before the command: keep its tail only.
            command = command.lstrip(bytes(range(0x20)) + b"\x7f")
            if bus.args.fault == "silence" and bus.rng.random() < bus.args.fault_rate:
                bus.faults += 1
                continue
            reply = bus.answer(_command_tail(command))
            if reply is not None:
                time.sleep(bus.args.latency)
                _write_all(link.master_fd, reply)
                bus.answered += 1


def _command_tail(command: bytes) -> bytes:
    """The shortest valid-looking command at the end of ``command`` (noise before it)."""
    # Commands are 1 to 4 characters: ?, a, aI, aM, aMC, aD0, aAb, aCC. Take the longest
    # tail that starts with an address and parses; fall back to the whole command.
    for length in (4, 3, 2, 1):
        tail = command[-length:]
        if len(tail) == length and _known(tail):
            return tail
    return command


def _known(tail: bytes) -> bool:
    text = tail.decode("ascii", "replace")
    if text == "?":
        return True
    if not text or text[0] not in ADDRESSES:
        return False
    rest = text[1:]
    return (
        rest in ("", "I", "M", "MC", "C", "CC")
        or (len(rest) == 2 and rest[0] == "D" and rest[1].isdigit())
        or (len(rest) == 2 and rest[0] == "A" and rest[1] in ADDRESSES)
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sensors.sdi12.simulator",
        description="SDI-12 sensors answering on a pty (see the module docstring).",
    )
    parser.add_argument("--link", required=True, help="symlink path to create for the pty slave")
    parser.add_argument(
        "--address", action="append", help="address of one sensor (repeat for more; default 0)"
    )
    parser.add_argument("--profile", default="teros12", choices=[*sorted(PROFILES), GENERIC])
    parser.add_argument("--values", default="", help="generic profile: comma-separated names")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--split-values", action="store_true", help="spread values over D0, D1")
    parser.add_argument("--ttt", type=int, default=1, help="seconds announced by aM! (0-999)")
    parser.add_argument(
        "--ready-after", type=float, default=0.2, help="seconds until the service request"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--fault-rate", type=float, default=1.0, help="fraction of faulty answers")
    parser.add_argument("--record", help="append one JSON line per measurement sent to this file")
    args = parser.parse_args(argv)
    addresses = args.address or ["0"]
    try:
        for address in addresses:
            check_address(address)
    except ValueError as err:
        parser.error(f"--address: {err}")
    if len(set(addresses)) != len(addresses):
        parser.error(f"--address: {addresses} names an address twice")
    args.address = addresses
    values = [v.strip() for v in args.values.split(",") if v.strip()]
    if args.profile == GENERIC:
        if not values:
            parser.error("--profile generic needs --values name1,name2,...")
        try:
            for name in values:
                check_value_name(name)
        except ValueError as err:
            parser.error(f"--values: {err}")
    elif values:
        parser.error("--values applies to --profile generic only")
    args.values = values
    if not 0 <= args.ttt <= 999:
        parser.error(f"--ttt {args.ttt} must be 0 to 999 seconds")
    if args.ready_after < 0 or (args.ttt and args.ready_after > args.ttt):
        parser.error(f"--ready-after {args.ready_after} must be 0 to --ttt ({args.ttt}) seconds")
    if not 0.0 <= args.fault_rate <= 1.0:
        parser.error(f"--fault-rate {args.fault_rate} must be between 0 and 1")
    if not 0.0 <= args.latency <= 5.0:
        parser.error(f"--latency {args.latency} must be 0 to 5 seconds")
    return args


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    profile = generic(args.values) if args.profile == GENERIC else PROFILES[args.profile]
    rng = random.Random(args.seed)
    sensors = {
        a: SimulatedSensor(a, profile, random.Random(args.seed * 1000 + i))
        for i, a in enumerate(args.address)
    }
    reason = "signal"
    bus: Bus | None = None
    try:
        with (
            PtyLink(args.link) as link,
            open(args.record or os.devnull, "a", buffering=1, encoding="utf-8") as record,
        ):
            bus = Bus(sensors, args, rng, record if args.record else None)
            _emit(
                "ready",
                port=link.port,
                slave=link.slave_path,
                addresses=args.address,
                profile=args.profile,
            )
            try:
                serve(bus, link)
            except _Stop as stop:
                reason = str(stop)
    except _Stop as stop:
        reason = str(stop)
    except PtyLinkError as err:
        print(f"simulator: {err}", file=sys.stderr)
        return 2
    measurements = {s.address: s.measurements for s in sensors.values()}
    _emit(
        "done",
        reason=reason,
        answered=bus.answered if bus else 0,
        faults=bus.faults if bus else 0,
        measurements=measurements,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
