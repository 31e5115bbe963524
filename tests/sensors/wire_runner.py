"""Helpers for driver tests: bytes written on the far end of a real pty, read by a driver."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sensors.base import Driver, Sample, SensorConfig
from sensors.pty_link import PtyLink
from sensors.registry import make_driver

REPO = Path(__file__).resolve().parents[2]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:65536]) :]


def read_wire(
    config: SensorConfig, wire: bytes, *, idle: float = 0.3, limit: float = 60.0
) -> tuple[list[Sample], Counter[str], Driver]:
    """Open the driver on a fresh pty, write ``wire`` on the master end, read until idle.

    Reading stops once the writer has finished, nothing is left unread in the pty and one
    read of ``idle`` seconds brought no sample. ``limit`` only guards against a hang.
    """
    with PtyLink() as pty:
        driver = make_driver(config.model_copy(update={"port": pty.slave_path, "timeout": idle}))
        driver.open()
        writer = threading.Thread(target=_write_all, args=(pty.master_fd, wire), daemon=True)
        writer.start()
        samples: list[Sample] = []
        deadline = time.monotonic() + limit
        try:
            while True:
                writer_done = not writer.is_alive()
                got = driver.read()
                samples += got
                if not got and writer_done and pty.unread_bytes() == 0:
                    break
                assert time.monotonic() < deadline, f"driver still reading after {limit} s"
        finally:
            writer.join(limit)
            driver.close()
    return samples, Counter(driver.rejected), driver


class Simulator:
    """A driver's simulator process (``python -m <package>.simulator --link PATH ...``)."""

    def __init__(self, package: str, link: Path, *args: str):
        self.link = link
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"{package}.simulator", "--link", str(link), *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def ready(self, timeout: float = 20.0) -> dict[str, Any]:
        """Wait for the ``ready`` event line; fail with the simulator's stderr if none comes."""
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if readable else b""
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"simulator did not get ready: {err.decode(errors='replace')}")
        event: dict[str, Any] = json.loads(line)
        assert event["event"] == "ready", event
        return event

    def stop(
        self, timeout: float = 20.0, *, terminate: bool = True
    ) -> tuple[int, list[dict[str, Any]], str]:
        """SIGTERM it (or, with ``terminate=False``, wait for it to end by itself); return
        (exit code, the events it printed, its stderr)."""
        if terminate and self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"simulator did not end within {timeout} s") from None
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out = self.proc.stdout.read().decode()
        err = self.proc.stderr.read().decode(errors="replace")
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        return self.proc.returncode, events, err

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
