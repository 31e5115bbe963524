"""The dev stack: real Mosquitto and InfluxDB started, checked, crashed and restarted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import devstack.stack as stack_module
from devstack import ServerNotInstalled, Stack, StackError, StackInfo, influx_ping, mqtt_connack
from tests.support.procs import REPO

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer exists (not even as a zombie)."""
    return not Path(f"/proc/{pid}").exists()


def test_start_writes_config_and_stack_json(private_stack: Stack) -> None:
    info = private_stack.info()
    assert mqtt_connack(info.mqtt_host, info.mqtt_port)
    assert influx_ping(info.influx_url)
    assert StackInfo.load(info.state_dir / "stack.json") == info
    conf = (info.state_dir / "mosquitto" / "mosquitto.conf").read_text()
    assert f"listener {info.mqtt_port} 127.0.0.1" in conf
    assert "max_queued_messages 100000" in conf
    assert ("user root" in conf) == (os.geteuid() == 0)
    influx_conf = (info.state_dir / "influxdb" / "influxdb.conf").read_text()
    assert f'bind-address = "127.0.0.1:{info.influx_url.rsplit(":", 1)[1]}"' in influx_conf
    assert info.env() == {
        "FARMTEL_MQTT__HOST": "127.0.0.1",
        "FARMTEL_MQTT__PORT": str(info.mqtt_port),
        "FARMTEL_INFLUXDB__URL": info.influx_url,
    }
    assert info.export_lines().splitlines()[1] == f"export FARMTEL_MQTT__PORT={info.mqtt_port}"


def test_stop_reaps_both_servers(tmp_path: Path) -> None:
    servers = Stack(tmp_path)
    servers.start()
    pids = [servers.mosquitto_pid, servers.influxdb_pid]
    servers.stop()
    assert all(pid is not None and _gone(pid) for pid in pids)
    assert servers.mosquitto_pid is None
    assert servers.influxdb_pid is None


def test_broker_crash_and_restart_keep_the_port(private_stack: Stack) -> None:
    port = private_stack.mqtt_port
    first = private_stack.mosquitto_pid
    private_stack.kill_mosquitto()
    assert not private_stack.running("mosquitto")
    assert not mqtt_connack("127.0.0.1", port, timeout=0.5)
    private_stack.start_mosquitto()
    assert mqtt_connack("127.0.0.1", port)
    private_stack.restart_mosquitto(graceful=False)
    assert mqtt_connack("127.0.0.1", port)
    assert private_stack.mosquitto_pid not in (None, first)
    recorded = json.loads((private_stack.state_dir / "stack.json").read_text())
    assert recorded["mosquitto_pid"] == private_stack.mosquitto_pid


def test_pause_and_resume(private_stack: Stack) -> None:
    port = private_stack.mqtt_port
    private_stack.pause("mosquitto")
    try:
        assert not mqtt_connack("127.0.0.1", port, timeout=0.3)
        assert private_stack.running("mosquitto")
    finally:
        private_stack.resume("mosquitto")
    assert mqtt_connack("127.0.0.1", port)


def test_stop_works_on_a_paused_server(tmp_path: Path) -> None:
    servers = Stack(tmp_path)
    servers.start()
    pid = servers.influxdb_pid
    servers.pause("influxdb")
    servers.stop()
    assert pid is not None and _gone(pid)


def test_a_bad_config_fails_with_the_server_log(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("no_such_option true\n")
    with pytest.raises(StackError) as caught:
        Stack(tmp_path / "state", mosquitto_conf=bad).start()
    message = str(caught.value)
    assert "mosquitto exited with code" in message
    assert "no_such_option" in message


def test_missing_server_says_to_run_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(stack_module, "MOSQUITTO_BIN", "/nonexistent/mosquitto")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerNotInstalled, match=r"run \./scripts/setup\.sh"):
        Stack(tmp_path).start()


def _devstack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_start_status_env_stop(tmp_path: Path) -> None:
    state = str(tmp_path / "cli")
    started = _devstack("start", "--state", state)
    try:
        assert started.returncode == 0, started.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines()
        )
        port = int(exports["FARMTEL_MQTT__PORT"])
        # The servers outlive the command that started them.
        assert mqtt_connack("127.0.0.1", port)
        assert influx_ping(exports["FARMTEL_INFLUXDB__URL"])
        status = _devstack("status", "--state", state)
        assert status.returncode == 0
        assert "mosquitto: running" in status.stdout
        again = _devstack("start", "--state", state)
        assert again.returncode == 0
        assert "already running" in again.stderr
        assert again.stdout == started.stdout
        assert _devstack("env", "--state", state).stdout == started.stdout
    finally:
        stopped = _devstack("stop", "--state", state)
    assert stopped.returncode == 0, stopped.stderr
    assert not mqtt_connack("127.0.0.1", port, timeout=0.5)
    after = _devstack("status", "--state", state)
    assert after.returncode == 3
    assert "mosquitto: not running" in after.stdout
    assert _devstack("env", "--state", state).returncode == 3


def test_a_second_stack_on_the_same_state_dir_is_refused(private_stack: Stack) -> None:
    with pytest.raises(StackError, match="already run in"):
        Stack(private_stack.state_dir).start()
    assert private_stack.running("mosquitto")
    assert private_stack.running("influxdb")
