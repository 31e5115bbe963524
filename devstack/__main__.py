"""``python -m devstack start|stop|status|env [--state DIR]``: the dev stack from a shell.

``start`` leaves both servers running after it exits and prints ``export FARMTEL_...=...``
lines on stdout (progress goes to stderr), so a script can do::

    eval "$(python -m devstack start --state .state/devstack)"

Exit codes: 0 done / running, 1 error (message on stderr), 3 (status, env) not running.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devstack.stack import SERVER_NAMES, Stack, StackError, StackInfo

DEFAULT_STATE = Path(".state/devstack")
EXIT_NOT_RUNNING = 3


def _say(message: str) -> None:
    print(f"devstack: {message}", file=sys.stderr)


def _attached(state: Path) -> Stack | None:
    """The stack recorded in ``state/stack.json``, or None when there is none."""
    if not (state / "stack.json").exists():
        return None
    return Stack.attach(state)


def _all_running(stack: Stack) -> bool:
    return all(stack.running(name) for name in SERVER_NAMES)


def cmd_start(state: Path) -> int:
    previous = _attached(state)
    if previous is not None:
        if _all_running(previous):
            _say(f"already running in {previous.state_dir}")
            sys.stdout.write(previous.info().export_lines())
            return 0
        # Half a stack (one server died): stop what is left and start both afresh.
        previous.stop()
    info = Stack(state).start(detach=True)
    _say(
        f"mosquitto pid {info.mosquitto_pid} on {info.mqtt_host}:{info.mqtt_port}, "
        f"influxd pid {info.influxdb_pid} on {info.influx_url}; state in {info.state_dir}"
    )
    _say(f"stop with: python -m devstack stop --state {state}")
    sys.stdout.write(info.export_lines())
    return 0


def cmd_stop(state: Path) -> int:
    stack = _attached(state)
    if stack is None:
        _say(f"no stack recorded in {state} (nothing to stop)")
        return 0
    stack.stop()
    _update_pids(stack)
    _say(f"stopped the stack in {stack.state_dir}")
    return 0


def cmd_status(state: Path) -> int:
    stack = _attached(state)
    if stack is None:
        print(f"no stack recorded in {state}")
        return EXIT_NOT_RUNNING
    info = stack.info()
    where = {
        "mosquitto": f"mqtt://{info.mqtt_host}:{info.mqtt_port}",
        "influxdb": info.influx_url,
    }
    pids = {"mosquitto": info.mosquitto_pid, "influxdb": info.influxdb_pid}
    for name in SERVER_NAMES:
        state_text = f"running, pid {pids[name]}" if stack.running(name) else "not running"
        print(f"{name}: {state_text} ({where[name]})")
    return 0 if _all_running(stack) else EXIT_NOT_RUNNING


def cmd_env(state: Path) -> int:
    stack = _attached(state)
    if stack is None or not _all_running(stack):
        _say(f"no running stack in {state}; start one: python -m devstack start --state {state}")
        return EXIT_NOT_RUNNING
    sys.stdout.write(stack.info().export_lines())
    return 0


def _update_pids(stack: Stack) -> None:
    info = stack.info()
    StackInfo(info.mqtt_host, info.mqtt_port, info.influx_url, info.state_dir).write()


COMMANDS = {"start": cmd_start, "stop": cmd_stop, "status": cmd_status, "env": cmd_env}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="Private Mosquitto + InfluxDB on free 127.0.0.1 ports (dev and tests only).",
    )
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument(
        "--state",
        type=Path,
        default=DEFAULT_STATE,
        help=f"folder for config, data, logs and stack.json (default: {DEFAULT_STATE})",
    )
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args.state)
    except StackError as err:
        _say(f"error: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
