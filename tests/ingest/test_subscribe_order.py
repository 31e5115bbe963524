"""The ingest counts as connected (`connected`, the farmtel_ingest_mqtt_connected gauge, the
"mqtt connected" log line) only once the broker has answered its subscriptions: a share
group without a member drops what is published to it."""

import logging
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ingest.config import IngestConfig
from ingest.service import Ingest
from tests.support.mqtt import QueuedSubscribe, suback


def test_connected_waits_for_the_suback_and_names_a_refused_topic(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = IngestConfig.model_validate(
        {"ingest": {"state_dir": str(tmp_path / "ingest"), "share_group": "g-1"}}
    )
    ingest = Ingest(config)
    caplog.set_level(logging.INFO, logger="ingest.service")
    client = QueuedSubscribe(9)
    ok = mqtt.ReasonCode(mqtt.PacketTypes.CONNACK, identifier=0)
    ingest._connected(client, None, None, ok)  # type: ignore[arg-type]
    assert len(client.subscribed) == 1  # one SUBSCRIBE for the three topics
    topics = [topic for topic, _ in client.subscribed[0]]  # type: ignore[attr-defined]
    assert topics[0] == "$share/g-1/farmtel/v1/+/+/telemetry"
    assert len(topics) == 3
    assert not ingest.connected.is_set()
    assert "mqtt connected" not in caplog.text
    ingest._subscribed(client, None, 8, suback(1, 0, 0))  # type: ignore[arg-type]
    assert not ingest.connected.is_set()  # not our SUBSCRIBE
    ingest._subscribed(client, None, 9, suback(1, 135, 0))  # type: ignore[arg-type]
    assert ingest.connected.is_set()
    assert f"mqtt broker refused the subscription {topics[1]}: Not authorized" in caplog.text
    assert "mqtt connected" in caplog.text
