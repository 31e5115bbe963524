"""``python -P -m agent run`` (the systemd unit's command) with ``[mqtt] tls``: OpenSSL is
loaded and batches reach the broker over TLS. Without TLS the same command keeps OpenSSL
out (tests/agent/test_main_openssl.py; agent/__main__.py says why)."""

from __future__ import annotations

from pathlib import Path

from contract.topics import telemetry_topic
from contract.wire import Batch
from tests.agent.test_main_openssl import agent_main, mapped_libraries
from tests.security.conftest import SecureBroker, Session
from tests.support.procs import (
    release_when_open,
    started_text_line_simulator,
    wait_until,
    write_toml,
)


def test_agent_main_publishes_over_tls(secure_broker: SecureBroker, tmp_path: Path) -> None:
    b = secure_broker
    creds = b.gateways[1]
    columns = ["counter", "moisture_pct"]
    go = tmp_path / "go"
    sim, link = started_text_line_simulator(tmp_path, columns, rate=20, count=20, start_file=go)
    gw = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {
                "plantation": creds.plantation,
                "id": creds.gateway,
                "state_dir": str(tmp_path / "agent"),
                "signing_key_file": str(creds.signing_key_file),
            },
            "mqtt": {
                "host": b.host,
                "port": b.tls_port,
                "tls": True,
                "ca_file": str(b.ca_file),
                "username": creds.username,
                "password_file": str(creds.password_file),
            },
            "outbox": {"batch_size": 5, "send_delay": 0},
            "sensors": [
                {
                    "id": "soil-1",
                    "field": "north",
                    "driver": "text_line",
                    "kind": "soil",
                    "port": str(link),
                    "columns": columns,
                    "timeout": 0.5,
                }
            ],
        },
    )
    watch = Session(b.settings("farmtel-ingest", b.ingest_password_file))
    assert not watch.wait_connack().is_failure
    watch.subscribe(telemetry_topic(creds.plantation, creds.gateway))
    agent = agent_main(gw, tmp_path / "agent.log")
    try:
        release_when_open(agent, ["soil-1"], go)
        wait_until(lambda: watch.messages, 30, "a batch from the agent over TLS")
        libraries = mapped_libraries(agent.pid)
        got = [m.payload for m in watch.messages]
    finally:
        watch.close()
        rc = agent.stop()
        sim.stop()
    log = agent.output()
    assert rc == 0, log[-3000:]
    assert f"mqtt connected host={b.host} port={b.tls_port}" in log
    assert any(lib.startswith("libssl.so") for lib in libraries), sorted(libraries)
    assert Batch.model_validate_json(got[0]).readings
