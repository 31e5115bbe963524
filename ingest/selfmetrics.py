"""Self-metrics in InfluxDB, the way Telegraf's ``internal`` input writes its own.

- ``farmtel_ingest``: one point per ingest process every ``[ingest] metrics_interval``
  seconds; tags ``host``, ``client_id``; integer fields: the ingest's cumulative counters
  (messages, batches_stored, readings_stored, gaps_stored, duplicates, seq_holes (a gauge),
  quarantined, dead_letters, write_errors, write_retries, redeliveries), ``inbox`` (messages
  received and not yet written), ``rss_bytes`` and ``metrics_interval_ms`` (how often it
  writes this point: ``farmtel status`` tells a dead ingest by the points it missed).
- ``farmtel_agent``: one point per status message a gateway publishes (retained, every
  ``[status] interval``); tags ``plantation``, ``gateway``; fields outbox_readings,
  outbox_oldest_age_s, inflight_batches, batch_limit, readings_in, readings_acked, batches_sent,
  batches_resent, receipts, dead_lettered, dropped, gaps, state; time = the status's own
  ``ts``.

Metrics are best effort: a point that cannot be written while InfluxDB is down is dropped
(and counted in ``metric_write_errors`` of the next ingest point), never retried ahead of
data.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from contract.ids import check_ident
from contract.topics import TOPIC_ROOT, parse_topic
from ingest.influx import InfluxError, InfluxWriter
from ingest.line_protocol import LineProtocolError, encode_point

if TYPE_CHECKING:
    from ingest.config import IngestConfig

log = logging.getLogger(__name__)

INGEST_MEASUREMENT = "farmtel_ingest"
AGENT_MEASUREMENT = "farmtel_agent"

_AGENT_COUNTERS = (
    "readings_in",
    "readings_acked",
    "batches_sent",
    "batches_resent",
    "receipts",
    "dead_lettered",
    "gaps",
)


class StatusError(ValueError):
    """A status payload is not an agent status; the message says why."""


def rss_bytes() -> int:
    """Resident set size of this process in bytes (from /proc; peak RSS where it is missing)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def ingest_line(host: str, client_id: str, fields: dict[str, int], now_ns: int) -> str:
    """The ``farmtel_ingest`` point: ``fields`` are integer counters and gauges."""
    values: dict[str, float | int | str] = dict(fields)
    return encode_point(INGEST_MEASUREMENT, {"host": host, "client_id": client_id}, values, now_ns)


def _int(raw: dict[str, Any], key: str, where: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StatusError(f"status field {where}{key} is {value!r}, not a number")
    return int(value)


def agent_line(plantation: str, gateway: str, payload: bytes) -> str | None:
    """The ``farmtel_agent`` point for one status payload, or None for an ``offline`` will.

    The plantation and gateway come from the topic (never from the payload). Raises
    :class:`StatusError` when the payload is not a status object.
    """
    check_ident(plantation, "plantation id in topic")
    check_ident(gateway, "gateway id in topic")
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise StatusError(f"status is not JSON: {err}") from None
    if not isinstance(raw, dict):
        raise StatusError(f"status is a JSON {type(raw).__name__}, not an object")
    ts = _int(raw, "ts", "")
    if ts is None:
        return None  # the Last Will ({"state": "offline"}) carries no time and no figures
    state = raw.get("state")
    outbox = raw.get("outbox") or {}
    counters = raw.get("counters") or {}
    if not isinstance(outbox, dict) or not isinstance(counters, dict):
        raise StatusError("status fields outbox and counters must be objects")
    fields: dict[str, float | int | str] = {"state": str(state)[:64]}
    for key, name in (
        ("readings", "outbox_readings"),
        ("inflight_batches", "inflight_batches"),
        ("batch_limit", "batch_limit"),
        ("dropped", "dropped"),
    ):
        n = _int(outbox, key, "outbox.")
        if n is not None:
            fields[name] = n
    age = outbox.get("oldest_age_s")
    if isinstance(age, int | float) and not isinstance(age, bool):
        fields["outbox_oldest_age_s"] = float(age)
    for key in _AGENT_COUNTERS:
        n = _int(counters, key, "counters.")
        if n is not None:
            fields[key] = n
    return encode_point(
        AGENT_MEASUREMENT, {"plantation": plantation, "gateway": gateway}, fields, ts
    )


class SelfMetrics:
    """Writes ``farmtel_ingest`` every ``metrics_interval`` and the agents' status points.

    ``take_status`` runs on paho's network thread and only parses and parks the point
    (one per gateway, the newest wins, so memory is bounded by the number of gateways); a
    daemon thread writes what is parked together with the ingest's own point.
    """

    def __init__(
        self,
        config: IngestConfig,
        writer: InfluxWriter,
        counters: dict[str, int],
        inbox_depth: Callable[[], int],
        counters_lock: threading.Lock | None = None,
    ):
        self.config = config
        self.writer = writer
        self.counters = counters
        # The ingest updates a message's counters together under this lock: a point never
        # shows a message half counted.
        self.counters_lock = counters_lock or threading.Lock()
        self.inbox_depth = inbox_depth
        self.host = socket.gethostname().lower()
        self.write_errors = 0
        self.bad_status = 0
        self._lock = threading.Lock()
        self._agents: dict[tuple[str, str], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="selfmetrics", daemon=True)

    def status_subscription(self) -> str:
        """Agents' status through the ingest's share group: one ingest writes each."""
        return f"$share/{self.config.ingest.share_group}/{TOPIC_ROOT}/+/+/status"

    def take_status(self, topic: str, payload: bytes) -> bool:
        """Park the point for a status message; False when ``topic`` is not a status topic."""
        if not topic.endswith("/status"):
            return False
        try:
            parts = parse_topic(topic)
            line = agent_line(parts.plantation, parts.gateway, payload)
        except (ValueError, LineProtocolError) as err:
            self.bad_status += 1
            log.warning("bad agent status topic=%.200s error=%s", topic, err)
            return True
        if line is not None:
            with self._lock:
                self._agents[(parts.plantation, parts.gateway)] = line
        return True

    def ingest_fields(self) -> dict[str, int]:
        with self.counters_lock:
            fields = dict(self.counters)
        fields["inbox"] = self.inbox_depth()
        fields["rss_bytes"] = rss_bytes()
        fields["metric_write_errors"] = self.write_errors
        fields["bad_status"] = self.bad_status
        fields["metrics_interval_ms"] = round(self.config.ingest.metrics_interval * 1000)
        return fields

    def flush(self, final: bool = False) -> None:
        """Write the ingest point and the parked agent points once; drop them on failure.

        The ``final`` point (a clean stop) carries ``stopped=1``: `farmtel status` then knows
        the ingest was stopped on purpose (scaled down, upgraded), not lost."""
        with self._lock:
            agents, self._agents = list(self._agents.values()), {}
        fields = self.ingest_fields()
        if final:
            fields["stopped"] = 1
        lines = [ingest_line(self.host, self.config.client_id(), fields, time.time_ns())]
        try:
            self.writer.write("\n".join(lines + agents).encode())
        except InfluxError as err:
            self.write_errors += 1
            log.debug("self-metrics not written error=%s", err)

    def _run(self) -> None:
        while not self._stop.wait(self.config.ingest.metrics_interval):
            try:
                self.flush()
            except Exception:  # metrics must never take the ingest down
                log.exception("self-metrics failed")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
            self.flush(final=True)
