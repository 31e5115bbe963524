"""A small MQTT v5 test client over paho: publish and wait, collect what arrives."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class TestClient:
    __test__ = False  # not a pytest test class

    def __init__(self, host: str, port: int, client_id: str | None = None) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def subscribe(self, topic: str) -> None:
        info = self.client.subscribe(topic, qos=1)
        assert info[0] == mqtt.MQTT_ERR_SUCCESS

    def publish(self, topic: str, payload: bytes, timeout: float = 10) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=timeout)
        return info

    def received(self, count: int, timeout: float) -> list[mqtt.MQTTMessage]:
        """Wait up to ``timeout`` s for ``count`` messages; return what arrived, maybe fewer.

        For polls (inside ``wait_until``) and for checks that nothing (more) arrives; a test
        that needs the messages calls :meth:`wait_for`.
        """
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout=timeout)
            return list(self.messages)

    def wait_for(self, count: int, timeout: float = 20) -> list[mqtt.MQTTMessage]:
        """The messages so far, once there are at least ``count``; fail if ``timeout`` s pass."""
        msgs = self.received(count, timeout)
        if len(msgs) < count:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {count} MQTT message(s): "
                f"got {len(msgs)} (topics: {sorted({m.topic for m in msgs})})"
            )
        return msgs

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class QueuedSubscribe:
    """paho's client as far as an ``on_connect`` callback uses it: ``subscribe`` queues the
    SUBSCRIBE (recorded in :attr:`subscribed`) and returns ``mid``; no SUBACK comes."""

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.subscribed: list[object] = []

    def subscribe(self, topics: object, qos: int = 0) -> tuple[int, int]:
        self.subscribed.append(topics)
        return (mqtt.MQTT_ERR_SUCCESS, self.mid)


def suback(*codes: int) -> list[mqtt.ReasonCode]:
    """A SUBACK's reason codes (1: granted QoS 1, 135: not authorized, ...)."""
    return [mqtt.ReasonCode(mqtt.PacketTypes.SUBACK, identifier=c) for c in codes]
