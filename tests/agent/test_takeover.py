"""Another client keeps taking the agent's client id (a copied gateway, a second agent with
the same gateway.toml): the agent says so in its log and status, and farmtel status names it."""

import time
from pathlib import Path

import orjson

from devstack import StackInfo
from ingest.status import Thresholds, assess
from tests.support.agents import make_agent
from tests.support.mqtt import TestClient


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
        hint = agent.publisher.client_id_shared()
        assert f"another client probably uses client id '{agent.config.client_id()}'" in hint
        assert "a second agent with this gateway.toml" in hint
        payload = agent.status_payload()
    finally:
        agent.stop()
    assert orjson.loads(payload)["mqtt"]["client_id_shared"] == hint
    row = assess("p-take", "gw-take", payload, time.time_ns(), Thresholds())
    assert hint in row.problems
