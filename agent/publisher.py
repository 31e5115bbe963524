"""The agent's MQTT side: publishes batches and status, receives receipts.

It never touches the outbox or a serial port: the service hands it bytes and learns of
receipts and failed publishes through callbacks. A PUBACK is not durability (Mosquitto
snapshots its store), so nothing here deletes anything; only a receipt does, in the
service.
"""

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from contract.mqtt import (
    TakeoverWatch,
    connect_async,
    connect_properties,
    make_client,
    reason_text,
)
from contract.settings import MqttSettings
from contract.topics import receipt_topic, status_topic, telemetry_topic
from contract.wire import PayloadError, Receipt, decode_receipt

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600
"""The broker keeps our receipts for a day while the gateway is offline."""


class Publisher:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        plantation: str,
        gateway: str,
        on_receipt: Callable[[Receipt], None],
        on_publish_failed: Callable[[str, str], None],
        on_puback: Callable[[str], None] | None = None,
        on_connection_lost: Callable[[], None] | None = None,
    ):
        self.settings = settings
        self.telemetry = telemetry_topic(plantation, gateway)
        self.receipts = receipt_topic(plantation, gateway)
        self.status = status_topic(plantation, gateway)
        self._on_receipt = on_receipt
        self._on_publish_failed = on_publish_failed
        self._on_puback = on_puback
        self._on_connection_lost = on_connection_lost
        self._lock = threading.Lock()
        self._mid_to_batch: dict[int, str] = {}
        self._early: dict[int, Any] = {}
        self.connected = threading.Event()
        """Set once the broker has answered our receipts subscription (SUBACK): a batch
        published before that could have its receipt dropped by the broker."""
        self._session_up = False
        """CONNACK received and no disconnect since (paho's network thread only)."""
        self._receipts_mid: int | None = None
        self.last_error = ""
        self.disconnects = 0
        self.publish_failures = 0
        self._client_id = client_id
        self._takeover = TakeoverWatch()
        self._takeover_hint = ""
        self.client = make_client(settings, client_id)
        self.client.will_set(
            self.status, orjson.dumps({"state": "offline", "reason": "connection lost"}), 1, True
        )
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_message = self._message
        self.client.on_publish = self._published
        self.client.on_connect_fail = self._connect_failed
        self.client.on_subscribe = self._subscribed

    def start(self) -> None:
        connect_async(
            self.client,
            self.settings,
            clean_start=False,
            properties=connect_properties(session_expiry_s=SESSION_EXPIRY_S),
        )
        self.client.loop_start()

    def stop(self, final_status: bytes | None = None) -> None:
        # Also between CONNACK and SUBACK: a clean DISCONNECT does not send the will, so
        # without this the retained status would stay "online".
        if final_status is not None and (self.connected.is_set() or self._session_up):
            info = self.client.publish(self.status, final_status, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=3)
        self.client.disconnect()
        self.client.loop_stop()

    def client_id_shared(self) -> str:
        """Why the broker keeps closing our connection, if another client seems to use our
        client id (within the last two minutes); else ""."""
        return self._takeover_hint if self._takeover.recent() else ""

    # paho callbacks run on its network thread.
    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            self.last_error = f"broker refused the connection: {reason_text(rc)}"
            log.error("mqtt connect refused host=%s reason=%s", self.settings.host, reason_text(rc))
            return
        self._session_up = True
        self._takeover.connected()
        self.last_error = ""
        # paho runs _subscribed on this thread too, so the mid is recorded before it can.
        _, self._receipts_mid = client.subscribe(self.receipts, qos=1)

    def _subscribed(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any = None) -> None:
        if mid != self._receipts_mid or not self._session_up:
            return
        refused = [c for c in codes if getattr(c, "is_failure", False)]
        if refused:
            # Batches still go out; without receipts they stay in the outbox and are resent.
            self.last_error = (
                f"broker refused the receipts subscription {self.receipts}: "
                f"{reason_text(refused[0])}; check the broker's ACL (docs/security.md)"
            )
            log.error("mqtt %s", self.last_error)
        self.connected.set()
        log.info("mqtt connected host=%s port=%s", self.settings.host, self.settings.port)

    def _connect_failed(self, _c: mqtt.Client, _u: Any) -> None:
        self.last_error = (
            f"broker {self.settings.host}:{self.settings.port} is unreachable (connection refused "
            "or timed out); readings stay in the outbox, retrying"
        )
        log.warning("mqtt %s", self.last_error)

    def _disconnected(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if not self._session_up:
            return
        self._session_up = False
        # Record why before clearing `connected`: whoever waits on it reads these next.
        self.disconnects += 1
        self.last_error = f"disconnected: {reason_text(rc)}"
        log.warning("mqtt disconnected reason=%s", reason_text(rc))
        if self._takeover.lost():
            who = "a second agent with this gateway.toml, or a copied gateway"
            self._takeover_hint = self._takeover.hint(self._client_id, who)
            log.error("%s", self._takeover_hint)
        self.connected.clear()
        # Not when we asked for it (stop): reason 0, normal disconnection.
        if self._on_connection_lost is not None and getattr(rc, "is_failure", True):
            self._on_connection_lost()

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self.receipts:
            return
        try:
            receipt = decode_receipt(bytes(msg.payload))
        except PayloadError as err:
            log.warning("bad receipt topic=%s error=%s", msg.topic, err)
            return
        self._on_receipt(receipt)

    def _published(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any = None) -> None:
        # paho calls this holding its own message lock, so never call into paho from here.
        with self._lock:
            batch = self._mid_to_batch.pop(mid, None)
            if batch is None:
                # The PUBACK beat publish_batch() to recording the mid.
                self._early[mid] = rc
                return
        self._judge(batch, rc)

    def _judge(self, batch: str, rc: Any) -> None:
        if rc.is_failure:
            # MQTT v5 tells us when the ACL refused the publish (0x87); the rows stay in the
            # outbox and the batch goes out again after the receipt timeout.
            self.publish_failures += 1
            log.error("publish refused batch=%s reason=%s", batch, reason_text(rc))
            self._on_publish_failed(batch, reason_text(rc))
        elif self._on_puback is not None:
            # [outbox] prune_on = "puback" (testing only): the broker's ack deletes the rows.
            self._on_puback(batch)

    def publish_batch(self, batch_id: str, payload: bytes) -> bool:
        """Queue a batch for QoS 1 delivery; False when not connected (nothing queued)."""
        if not self.connected.is_set():
            return False
        # Not under self._lock: paho takes its own lock here and in on_publish (deadlock).
        info = self.client.publish(self.telemetry, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._mid_to_batch[info.mid] = batch_id
        if early is not None:
            self._judge(batch_id, early)
        return True

    def publish_status(self, payload: bytes) -> None:
        if self.connected.is_set():
            self.client.publish(self.status, payload, qos=1, retain=True)
