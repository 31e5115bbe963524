"""A real Mosquitto started from broker_config/mosquitto-security.conf, with a registry.

The broker runs the production security file (paths and port replaced) plus two more TLS
listeners for the refusal cases: one whose certificate names another host, one whose
certificate has expired. The registry holds 2 plantations x 2 gateways and one revoked
gateway; passwd and acl are rendered from it exactly as `farmtel broker config` does.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from contract.mqtt import make_client
from contract.settings import MqttSettings
from devstack import ServerNotInstalled, Stack, StackInfo, free_port
from ingest.broker_auth import render_acl, render_password_file, setup_ingest_user, write_private
from ingest.devices import BrokerAddress, add_gateway
from ingest.pki import Issued, issue, make_ca, save
from ingest.registry import Registry

REPO = Path(__file__).resolve().parents[2]
SECURITY_CONF = REPO / "broker_config" / "mosquitto-security.conf"
PLANTATIONS = ("plant-a", "plant-b")
GATEWAYS = ("gw-1", "gw-2")
INGEST_USER = "farmtel-ingest"


@dataclass
class GatewayCreds:
    plantation: str
    gateway: str
    bundle: Path

    @property
    def username(self) -> str:
        return f"{self.plantation}.{self.gateway}"

    @property
    def password_file(self) -> Path:
        return self.bundle / "mqtt.password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def signing_key_file(self) -> Path:
        return self.bundle / "signing.key"


@dataclass
class SecureBroker:
    stack: Stack
    info: StackInfo
    dir: Path
    registry_path: Path
    gateways: list[GatewayCreds]
    revoked: GatewayCreds
    spare: GatewayCreds
    """Live at start; a test may revoke it."""
    ingest_password_file: Path
    ca_file: Path
    other_ca_file: Path
    tls_port: int
    wrong_name_port: int
    expired_port: int
    client_cert_port: int
    """A TLS listener with require_certificate true."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.info.mqtt_host

    @property
    def port(self) -> int:
        return self.info.mqtt_port

    def settings(self, username: str | None, password_file: Path | None, **kw: Any) -> MqttSettings:
        base: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": username,
            "password_file": password_file,
        }
        base.update(kw)
        return MqttSettings(**base)

    def reload(self) -> None:
        """Render passwd and acl again and make mosquitto reload them (SIGHUP)."""
        with Registry(self.registry_path) as reg:
            _render(reg, self.dir / "broker")
        pid = self.stack.mosquitto_pid
        assert pid is not None
        os.kill(pid, signal.SIGHUP)


def _render(reg: Registry, out: Path) -> tuple[str, Path]:
    """What `farmtel broker config` writes; returns setup_ingest_user's (what, file)."""
    ingest = setup_ingest_user(reg, out, INGEST_USER)
    write_private(out / "passwd", render_password_file(reg))
    write_private(out / "acl", render_acl(reg))
    return ingest


def _tls_listener(port: int, tls: Path, cert: str) -> list[str]:
    return [
        f"listener {port} 127.0.0.1",
        f"cafile {tls / 'ca.crt'}",
        f"certfile {tls / (cert + '.crt')}",
        f"keyfile {tls / (cert + '.key')}",
        "use_username_as_clientid true",
    ]


@pytest.fixture(scope="package")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    base = tmp_path_factory.mktemp("secure")
    broker_dir = base / "broker"
    tls = broker_dir / "tls"
    tls.mkdir(parents=True)
    ca = make_ca("farmtel test CA")
    save(ca, tls / "ca.crt", tls / "ca.key")
    save(
        issue(ca, "broker", hosts=["localhost", "127.0.0.1"], server=True),
        tls / "broker.crt",
        tls / "broker.key",
    )
    save(
        issue(ca, "wrong", hosts=["broker.invalid"], server=True),
        tls / "wrong.crt",
        tls / "wrong.key",
    )
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired: Issued = issue(
        ca,
        "expired",
        hosts=["localhost", "127.0.0.1"],
        server=True,
        not_before=past,
        not_after=past + dt.timedelta(days=1),
    )
    save(expired, tls / "expired.crt", tls / "expired.key")
    other = make_ca("someone else's CA")
    save(other, base / "other-ca.crt", base / "other-ca.key")

    registry_path = base / "registry.sqlite"
    gateways = []
    with Registry(registry_path) as reg:
        for p in PLANTATIONS:
            for g in GATEWAYS:
                add_gateway(reg, p, g, base / f"bundle-{p}-{g}", broker=BrokerAddress(tls=False))
                gateways.append(GatewayCreds(p, g, base / f"bundle-{p}-{g}"))
        spare = GatewayCreds("plant-b", "gw-spare", base / "bundle-spare")
        add_gateway(reg, "plant-b", "gw-spare", spare.bundle, broker=BrokerAddress(tls=False))
        add_gateway(
            reg, "plant-a", "gw-old", base / "bundle-revoked", broker=BrokerAddress(tls=False)
        )
        revoked = GatewayCreds("plant-a", "gw-old", base / "bundle-revoked")
        reg.revoke("plant-a", "gw-old", "stolen", actor="test")
        what, ingest_pw = _render(reg, broker_dir)
    assert what == "created"

    tls_port, wrong_port, expired_port, cert_port = (free_port() for _ in range(4))
    text = SECURITY_CONF.read_text()
    text = text.replace("/etc/mosquitto/farmtel/", f"{broker_dir}/")
    assert "listener 8883\n" in text
    text = text.replace("listener 8883\n", f"listener {tls_port} 127.0.0.1\n")
    conf = base / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                text,
                *_tls_listener(wrong_port, tls, "wrong"),
                *_tls_listener(expired_port, tls, "expired"),
                # The optional line of mosquitto-security.conf, switched on.
                *_tls_listener(cert_port, tls, "broker"),
                "require_certificate true",
                "connection_messages true",
                "log_type all",
                "",
            ]
        )
    )
    stack = Stack(base / "stack", mosquitto_conf=conf)
    try:
        info = stack.start()
    except ServerNotInstalled as err:
        pytest.fail(f"{err}\nThe test script installs them: ./scripts/test.sh", pytrace=False)
    try:
        yield SecureBroker(
            stack=stack,
            info=info,
            dir=base,
            registry_path=registry_path,
            gateways=gateways,
            revoked=revoked,
            spare=spare,
            ingest_password_file=ingest_pw,
            ca_file=tls / "ca.crt",
            other_ca_file=base / "other-ca.crt",
            tls_port=tls_port,
            wrong_name_port=wrong_port,
            expired_port=expired_port,
            client_cert_port=cert_port,
        )
    finally:
        stack.stop()


class Session:
    """An MQTT v5 client made by contract.mqtt.make_client (the agent's and ingest's path),
    connected synchronously; records the CONNACK, PUBACK and SUBACK reason codes."""

    def __init__(self, settings: MqttSettings, client_id: str | None = None) -> None:
        self.connack: Any = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.pubacks: dict[int, Any] = {}
        self.subacks: dict[int, list[Any]] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self.client = make_client(settings, client_id or f"t-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(settings.host, settings.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self.connack = rc
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self.disconnected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any = None) -> None:
        with self._cond:
            self.pubacks[mid] = rc
            self._cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, rcs: list[Any], _p: Any = None) -> None:
        with self._cond:
            self.subacks[mid] = rcs
            self._cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_connack(self, timeout: float = 10) -> Any:
        assert self.connected.wait(timeout), "no CONNACK"
        return self.connack

    def publish(self, topic: str, payload: bytes, timeout: float = 10) -> Any:
        """QoS 1 publish; returns the PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: info.mid in self.pubacks, timeout), topic
            return self.pubacks.pop(info.mid)

    def subscribe(self, topic: str, timeout: float = 10) -> list[Any]:
        _rc, mid = self.client.subscribe(topic, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self.subacks, timeout), topic
            return self.subacks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
