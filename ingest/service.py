"""``farmtel ingest run``: telemetry from MQTT into InfluxDB, receipts back.

The order that makes delivery safe: a message is acked to the broker only after InfluxDB
accepted its points, and the receipt (which lets the gateway delete the rows) is published
after that. A crash anywhere means the broker redelivers, and a replayed point overwrites
itself (same series, same timestamp, same values).

Memory stays bounded under an InfluxDB outage: the broker hands us at most
``receive_maximum`` unacked messages, and we stop acking while writes fail.
"""

import gc
import logging
import queue
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from types import FrameType
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
from contract.settings import make_state_dir
from contract.topics import (
    parse_seq_share_topic,
    parse_topic,
    receipt_topic,
    seq_share_prefix,
    seq_share_subscription,
    seq_share_topic,
    telemetry_subscription,
)
from contract.wire import (
    Batch,
    PayloadError,
    Receipt,
    ReceiptStatus,
    decode_batch,
    encode_receipt,
)
from ingest.alerts import AlertEngine
from ingest.config import IngestConfig
from ingest.deadletter import DeadLetters
from ingest.gatekeeper import BatchRefused, Gatekeeper
from ingest.influx import InfluxRejected, InfluxUnavailable, InfluxWriter, make_writer
from ingest.line_protocol import LineProtocolError
from ingest.mapping import MappingError, WireBatch, batch_to_lines, plain_batch_lines
from ingest.metrics import ingest_metrics_server
from ingest.quarantine import config_not_before_ns, split_batch
from ingest.selfmetrics import SelfMetrics
from ingest.sequence import SequenceTracker

log = logging.getLogger(__name__)

HAND_OVER_ON_STOP_S = 5.0
"""Seconds the decoder still waits, once stopping, to hand its last group to the writers
(:meth:`Ingest.stop` waits 15 s for it)."""
GC_THRESHOLD0 = 20_000
"""Allocations between young-generation collections (Python's default: 700)."""


def tune_gc() -> None:
    """Collect garbage less often in this process; call once it has started.

    The writer thread allocates some 20 objects per reading (parsed payload, lines) that live
    until their batch is stored and form no reference cycles. With the default threshold the
    collector walks each of them several times before it dies: 0.5-1.2 us per reading, ~10 %
    of the ingest's CPU (measured on the plain path with 100 distinct batches, 16 in
    flight). Objects alive at start-up (modules, config) are frozen out of the walks.
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD0, 10, 10)


@dataclass(slots=True)
class Inbound:
    mid: int
    qos: int
    topic: str
    payload: bytes
    arrival: int = 0
    """The order paho handed it over in: PUBACKs go out in this order (MQTT 4.6)."""


def _arrival(item: "Decoded | Inbound") -> int:
    return item.arrival if isinstance(item, Inbound) else item.msg.arrival


@dataclass(slots=True)
class Decoded:
    msg: Inbound
    plantation: str
    batch: Batch | WireBatch
    """The model (reference path) or the plain batch (ingest.mapping.plain_batch_lines)."""
    lines: list[str]
    quarantined: int = 0

    def seqs(self) -> Iterable[int]:
        if isinstance(self.batch, WireBatch):
            return self.batch.seqs
        return (r.seq for r in self.batch.readings)

    def model(self) -> Batch:
        return self.batch.model() if isinstance(self.batch, WireBatch) else self.batch

    def reading_count(self) -> int:
        if isinstance(self.batch, WireBatch):
            return len(self.batch.seqs)
        return len(self.batch.readings)


class Ingest:
    def __init__(self, config: IngestConfig, writer: InfluxWriter | None = None):
        self.config = config
        self.stop_event = threading.Event()
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.writer = writer or make_writer(config.influxdb)
        make_state_dir(config.ingest.state_dir, "ingest.state_dir")
        self.dead = DeadLetters(config.deadletter_path())
        self.connected = threading.Event()
        """Set once the broker has answered our subscriptions (SUBACK)."""
        self._session_up = False
        """CONNACK received and no disconnect since (paho's network thread only)."""
        self._subscribe_mid: int | None = None
        self._subscriptions: list[tuple[str, int]] = []
        self._takeover = TakeoverWatch()
        self.counters: dict[str, int] = {
            "messages": 0,
            "batches_stored": 0,
            "readings_stored": 0,
            "gaps_stored": 0,
            "dead_letters": 0,
            "write_errors": 0,
            "write_retries": 0,
            "redeliveries": 0,
            "duplicates": 0,
            "seq_holes": 0,
            "quarantined": 0,
            "refused_batches": 0,
        }
        # Only registered gateways with a valid signature write (issue 5; ingest/gatekeeper.py).
        self.gatekeeper = Gatekeeper.open(config.registry_path(), config.ingest.require_signatures)
        # Delivery bookkeeping (issue 4): duplicates/holes per gateway, clock quarantine,
        # self-metrics and agent status points; see ingest/sequence.py and selfmetrics.py.
        self.sequence = SequenceTracker()
        self._seq_lock = threading.Lock()
        self._seq_share_prefix = seq_share_prefix(config.ingest.share_group)
        self._not_before_ns = config_not_before_ns(config.ingest.not_before)
        self._count_lock = threading.Lock()
        self.selfmetrics = SelfMetrics(
            config, self.writer, self.counters, self.inbox.qsize, self._count_lock
        )
        self.client = make_client(config.mqtt, config.client_id(), manual_ack=True)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_message = self._message
        self.client.on_connect_fail = self._connect_failed
        self.client.on_subscribe = self._subscribed
        # "decoder" decodes the next messages while the "writer-N" threads wait for InfluxDB
        # to take earlier ones: [ingest] write_concurrency writes in flight (InfluxDB takes
        # one write on about one core). Each writer acks and receipts its messages after its
        # write, in the order the decoder handed the groups over (a ticket each). One decoded
        # group waits between them at most: memory stays ~(write_concurrency + 2) writes.
        # A group is (ticket, decoded messages, messages the decoder dead-lettered).
        self._decoded: queue.Queue[tuple[int, list[Decoded], list[Inbound]]] = queue.Queue(
            maxsize=1
        )
        self._arrivals = 0
        """Messages paho handed over so far (its network thread counts them)."""
        self._tickets = 0
        """Groups handed to the writers so far (the decoder thread counts them)."""
        self._carry: Decoded | None = None
        """A decoded message that would have passed the last group's budget: it begins the
        next group (the decoder thread's)."""
        self._turn = 0
        """The ticket whose acks and receipts go out next."""
        self._turn_changed = threading.Condition()
        self._worker = threading.Thread(target=self._work, name="decoder", daemon=True)
        self._writer_threads = [
            threading.Thread(target=self._write_loop, name=f"writer-{n}", daemon=True)
            for n in range(1, config.ingest.write_concurrency + 1)
        ]
        self.alerts = AlertEngine(
            config.alerts, lambda t, p: self.client.publish(t, p, qos=1), self.writer.write
        )
        self.prometheus = ingest_metrics_server(self)

    # paho's network thread ---------------------------------------------------------------
    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            log.error("mqtt connect refused reason=%s", reason_text(rc))
            return
        self._session_up = True
        self._takeover.connected()
        # One SUBSCRIBE; `connected` waits for its SUBACK (_subscribed): a share group with
        # no member yet drops what is published to it. The share group's seq bookkeeping
        # comes retained; our own comes back too: merging it changes nothing (a union), and
        # after a restart it is what we knew. paho runs _subscribed on this thread too, so
        # the mid is recorded before it can.
        self._subscriptions = [
            (telemetry_subscription(self.config.ingest.share_group), 1),
            (self.selfmetrics.status_subscription(), 0),
            (seq_share_subscription(self.config.ingest.share_group), 0),
        ]
        _, self._subscribe_mid = client.subscribe(self._subscriptions)

    def _subscribed(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any = None) -> None:
        if mid != self._subscribe_mid or not self._session_up:
            return
        for (topic, _), code in zip(self._subscriptions, codes, strict=False):
            if getattr(code, "is_failure", False):
                log.error(
                    "mqtt broker refused the subscription %s: %s; check the broker's ACL "
                    "(docs/security.md)",
                    topic,
                    reason_text(code),
                )
        self.connected.set()
        log.info("mqtt connected host=%s port=%s", self.config.mqtt.host, self.config.mqtt.port)

    def _connect_failed(self, _c: mqtt.Client, _u: Any) -> None:
        log.warning(
            "mqtt broker %s:%s is unreachable (connection refused or timed out); retrying",
            self.config.mqtt.host,
            self.config.mqtt.port,
        )

    def _disconnected(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if self._session_up:
            self._session_up = False
            log.warning("mqtt disconnected reason=%s", reason_text(rc))
            if self._takeover.lost():
                who = "a second ingest, or `farmtel status` run with this ingest.toml"
                log.error("%s", self._takeover.hint(self.config.client_id(), who))
        self.connected.clear()

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self.selfmetrics.take_status(msg.topic, bytes(msg.payload)):
            return
        if msg.topic.startswith(self._seq_share_prefix):
            self._merge_seq(msg.topic, bytes(msg.payload))
            return
        if msg.dup:
            self.counters["redeliveries"] += 1
            if self.counters["redeliveries"] == 1:
                log.info(
                    "the broker redelivers messages not acked before (MQTT DUP), e.g. after a "
                    "restart; they are stored again idempotently"
                )
        self._arrivals += 1
        self.inbox.put(Inbound(msg.mid, msg.qos, msg.topic, bytes(msg.payload), self._arrivals))

    def _merge_seq(self, topic: str, payload: bytes) -> None:
        """The share group's view of a gateway's seq (:meth:`_share_seq`): merge it into ours."""
        try:
            plantation, gateway = parse_seq_share_topic(self.config.ingest.share_group, topic)
            raw = orjson.loads(payload)
            if not isinstance(raw, dict) or not isinstance(raw.get("seen"), list):
                raise ValueError('not {"seen": [[first, last], ...]}')
            with self._seq_lock:
                self.sequence.merge(plantation, gateway, raw["seen"])
                with self._count_lock:
                    self.counters["seq_holes"] = self.sequence.holes_total
        except (ValueError, orjson.JSONDecodeError) as err:
            log.warning("ignored seq bookkeeping from another ingest topic=%.200s: %s", topic, err)

    def _share_seq(self, plantation: str, gateway: str, seen: list[list[int]]) -> None:
        """Tell the other ingests of the share group which seq of ``gateway`` are stored.

        Retained, so that an ingest that starts later learns it too; QoS 0: a lost update is
        made good by the next one (each carries the whole union this ingest knows).
        """
        self.client.publish(
            seq_share_topic(self.config.ingest.share_group, plantation, gateway),
            orjson.dumps({"from": self.config.client_id(), "seen": seen}),
            qos=0,
            retain=True,
        )

    # decoder thread --------------------------------------------------------------------------
    def _gather(self) -> tuple[list[Inbound], list[Decoded | None]]:
        """The next group to write: messages in the order they came, each decoded (None:
        dead-lettered).

        It takes messages until their lines (readings, gaps, the batch records) reach
        ``write_max_readings`` or ``write_max_wait`` has passed since the group began. A
        message whose lines would pass the budget begins the next group instead, so a write
        holds at most ``write_max_readings`` lines unless one batch alone has more.
        """
        msgs: list[Inbound] = []
        results: list[Decoded | None] = []
        size = 0
        budget = self.config.ingest.write_max_readings
        carried, self._carry = self._carry, None
        if carried is not None:
            msgs.append(carried.msg)
            results.append(carried)
            size = len(carried.lines)
        deadline = time.monotonic() + self.config.ingest.write_max_wait
        while size < budget and not self.stop_event.is_set():
            left = deadline - time.monotonic()
            try:
                if not msgs:
                    msg = self.inbox.get(timeout=0.5)
                    deadline = time.monotonic() + self.config.ingest.write_max_wait
                elif left > 0:  # in slices, so that a stop ends the wait
                    msg = self.inbox.get(timeout=min(left, 0.5))
                else:
                    msg = self.inbox.get_nowait()
            except queue.Empty:
                if msgs and deadline > time.monotonic():
                    continue
                break
            self.counters["messages"] += 1
            decoded = self._decode(msg)
            lines = 0 if decoded is None else len(decoded.lines)
            if msgs and size + lines > budget:
                self._carry = decoded  # not None: a dead letter has no lines
                break
            msgs.append(msg)
            results.append(decoded)
            size += lines
        return msgs, results

    def _decode(self, msg: Inbound) -> Decoded | None:
        try:
            parts = parse_topic(msg.topic)
            if parts.channel != "telemetry":
                raise PayloadError(f"topic {msg.topic!r} is not a telemetry topic")
            now = time.time_ns()
            not_before = self.gatekeeper.not_before_ns(
                parts.plantation, parts.gateway, self._not_before_ns
            )
            max_future = int(self.config.ingest.max_future_skew * 1e9)
            # A batch as the agent sends it, to be stored whole: checked and encoded in one
            # pass without pydantic. Anything else takes the reference path below, which
            # decides (the same way) and says why.
            plain = plain_batch_lines(
                parts.plantation,
                parts.gateway,
                msg.payload,
                0 if not_before is None else not_before,
                now + max_future,
            )
            if plain is not None:
                self.gatekeeper.check_wire(
                    parts.plantation,
                    plain.gateway,
                    plain.batch,
                    plain.sig,
                    plain.readings,
                    plain.gaps,
                )
                if not self.alerts.rules:  # nothing reads them again: held writes stay small
                    plain.let_go_of_readings()
                return Decoded(msg, parts.plantation, plain, plain.lines)
            batch = decode_batch(msg.payload)
            if batch.gateway != parts.gateway:
                raise PayloadError(
                    f"payload gateway {batch.gateway!r} differs from topic gateway "
                    f"{parts.gateway!r}"
                )
            self.gatekeeper.check(parts.plantation, batch)
            kept, quarantine = split_batch(parts.plantation, batch, now, not_before, max_future)
            lines = batch_to_lines(parts.plantation, kept, signed=batch) + quarantine
            return Decoded(msg, parts.plantation, batch, lines, len(quarantine))
        except BatchRefused as err:
            self.counters["refused_batches"] += 1
            self._dead_letter(msg, f"refused ({err.kind}): {err}")
            return None
        except (PayloadError, MappingError, LineProtocolError, ValueError) as err:
            self._dead_letter(msg, str(err))
            return None

    def _dead_letter(self, msg: Inbound, reason: str) -> None:
        """Keep ``msg`` in the dead-letter store and tell its gateway. It is settled then,
        but acked only in its turn (:meth:`_in_turn`), after the messages before it."""
        self.dead.put(msg.topic, msg.payload, reason)
        self._count("dead_letters")  # from the decoder and the writers
        log.warning(
            "dead letter topic=%.200s size=%d reason=%s", msg.topic, len(msg.payload), reason
        )
        # Tell the gateway, if we can tell which batch it was, so it stops resending it.
        try:
            parts = parse_topic(msg.topic)
            raw = orjson.loads(msg.payload)
            batch_id = raw.get("batch") if isinstance(raw, dict) else None
        except (ValueError, orjson.JSONDecodeError):
            return
        if isinstance(batch_id, str) and 0 < len(batch_id) <= 64:
            receipt = Receipt(
                batch=batch_id, status=ReceiptStatus.DEAD_LETTERED, reason=reason[:500]
            )
            self.client.publish(
                receipt_topic(parts.plantation, parts.gateway), encode_receipt(receipt), qos=1
            )

    def _ack(self, msg: Inbound) -> None:
        if msg.qos > 0:
            self.client.ack(msg.mid, msg.qos)

    def _work(self) -> None:
        try:
            while not self.stop_event.is_set():
                msgs, results = self._gather()
                if not msgs:
                    continue
                decoded = [d for d in results if d is not None]
                dead = [m for m, d in zip(msgs, results, strict=True) if d is None]
                self._hand_over(decoded, dead)
        except BaseException:
            # A bug: the message is neither stored nor dead-lettered, and nothing after it
            # can be acked in order. run_forever sees this thread gone and exits.
            log.critical("the decoder failed", exc_info=True)
            raise

    def _hand_over(self, decoded: list[Decoded], dead: list[Inbound]) -> None:
        """Queue a decoded group for the writers, waiting while they are busy.

        A group decoded when the ingest is told to stop is still handed over, for up to
        :data:`HAND_OVER_ON_STOP_S`: its dead letters are then acked (redelivered after a
        restart, they would be dead-lettered and receipted twice) and its batches stored if
        InfluxDB takes them at once. Past that it is dropped unacked, and the broker
        redelivers it after the restart.
        """
        give_up: float | None = None
        while decoded or dead:
            try:
                self._decoded.put((self._tickets, decoded, dead), timeout=0.5)
                self._tickets += 1
                return
            except queue.Full:  # the writers are still busy (or InfluxDB is down)
                if not self.stop_event.is_set():
                    continue
                if give_up is None:
                    give_up = time.monotonic() + HAND_OVER_ON_STOP_S
                elif time.monotonic() >= give_up:
                    return

    # writer threads ----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        """Store what the decoder hands over; after a stop, what is left queued."""
        while True:
            try:
                ticket, items, settled = self._decoded.get(timeout=0.5)
            except queue.Empty:
                if self.stop_event.is_set() and not self._worker.is_alive():
                    return
                continue
            stored: list[Decoded] = []
            try:
                stored = self._write(items, settled)
            except Exception:
                # Not acked: the broker redelivers them after a restart. Keep writing the rest.
                log.exception("storing %d message(s) failed; they stay unacked", len(items))
            finally:
                self._in_turn(ticket, stored, settled)

    def _in_turn(self, ticket: int, stored: list[Decoded], settled: list[Inbound]) -> None:
        """Once every earlier group is done, ack ``stored`` (with their receipts) and the
        dead-lettered ``settled``, all in the order they came in (MQTT wants PUBACKs in
        order), whichever write ends first."""
        with self._turn_changed:
            while self._turn != ticket:
                self._turn_changed.wait()
            try:
                if stored or settled:
                    self._acknowledge(stored, settled)
            except Exception:
                log.exception("acking %d message(s) failed", len(stored) + len(settled))
            finally:
                self._turn += 1
                self._turn_changed.notify_all()

    def _count(self, name: str) -> None:
        with self._count_lock:
            self.counters[name] += 1

    def counters_now(self) -> dict[str, int]:
        """A copy of the counters in which no message is half counted."""
        with self._count_lock:
            return dict(self.counters)

    def _write(self, items: list[Decoded], settled: list[Inbound]) -> list[Decoded]:
        """Write the lines of ``items`` to InfluxDB; return those stored (not yet acked).

        Retries while InfluxDB is unavailable (nothing stored if the ingest stops first);
        if InfluxDB refuses the write, each message is written on its own and the one it
        refuses is dead-lettered and added to ``settled`` (acked in its turn).
        """
        if not items:
            return []
        body = "\n".join(chain.from_iterable(d.lines for d in items)).encode()
        backoff = 0.2
        failed_since: float | None = None
        while True:
            try:
                self.writer.write(body)
                if failed_since is not None:
                    log.warning(
                        "influxdb available again after %.0f s; the held messages are stored",
                        time.monotonic() - failed_since,
                    )
                return items
            except InfluxUnavailable as err:
                if failed_since is None:
                    failed_since = time.monotonic()
                self._count("write_errors")
                log.warning("influxdb unavailable error=%s retry_in_s=%.1f", err, backoff)
                if self.stop_event.wait(backoff):
                    # Not acked: the broker redelivers these after our restart.
                    return []
                self._count("write_retries")
                backoff = min(backoff * 2, self.config.ingest.retry_max_backoff)
            except InfluxRejected as err:
                self._count("write_errors")
                if len(items) > 1:
                    # Find the message InfluxDB refuses; the others go in on their own.
                    return [d for item in items for d in self._write([item], settled)]
                self._dead_letter(items[0].msg, f"InfluxDB refused the points: {err}")
                settled.append(items[0].msg)
                return []

    def _acknowledge(self, stored: list[Decoded], settled: list[Inbound]) -> None:
        """Ack, receipt and count stored messages and ack the dead-lettered ones, in the
        order they came in (in turn: see :meth:`_in_turn`)."""
        shared: dict[tuple[str, str], list[list[int]]] = {}
        in_order: list[Decoded | Inbound] = [*stored, *settled]
        for d in sorted(in_order, key=_arrival):
            if isinstance(d, Inbound):  # dead-lettered: its receipt went out already
                self._ack(d)
                continue
            self._ack(d.msg)
            # Counted (all of a message at once) before its receipt goes out: whoever sees
            # the receipt sees the counters, in status, /metrics and farmtel_ingest.
            with self._seq_lock:
                duplicates = self.sequence.observe(
                    d.plantation,
                    d.batch.gateway,
                    d.seqs(),
                    [(g.seq, g.count) for g in d.batch.gaps if g.seq is not None],
                )
                shared[(d.plantation, d.batch.gateway)] = self.sequence.export(
                    d.plantation, d.batch.gateway
                )
                with self._count_lock:
                    self.counters["batches_stored"] += 1
                    self.counters["readings_stored"] += d.reading_count() - d.quarantined
                    self.counters["gaps_stored"] += len(d.batch.gaps)
                    self.counters["quarantined"] += d.quarantined
                    self.counters["duplicates"] += duplicates
                    self.counters["seq_holes"] = self.sequence.holes_total
            receipt = Receipt(
                batch=d.batch.batch,
                status=ReceiptStatus.STORED,
                stored=d.reading_count() + len(d.batch.gaps),
            )
            self.client.publish(
                receipt_topic(d.plantation, d.batch.gateway), encode_receipt(receipt), qos=1
            )
            if self.alerts.rules:
                self.alerts.observe(d.plantation, d.model())
        # Once per gateway and write: each message carries the whole union we know.
        for (plantation, gateway), seen in shared.items():
            self._share_seq(plantation, gateway, seen)

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        ing = self.config.ingest
        connect_async(
            self.client,
            self.config.mqtt,
            clean_start=False,
            properties=connect_properties(
                session_expiry_s=ing.session_expiry, receive_maximum=ing.receive_maximum
            ),
        )
        self.client.loop_start()
        self._worker.start()
        for writer in self._writer_threads:
            writer.start()
        self.selfmetrics.start()
        if self.prometheus is not None:
            self.prometheus.start()
        log.info(
            "ingest started client_id=%s influxdb=%s api=%s",
            self.config.client_id(),
            self.config.influxdb.url,
            self.config.influxdb.api,
        )

    def stop(self) -> None:
        self.stop_event.set()
        self._worker.join(timeout=15)
        for writer in self._writer_threads:
            writer.join(timeout=15)
        self.selfmetrics.stop()
        self.client.disconnect()
        self.client.loop_stop()
        if self.prometheus is not None:
            self.prometheus.stop()
        self.writer.close()
        self.dead.close()
        self.gatekeeper.close()
        log.info("ingest stopped counters=%s", self.counters)

    def run_forever(self) -> None:
        def _stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal received signal=%s; stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.start()
        tune_gc()
        dead = self.watch()
        self.stop()
        if dead:
            raise SystemExit(
                f"ingest: the {', '.join(dead)} thread stopped on an error (logged above); "
                "exiting so that the service manager restarts the ingest and the broker "
                "redelivers what was not acked"
            )

    def watch(self, every_s: float = 1.0) -> list[str]:
        """Wait until told to stop (then ``[]``), or until the decoder or a writer thread has
        died on an error, then the names of those threads.

        A dead decoder would leave the ingest connected and silent, holding unacked
        messages forever; exiting instead lets systemd restart it (``Restart=on-failure``)
        and the broker redeliver them.
        """
        threads = [self._worker, *self._writer_threads]
        while not self.stop_event.wait(every_s):
            dead = [t.name for t in threads if t.ident is not None and not t.is_alive()]
            if dead:
                log.critical("ingest thread(s) %s stopped on an error; exiting", ", ".join(dead))
                return dead
        return []
