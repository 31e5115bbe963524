"""``python -P -m agent run`` (the systemd unit's command) keeps OpenSSL out of a gateway
without TLS, and batch signatures still verify (agent/__main__.py).

The TLS side (the same command connecting to a TLS listener) is in
tests/security/test_agent_main_tls.py, next to the broker with TLS listeners.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.signing import batch_message, key_id, verify
from contract.topics import telemetry_topic
from contract.wire import Batch
from devstack import StackInfo
from tests.support.mqtt import TestClient
from tests.support.procs import (
    REPO,
    Proc,
    release_when_open,
    started_text_line_simulator,
    wait_until,
    write_toml,
)

PLANTATION = "plant-main"
GATEWAY = "gw-main"
OPENSSL_LIBS = ("libcrypto.so", "libssl.so")


def agent_main(config: Path, log: Path) -> Proc:
    """The agent as deploy/systemd/farmtel-agent.service starts it."""
    argv = [sys.executable, "-P", "-m", "agent", "run", "--config", str(config)]
    return Proc("agent", argv, log, {"PYTHONPATH": str(REPO)})


def mapped_libraries(pid: int) -> set[str]:
    return {
        Path(line.split()[-1]).name
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if line.count(" ") >= 5 and line.split()[-1].startswith("/")
    }


def write_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return key


def test_signed_batches_without_openssl(stack: StackInfo, tmp_path: Path) -> None:
    key = write_key(tmp_path / "signing.key")
    columns = ["counter", "moisture_pct"]
    go = tmp_path / "go"
    sim, link = started_text_line_simulator(tmp_path, columns, rate=20, count=20, start_file=go)
    gw = write_toml(
        tmp_path / "gateway.toml",
        {
            "gateway": {
                "plantation": PLANTATION,
                "id": GATEWAY,
                "state_dir": str(tmp_path / "agent"),
                "signing_key_file": str(tmp_path / "signing.key"),
            },
            "mqtt": {"host": stack.mqtt_host, "port": stack.mqtt_port},
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
    watch = TestClient(stack.mqtt_host, stack.mqtt_port)
    watch.subscribe(telemetry_topic(PLANTATION, GATEWAY))
    agent = agent_main(gw, tmp_path / "agent.log")
    try:
        release_when_open(agent, ["soil-1"], go)
        wait_until(lambda: watch.received(1, 1), 30, "a batch from the agent")
        libraries = mapped_libraries(agent.pid)
        messages = watch.wait_for(1)
    finally:
        watch.close()
        rc = agent.stop()
        sim.stop()
    assert rc == 0, agent.output()[-3000:]
    assert "Traceback" not in agent.output(), agent.output()[-3000:]
    loaded = sorted(lib for lib in libraries if lib.startswith(OPENSSL_LIBS))
    assert not loaded, f"OpenSSL loaded without TLS: {loaded}"
    # The signing library is there (it carries its own OpenSSL) ...
    assert any(lib.startswith("_rust.abi3") for lib in libraries), sorted(libraries)
    # ... and the signature, key id (sha256 without OpenSSL) included, verifies.
    batch = Batch.model_validate_json(messages[0].payload)
    assert batch.readings
    public = key.public_key()
    assert verify({key_id(public): public}, batch.sig, batch_message(PLANTATION, batch))


PAHO_WITHOUT_SSL = """
import sys
sys.modules["_hashlib"] = sys.modules["_ssl"] = None  # as agent/__main__.py does
import paho.mqtt.client as paho_client
from paho.mqtt.enums import CallbackAPIVersion
from agent.__main__ import _paho_without_tls

assert paho_client.ssl is None
_paho_without_tls()
client = paho_client.Client(CallbackAPIVersion.VERSION2)

class Socket:  # a non-blocking socket with nothing to read and no room to write
    def recv(self, size):
        raise BlockingIOError(11, "Resource temporarily unavailable")
    def send(self, data):
        raise BlockingIOError(11, "Resource temporarily unavailable")

client._sock = Socket()
for call in (lambda: client._sock_recv(1), lambda: client._sock_send(b"x")):
    try:
        call()
    except BlockingIOError:
        print("would block")
"""


def test_paho_without_ssl_survives_a_socket_that_would_block() -> None:
    """paho names ssl.SSLWantReadError in its except clauses: with ssl = None the first
    EAGAIN raised AttributeError and ended its network thread (seen at 1,000 readings/s)."""
    done = subprocess.run(
        [sys.executable, "-P", "-c", PAHO_WITHOUT_SSL],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["would block", "would block"], done.stdout


def test_bad_config_still_exits_2(tmp_path: Path) -> None:
    """The import blocks do not change how a bad config is reported."""
    bad = tmp_path / "gateway.toml"
    bad.write_text('[gateway]\nplantation = "p"\nid = "Bad Id"\n')
    agent = agent_main(bad, tmp_path / "agent.log")
    assert agent.popen.wait(30) == 2
    agent.stop()
    out = agent.output()
    assert "gateway.id" in out and "Traceback" not in out
