"""``farmtel agent run``: wires drivers, scheduler, outbox and publisher together.

Threads:
- one per serial port (scheduler.PortWorker) -> readings into an in-memory hand-off list;
- the committer: every ``commit_interval`` writes the hand-off list to the outbox in one
  transaction (a reading is safe once committed, and only then is it published);
- the sender: takes batches from the outbox and publishes them, republishes overdue ones;
  a part batch waits up to ``send_delay`` for more readings (see ``_hold_s``);
- paho's network thread: receipts -> outbox.ack().
"""

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from types import FrameType
from typing import Any

import orjson

from agent.clock import ClockWatch
from agent.config import GatewayConfig
from agent.downtime import ALIVE_EVERY_S, AliveMark, ClockSteps, Downtime, clock_state, in_pieces
from agent.memory import limit_malloc_arenas, release_free_memory
from agent.metrics import agent_metrics_server
from agent.outbox import ROW_READINGS, NewReading, Outbox
from agent.publisher import Publisher
from agent.scheduler import PortWorker, SensorHealth, group_by_port
from agent.signer import BatchSigner
from contract.settings import make_state_dir
from contract.wire import Gap, Receipt, ReceiptStatus, WireReading, encode_wire_batch
from sensors.registry import make_driver

log = logging.getLogger(__name__)

MAX_RESEND_BACKOFF = 10
SENDER_TICK_S = 0.5
"""The sender looks for overdue batches at least this often (seconds)."""
RELEASE_AFTER_S = 5
"""Seconds after start when the memory freed by start-up is handed back (agent/memory.py)."""
MIN_BATCH_AFTER_LOSS = 100
"""New batches shrink no further than this (or ``batch_size``, if smaller) after lost
connections; see :class:`BatchLimit`."""
GROW_AFTER_RECEIPTS = 4
"""Receipts in a row, with no connection lost, after which new batches may be twice as big."""


class BatchLimit:
    """How many readings a new batch may take: ``[outbox] batch_size``, less on a poor link.

    A connection lost while batches are in flight halves it, down to
    :data:`MIN_BATCH_AFTER_LOSS`: over a link that drops every minute, a batch that takes
    longer than that to send would be sent again and again and never get through. Every
    :data:`GROW_AFTER_RECEIPTS` receipts in a row double it again, up to ``batch_size``. A
    batch already in flight keeps its readings (it is resent as it was).
    """

    def __init__(self, batch_size: int):
        self.most = batch_size
        self.least = min(batch_size, MIN_BATCH_AFTER_LOSS)
        self.now = batch_size
        self._receipts = 0
        self._lock = threading.Lock()

    def lost(self) -> int:
        """A connection was lost with batches in flight: halve; the new limit."""
        with self._lock:
            self._receipts = 0
            self.now = max(self.least, self.now // 2)
            return self.now

    def receipted(self) -> int:
        """A batch was receipted: grow after enough in a row; the limit."""
        with self._lock:
            self._receipts += 1
            if self._receipts >= GROW_AFTER_RECEIPTS and self.now < self.most:
                self._receipts = 0
                self.now = min(self.most, self.now * 2)
            return self.now


class Agent:
    def __init__(self, config: GatewayConfig):
        self.config = config
        self.boot = uuid.uuid4().hex
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.clock = ClockWatch()
        self.health: dict[str, SensorHealth] = {}
        self._pending: list[NewReading] = []
        self._pending_gaps: list[Gap] = []
        self._pending_lock = threading.Lock()
        # Committed entries (readings + gaps) not yet in a batch, counted by this process, and
        # when the first of them was committed; see _hold_s().
        self._unsent = 0
        self._unsent_since = 0.0
        self._drained = False
        self._unsent_lock = threading.Lock()
        self.batch_limit = BatchLimit(config.outbox.batch_size)
        self.counters: dict[str, int] = {
            "readings_in": 0,
            "readings_acked": 0,
            "batches_sent": 0,
            "batches_resent": 0,
            "receipts": 0,
            "dead_lettered": 0,
            "gaps": 0,
        }
        make_state_dir(config.gateway.state_dir, "gateway.state_dir")
        self.outbox = Outbox(
            config.outbox_path(),
            config.gateway.id,
            config.outbox.max_bytes,
            # A batch takes whole rows: rows this process stores hold no more readings than
            # its smallest batch (rows stored before batch_size was lowered may).
            row_readings=min(ROW_READINGS, self.batch_limit.least),
        )
        if self.outbox.recovered_from is not None:
            log.error(
                "outbox was corrupt and was moved aside path=%s; collection goes on",
                self.outbox.recovered_from,
            )
        # The outbox's mark of when the agent last ran, against this start (agent/downtime.py).
        self.downtime = Downtime(
            self.outbox.last_alive,
            outbox_lost=self.outbox.recovered_from is not None,
            synced=self.clock.synced,
        )
        self.clock_steps = ClockSteps()
        # Marks never go back (agent/downtime.py): the latest mark or committed reading.
        last = self.outbox.last_alive
        self._mark_floor = last.ns if last is not None else 0
        self._mark_clock = last.clock if last is not None else "invalid"
        self._marked_at = float("-inf")
        self.publisher = Publisher(
            config.mqtt,
            config.client_id(),
            config.gateway.plantation,
            config.gateway.id,
            on_receipt=self._receipt,
            on_publish_failed=self._publish_failed,
            # Testing only ([outbox] prune_on): the control run of the broker-crash test.
            on_puback=self._pruned_on_puback if config.outbox.prune_on == "puback" else None,
            on_connection_lost=self._connection_lost,
        )
        self.drivers = [make_driver(s) for s in config.sensors]
        self.signer = BatchSigner.from_config(config)
        self.workers = [
            PortWorker(
                port,
                drivers,
                self._take_readings,
                self._take_gap,
                self.clock,
                self.stop_event,
                self.health,
            )
            for port, drivers in group_by_port(self.drivers).items()
        ]
        self._threads: list[threading.Thread] = []
        self.prometheus = agent_metrics_server(self)

    # --- hand-off from the port threads -------------------------------------------------
    def _take_readings(self, readings: Sequence[NewReading]) -> None:
        with self._pending_lock:
            self._pending.extend(readings)

    def _take_gap(self, gap: Gap) -> None:
        log.warning(
            "gap sensor=%s reason=%s start=%d end=%d detail=%s",
            gap.sensor,
            gap.reason,
            gap.start,
            gap.end,
            gap.detail,
        )
        with self._pending_lock:
            self._pending_gaps.append(gap)

    def _alive_mark(self, readings: Sequence[NewReading] = (), stopped: bool = False) -> AliveMark:
        """Now, or the latest mark or reading if later (a clock set back): never back."""
        now = time.time_ns()
        newest = max((r.ts for r in readings), default=0)
        ns = max(now, self._mark_floor, newest)
        if ns in (now, newest):
            self._mark_clock = clock_state(now, self.clock.synced())
        # else: the previous mark stands, with the clock it was read from (a 1970 clock now
        # must not make a real earlier mark unusable).
        self._mark_floor = ns
        return AliveMark(ns, self._mark_clock, stopped)

    def _clock_step(self) -> Gap | None:
        """A forward clock step's gap, from no earlier than the newest mark or reading: a
        clock restored behind them (fake-hwclock) dated new readings among older ones."""
        step = self.clock_steps.check()
        if step is None or step.start >= self._mark_floor:
            return step
        if step.end <= self._mark_floor:
            return None
        return step.model_copy(update={"start": self._mark_floor})

    def _commit_once(self) -> int:
        found = [self._clock_step()]
        if self.downtime.pending:
            found.append(self.downtime.check())
        for gap in found:
            for piece in in_pieces(gap) if gap is not None else ():
                self._take_gap(piece)
        with self._pending_lock:
            readings, self._pending = self._pending, []
            gaps, self._pending_gaps = self._pending_gaps, []
        mono = time.monotonic()
        if not readings and not gaps:
            if mono - self._marked_at >= ALIVE_EVERY_S:
                # Counted as done even if it fails: a failing disk is logged once per
                # ALIVE_EVERY_S here, not on every pass.
                self._marked_at = mono
                self.outbox.mark_alive(self._alive_mark())
            return 0
        # Every commit carries the mark: a downtime declared later starts after it.
        self.outbox.note_alive(self._alive_mark(readings))
        self._marked_at = mono
        stored_gaps = 0
        try:
            self.outbox.add_gaps(gaps)
            stored_gaps = len(gaps)
            self.counters["gaps"] += len(gaps)
            if readings:
                self.outbox.add(readings)
                self.counters["readings_in"] += len(readings)
        except Exception:
            # Nothing of this group reached the disk (add() is one transaction): hand it
            # back, in order, for the next try.
            with self._pending_lock:
                self._pending = readings + self._pending
                self._pending_gaps = gaps[stored_gaps:] + self._pending_gaps
            raise
        if (readings or gaps) and self._note_committed(len(readings) + len(gaps)):
            self.wake.set()
        return len(readings)

    # --- when to publish -------------------------------------------------------------------
    def _note_committed(self, entries: int) -> bool:
        """Count ``entries`` newly committed; True if the sender should look at once."""
        with self._unsent_lock:
            if self._unsent == 0:
                self._unsent_since = time.monotonic()
            self._unsent += entries
        return self._hold_s() <= 0

    def _note_taken(self, readings: int, gaps: int, asked: int) -> None:
        """A new batch asked for ``asked`` readings and took ``readings`` and ``gaps`` out of
        the unsent ones."""
        # A batch short of what it asked for took every unassigned reading there was, unless
        # the outbox's byte budget cut it (readings with many values).
        drained = readings < asked and not self.outbox.has_unassigned_readings()
        with self._unsent_lock:
            self._drained = drained
            self._unsent = 0 if drained else max(0, self._unsent - readings - gaps)

    def _hold_s(self) -> float:
        """Seconds new batches should still wait for more readings (<= 0: publish now).

        Only a part batch waits, and only once the outbox is drained: the oldest reading
        this process committed since the last batch waits at most ``send_delay``. A backlog
        (after a restart or an outage) and full batches go out without delay.
        """
        delay = self.config.outbox.send_delay
        with self._unsent_lock:
            if (
                delay <= 0
                or not self._drained
                or self._unsent == 0
                or self._unsent >= self.batch_limit.now
            ):
                return 0.0
            return self._unsent_since + delay - time.monotonic()

    def _committer(self) -> None:
        interval = self.config.outbox.commit_interval
        while not self.stop_event.wait(interval):
            try:
                self._commit_once()
            except Exception:
                # The readings stay in memory only until the next try; a failing disk is
                # logged loudly every interval rather than taking the agent down.
                log.exception("outbox commit failed")
        # The port workers take what their ports still hold before they close (a busy port
        # is read once per read_window): commit that too.
        for w in self.workers:
            w.join(timeout=10)
        try:
            self._commit_once()
            self.outbox.mark_alive(self._alive_mark(stopped=True))
        except Exception:
            # Then the next start reads the last mark stored as a crash: the same gap start.
            log.exception("outbox: the last commit or the clean-stop mark failed")

    # --- MQTT side -------------------------------------------------------------------------
    def _receipt(self, receipt: Receipt) -> None:
        deleted = self.outbox.ack(receipt.batch)
        self.counters["receipts"] += 1
        self.counters["readings_acked"] += deleted
        if deleted:
            before = self.batch_limit.now
            if self.batch_limit.receipted() > before:
                log.info("new batches hold at most %d readings again", self.batch_limit.now)
        if receipt.status is not ReceiptStatus.STORED:
            self.counters["dead_lettered"] += 1
            log.error(
                "batch dead-lettered by ingest batch=%s reason=%s", receipt.batch, receipt.reason
            )
        self.wake.set()

    def _connection_lost(self) -> None:
        """paho lost the broker: if batches were in flight, new ones get smaller."""
        inflight = self.outbox.inflight_batches()
        if inflight:
            before = self.batch_limit.now
            if self.batch_limit.lost() < before:
                log.warning(
                    "connection lost with %d batch(es) in flight: new batches hold at most %d "
                    "readings until receipts come back",
                    inflight,
                    self.batch_limit.now,
                )

    def _pruned_on_puback(self, batch: str) -> None:
        self._receipt(Receipt(batch=batch, status=ReceiptStatus.STORED))

    def _publish_failed(self, batch: str, reason: str) -> None:
        log.error("publish failed batch=%s reason=%s; it stays in the outbox", batch, reason)

    def _send_batch(self, batch_id: str, resend: bool) -> bool:
        # A new batch is its rows' records joined (each one a reading's wire form, checked
        # when it was added): nothing parsed or built per reading (docs/performance.md). A
        # resend reads its rows again and checks them.
        body: list[WireReading] | orjson.Fragment
        if resend:
            readings, gaps = self.outbox.wire_batch_contents(batch_id)
            count, body = len(readings), readings
        else:
            asked = self.batch_limit.now
            count, joined, gaps = self.outbox.next_raw_batch(batch_id, asked)
            self._note_taken(count, len(gaps), asked)
            body = orjson.Fragment(joined)
            # The signature covers the readings as the ingest will parse them.
            readings = orjson.loads(joined) if self.signer.key is not None else []
        if not count and not gaps:
            return False
        gateway = self.config.gateway.id
        sig = self.signer.signature(gateway, batch_id, readings, gaps)
        payload = encode_wire_batch(gateway, self.boot, batch_id, time.time_ns(), body, gaps, sig)
        self.publisher.publish_batch(batch_id, payload)
        self.outbox.mark_sent(batch_id)
        self.counters["batches_resent" if resend else "batches_sent"] += 1
        return True

    def _sender(self) -> None:
        cfg = self.config.outbox
        while not self.stop_event.is_set():
            self.wake.clear()
            wait = SENDER_TICK_S
            if self.publisher.connected.is_set():
                try:
                    wait = self._send_round(cfg.max_inflight, cfg.receipt_timeout)
                except Exception:
                    log.exception("sending failed; retrying")
            self.wake.wait(wait)

    def _send_round(self, max_inflight: int, timeout: float) -> float:
        """Resend overdue batches, publish new ones; return the seconds until the next round."""
        now = time.monotonic()  # the outbox times batches on the monotonic clock
        overdue = self.outbox.overdue_batches(timeout, now)
        for batch_id in overdue:
            attempts = self.outbox.attempts(batch_id)
            if attempts > 1:
                # Back off: the n-th resend waits timeout x 2^(n-1), at most x MAX_RESEND_BACKOFF.
                wait = timeout * min(2 ** (attempts - 1), MAX_RESEND_BACKOFF)
                if batch_id not in self.outbox.overdue_batches(wait, now):
                    continue
            log.info("resending batch=%s attempt=%d", batch_id, attempts + 1)
            self._send_batch(batch_id, resend=True)
        while self.outbox.inflight_batches() < max_inflight:
            hold = self._hold_s()
            if hold > 0:
                return min(max(hold, 0.01), SENDER_TICK_S)
            if not self._send_batch(uuid.uuid4().hex, resend=False):
                break
        return SENDER_TICK_S

    # --- status ----------------------------------------------------------------------------
    def status_payload(self, state: str = "online") -> bytes:
        depth = self.outbox.depth()
        now = time.time_ns()
        return orjson.dumps(
            {
                "state": state,
                "gateway": self.config.gateway.id,
                "plantation": self.config.gateway.plantation,
                "boot": self.boot,
                "ts": now,
                "clock": self.clock.quality().value,
                "outbox": {
                    "readings": depth.readings,
                    "gaps": depth.gaps,
                    "bytes": depth.bytes,
                    "oldest_age_s": (now - depth.oldest_ts) / 1e9 if depth.oldest_ts else None,
                    "inflight_batches": depth.inflight_batches,
                    "batch_limit": self.batch_limit.now,
                    "dropped": self.outbox.dropped_total,
                },
                "sensors": {k: v.as_dict() for k, v in self.health.items()},
                "counters": dict(self.counters),
                "mqtt": {
                    "disconnects": self.publisher.disconnects,
                    "publish_failures": self.publisher.publish_failures,
                    # Another client taking our client id: farmtel status names it.
                    "client_id_shared": self.publisher.client_id_shared(),
                },
            }
        )

    def _status_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.publisher.publish_status(self.status_payload())
            except Exception:
                log.exception("status publish failed")
            self.stop_event.wait(self.config.status.interval)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        log.info(
            "agent starting plantation=%s gateway=%s sensors=%d outbox=%s pid=%d",
            self.config.gateway.plantation,
            self.config.gateway.id,
            len(self.drivers),
            self.config.outbox_path(),
            os.getpid(),
        )
        self.publisher.start()
        if self.prometheus is not None:
            self.prometheus.start()
        for w in self.workers:
            w.start()
        for target in (self._committer, self._sender, self._status_loop):
            t = threading.Thread(target=target, name=target.__name__.strip("_"), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
        for w in self.workers:
            w.join(timeout=10)
        for t in self._threads:
            t.join(timeout=10)
        self.publisher.stop(self.status_payload("offline"))
        if self.prometheus is not None:
            self.prometheus.stop()
        self.outbox.close()
        log.info("agent stopped")

    def run_forever(self) -> None:
        def _stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal received signal=%s; stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        # The whole process is the agent's: keep its resident memory small (agent/memory.py).
        limit_malloc_arenas()
        self.start()
        ticks = 0
        while not self.stop_event.wait(1.0):
            ticks += 1
            if ticks == RELEASE_AFTER_S:  # start-up done: ports open, broker connected
                release_free_memory()
        self.stop()


def run(config: GatewayConfig, **_: Any) -> None:
    Agent(config).run_forever()
