"""Another client keeps taking the agent's client id (a copied gateway, a second agent with
the same gateway.toml): the agent says so in its log and status, and farmtel status names it."""

import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

from agent.publisher import Publisher
from contract.mqtt import TakeoverWatch
from contract.settings import MqttSettings
from devstack import StackInfo
from ingest.status import Thresholds, assess
from tests.support.agents import make_agent
from tests.support.mqtt import QueuedSubscribe, TestClient, suback


def test_a_client_id_taken_again_and_again_is_named(tmp_path: Path, stack: StackInfo) -> None:
    agent = make_agent(
        tmp_path, "p-take", "gw-take", mqtt={"host": stack.mqtt_host, "port": stack.mqtt_port}
    )
    agent.start()
    try:
        for n in range(3):
            deadline = time.monotonic() + 30
            while not agent.publisher.connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert agent.publisher.connected.is_set(), f"connection {n + 1}"
            TestClient(stack.mqtt_host, stack.mqtt_port, client_id=agent.config.client_id()).close()
            deadline = time.monotonic() + 10
            while agent.publisher.connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not agent.publisher.connected.is_set(), f"taken over {n + 1}"
        hint = agent.publisher.client_id_shared()
        assert f"another client probably uses client id '{agent.config.client_id()}'" in hint
        assert "a second agent with this gateway.toml" in hint
        payload = agent.status_payload()
    finally:
        agent.stop()
    assert orjson.loads(payload)["mqtt"]["client_id_shared"] == hint
    row = assess("p-take", "gw-take", payload, time.time_ns(), Thresholds())
    assert hint in row.problems


class _SeesWhyOnClear(threading.Event):
    """`connected`, recording what a waiter on it would read the moment it is cleared."""

    def __init__(self, publisher: Publisher):
        super().__init__()
        self.publisher = publisher
        self.seen: list[tuple[str, str]] = []

    def clear(self) -> None:
        self.seen.append((self.publisher.last_error, self.publisher.client_id_shared()))
        super().clear()


def test_why_the_connection_was_lost_is_set_before_connected_is_cleared() -> None:
    """The first test above read an empty hint once in CI: it saw `connected` cleared before
    the callback had stored why."""
    publisher = Publisher(
        MqttSettings(), "farmtel-agent-p-gw", "p", "gw", lambda _r: None, lambda _b, _e: None
    )
    watcher = _SeesWhyOnClear(publisher)
    publisher.connected = watcher
    lost = mqtt.ReasonCode(mqtt.PacketTypes.DISCONNECT, identifier=128)
    for _ in range(TakeoverWatch.TIMES):
        publisher._session_up = True
        publisher.connected.set()
        publisher._takeover.connected()
        publisher._disconnected(publisher.client, None, None, lost)
    assert len(watcher.seen) == TakeoverWatch.TIMES
    last_error, hint = watcher.seen[-1]
    assert last_error == "disconnected: Unspecified error"
    assert "another client probably uses client id 'farmtel-agent-p-gw'" in hint
    assert all(error == "disconnected: Unspecified error" for error, _ in watcher.seen)


def test_the_agent_is_connected_only_once_its_receipts_subscription_is_answered() -> None:
    """Until the SUBACK, a receipt for a batch published now could be dropped by the broker
    (a session the broker no longer has): `connected` gates publishing."""
    publisher = Publisher(
        MqttSettings(), "farmtel-agent-p-gw", "p", "gw", lambda _r: None, lambda _b, _e: None
    )
    client = QueuedSubscribe(41)
    ok = mqtt.ReasonCode(mqtt.PacketTypes.CONNACK, identifier=0)
    publisher._connected(client, None, None, ok)  # type: ignore[arg-type]
    assert client.subscribed == [publisher.receipts]
    assert not publisher.connected.is_set()
    publisher._subscribed(client, None, 40, suback(1))  # type: ignore[arg-type]
    assert not publisher.connected.is_set()  # another SUBSCRIBE's answer
    publisher._subscribed(client, None, 41, suback(1))  # type: ignore[arg-type]
    assert publisher.connected.is_set()
    assert publisher.last_error == ""


def test_a_refused_receipts_subscription_is_named() -> None:
    publisher = Publisher(
        MqttSettings(), "farmtel-agent-p-gw", "p", "gw", lambda _r: None, lambda _b, _e: None
    )
    client = QueuedSubscribe(41)
    ok = mqtt.ReasonCode(mqtt.PacketTypes.CONNACK, identifier=0)
    publisher._connected(client, None, None, ok)  # type: ignore[arg-type]
    publisher._subscribed(client, None, 41, suback(135))  # type: ignore[arg-type]
    assert publisher.connected.is_set()
    assert publisher.last_error == (
        "broker refused the receipts subscription farmtel/v1/p/gw/receipt: Not authorized; "
        "check the broker's ACL (docs/security.md)"
    )
