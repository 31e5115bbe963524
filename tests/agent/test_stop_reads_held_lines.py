"""A stopping agent keeps the lines its busy ports hold back (``read_window``).

A busy streaming port is read once per ``read_window``, so at a stop up to a window of lines
can sit in the tty buffer. The port worker reads them before it closes the port, and the
committer commits after the workers are done (agent/scheduler.py ``_read_last``,
agent/service.py ``_committer``).
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from devstack.stack import free_port
from tests.support.procs import (
    farmtel,
    read_records,
    release_when_open,
    started_text_line_simulator,
    wait_until,
    write_toml,
)

LINES = 40


def test_lines_held_by_the_read_window_are_committed_at_a_stop(tmp_path: Path) -> None:
    sent = tmp_path / "sent.jsonl"
    go = tmp_path / "go"
    sim, link = started_text_line_simulator(
        tmp_path, ["counter", "temp_c"], rate=50, count=LINES, start_file=go, extra=["--stay"]
    )
    conf = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {"plantation": "hlj-stop-1", "id": "gw-stop", "state_dir": str(tmp_path)},
            # No broker: the readings stay in the outbox, where the test counts them.
            "mqtt": {"host": "127.0.0.1", "port": free_port()},
            "sensors": [
                {
                    "id": "s-1",
                    "field": "north",
                    "driver": "text_line",
                    "port": str(link),
                    "columns": ["counter", "temp_c"],
                    "read_window": 1.0,  # the longest: most lines held at the stop
                }
            ],
        },
    )
    agent = farmtel("agent", ["agent", "run", "-c", str(conf)], tmp_path / "agent.log")
    try:
        release_when_open(agent, ["s-1"], go)
        wait_until(
            lambda: sent.exists() and len(read_records(sent)) >= LINES,
            30,
            f"the simulator to send {LINES} lines",
            interval=0.02,
        )
        agent.popen.send_signal(signal.SIGTERM)  # within a window of the last line
        t0 = time.monotonic()
        rc = agent.popen.wait(30)
    finally:
        if agent.alive():
            agent.stop()
        sim.stop()
    assert rc == 0, agent.output()[-2000:]
    assert time.monotonic() - t0 < 15
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        stored = db.execute("SELECT total(n) FROM readings").fetchone()[0]
    assert stored == LINES, agent.output()[-2000:]
