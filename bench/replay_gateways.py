"""Simulated gateways that replay batches their agents built: the server's side of the pipeline.

``python bench/replay_gateways.py HOST PORT PLANTATION BATCH_SIZE MAX_INFLIGHT STATE_DIR GW...``

1. Not timed: for each gateway, the real agent code builds every batch from its pre-filled
   outbox (``STATE_DIR/<gw>/outbox.sqlite``) exactly as ``Agent._send_batch`` does
   (``Outbox.next_raw_batch`` -> ``encode_wire_batch``, a new boot id and batch ids), and
   the process prints ``ready <batches> <readings>``.
2. On a line ``go`` on stdin: one MQTT v5 client per gateway (client id = the gateway id, as
   the agent connects) publishes its batches with QoS 1 on its telemetry topic, keeping at
   most ``MAX_INFLIGHT`` unreceipted batches, as the agent does, and takes the next batch when
   the ingest's receipt for one arrives. A batch without a receipt after 30 s is published
   again (the agent's ``receipt_timeout`` in bench/harness.py).
3. Prints ``done <seconds>`` when every batch has a receipt, and exits.

In production the agents run on the gateways, so this is the load the server box sees; the
agents' own CPU for the same batches is measured by the default pipeline mode.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if p != str(ROOT)]

from agent.outbox import Outbox  # noqa: E402
from contract.topics import receipt_topic, telemetry_topic  # noqa: E402
from contract.wire import encode_wire_batch  # noqa: E402

RESEND_AFTER_S = 30.0


def build_batches(path: Path, gateway: str, batch_size: int) -> tuple[list[tuple[str, bytes]], int]:
    """Every batch of the outbox at ``path`` as its agent would publish it, and the readings."""
    outbox = Outbox(path, gateway)
    boot = uuid.uuid4().hex
    out: list[tuple[str, bytes]] = []
    readings_total = 0
    try:
        while True:
            batch_id = uuid.uuid4().hex
            count, joined, gaps = outbox.next_raw_batch(batch_id, batch_size)
            if not count and not gaps:
                return out, readings_total
            readings_total += count
            payload = encode_wire_batch(
                gateway, boot, batch_id, time.time_ns(), orjson.Fragment(joined), gaps, None
            )
            out.append((batch_id, payload))
    finally:
        outbox.close()


class Gateway:
    def __init__(
        self,
        host: str,
        port: int,
        plantation: str,
        gateway: str,
        batches: list[tuple[str, bytes]],
        max_inflight: int,
        all_done: threading.Event,
        remaining: list[int],
        lock: threading.Lock,
    ):
        self.pending = deque(batches)
        self.payloads = dict(batches)
        self.inflight: dict[str, float] = {}
        self.max_inflight = max_inflight
        self.topic = telemetry_topic(plantation, gateway)
        self.receipts = receipt_topic(plantation, gateway)
        self.all_done, self.remaining, self.lock = all_done, remaining, lock
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=gateway,
            protocol=mqtt.MQTTv5,
        )
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.on_connect = self._connected
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._receipt
        self.client.connect(host, port)
        self.client.loop_start()

    def _connected(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.receipts, qos=1)

    def fill(self) -> None:
        """Publish new batches while fewer than ``max_inflight`` wait for a receipt."""
        with self.lock:
            take = []
            while self.pending and len(self.inflight) < self.max_inflight:
                batch_id, payload = self.pending.popleft()
                self.inflight[batch_id] = time.monotonic()
                take.append(payload)
        for payload in take:
            self.client.publish(self.topic, payload, qos=1)

    def resend_overdue(self) -> None:
        now = time.monotonic()
        with self.lock:
            overdue = [b for b, t in self.inflight.items() if now - t > RESEND_AFTER_S]
            for b in overdue:
                self.inflight[b] = now
        for b in overdue:
            self.client.publish(self.topic, self.payloads[b], qos=1)

    def _receipt(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        receipt = orjson.loads(msg.payload)
        with self.lock:
            if self.inflight.pop(receipt["batch"], None) is None:
                return  # a receipt for a batch receipted already (a resend)
            self.remaining[0] -= 1
            if self.remaining[0] == 0:
                self.all_done.set()
        self.fill()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, port, plantation, batch_size, max_inflight, state = sys.argv[1:7]
    gateways = sys.argv[7:]
    built = {
        gw: build_batches(Path(state) / gw / "outbox.sqlite", gw, int(batch_size))
        for gw in gateways
    }
    n_batches = sum(len(b) for b, _ in built.values())
    n_readings = sum(n for _, n in built.values())
    all_done = threading.Event()
    remaining = [n_batches]
    lock = threading.Lock()
    sims = [
        Gateway(
            host,
            int(port),
            plantation,
            gw,
            built[gw][0],
            int(max_inflight),
            all_done,
            remaining,
            lock,
        )
        for gw in gateways
    ]
    for sim in sims:
        if not sim.subscribed.wait(10):
            print(f"gateway {sim.topic}: no SUBACK in 10 s", flush=True)
            return 1
    print(f"ready {n_batches} {n_readings}", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    t0 = time.monotonic()
    for sim in sims:
        sim.fill()
    while not all_done.wait(1.0):
        for sim in sims:
            sim.resend_overdue()
    print(f"done {time.monotonic() - t0:.3f}", flush=True)
    # Stay connected until the bench has counted everything: it closes stdin (or SIGTERM).
    sys.stdin.readline()
    for sim in sims:
        sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
