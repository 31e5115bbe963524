"""Start farmtel's own processes (agent, ingest, simulators) for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``pred`` until it returns something truthy; fail the test naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


class Proc:
    """A child process with its output in a log file; SIGTERM on stop."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FARMTEL_")}
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        self.popen = subprocess.Popen(
            argv, cwd=REPO, stdout=self._fh, stderr=subprocess.STDOUT, env=full_env
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
        self.popen.wait(10)

    def stop(self, timeout: float = 20) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            rc = self.popen.wait(10)
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM") from None
        finally:
            self._fh.close()
        return rc


def farmtel(name: str, args: Iterable[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    return Proc(name, [sys.executable, "-m", "cli", *args], log, env)


def run_cli(
    args: Iterable[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FARMTEL_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def text_line_simulator(
    link: Path,
    log: Path,
    columns: list[str],
    rate: float,
    count: int,
    record: Path,
    seed: int = 1,
    extra: list[str] | None = None,
) -> Proc:
    argv = [
        sys.executable,
        "-m",
        "sensors.text_line.simulator",
        "--link",
        str(link),
        "--format",
        "csv",
        "--columns",
        ",".join(columns),
        "--rate",
        str(rate),
        "--count",
        str(count),
        "--seed",
        str(seed),
        "--record",
        str(record),
        *(extra or []),
    ]
    return Proc(f"sim:{link.name}", argv, log)


def started_text_line_simulator(
    folder: Path,
    columns: list[str],
    rate: float,
    count: int,
    start_delay: float = 0.0,
    link_name: str = "tty-soil",
    extra: list[str] | None = None,
    start_file: Path | None = None,
) -> tuple[Proc, Path]:
    """A :func:`text_line_simulator` whose pty ``folder/link_name`` exists (waited for), with
    its log in ``folder/sim.log`` and the lines it sent in ``folder/sent.jsonl``; the
    simulator process and the pty's path. With ``start_file`` it sends its first line only
    once that file exists: see :func:`release_when_open`."""
    link = folder / link_name
    waits = ["--start-file", str(start_file)] if start_file is not None else []
    sim = text_line_simulator(
        link,
        folder / "sim.log",
        columns,
        rate=rate,
        count=count,
        record=folder / "sent.jsonl",
        extra=["--start-delay", str(start_delay), *waits, *(extra or [])],
    )
    wait_until(link.exists, 10, "the simulator pty")
    return sim, link


def release_when_open(
    agent: Proc, sensors: Iterable[str], start_file: Path, timeout: float = 60
) -> None:
    """Create ``start_file`` once ``agent`` has logged each of ``sensors``' ports open.

    A board's lines sent before the agent opens its port are discarded by the open (a real
    board's too), so a simulator that starts on a timer loses lines when the agent starts
    slowly on a loaded box; one that waits for this file does not."""
    for sensor in sensors:
        needle = f"sensor port open sensor={sensor} "
        wait_until(lambda n=needle: n in agent.output(), timeout, f"the agent to open {sensor}")
    start_file.touch()


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def write_toml(path: Path, tables: dict[str, Any]) -> Path:
    """A small TOML writer for test configs: tables of scalars and arrays of tables."""
    out = []
    for name, body in tables.items():
        if isinstance(body, list):
            for item in body:
                out.append(f"[[{name}]]")
                out += [f"{k} = {toml_value(v)}" for k, v in item.items()]
                out.append("")
        else:
            out.append(f"[{name}]")
            out += [f"{k} = {toml_value(v)}" for k, v in body.items()]
            out.append("")
    path.write_text("\n".join(out))
    return path
