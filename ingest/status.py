"""``farmtel status``: is every gateway well? Built from the retained status messages.

Each agent publishes a retained JSON status on ``farmtel/v1/{plantation}/{gateway}/status``
(agent/service.py ``status_payload``) and the broker keeps the last one, or the Last Will
``{"state": "offline"}`` when the connection dropped. Subscribing briefly gets the newest
status of every gateway at once. InfluxDB adds what the broker cannot: the ``farmtel_agent``
points of gateways whose retained message is gone, and the ``farmtel_ingest`` points that
say whether the ingest processes are alive (see ingest/selfmetrics.py).

A gateway *needs attention* when it is offline, its status is stale, its outbox holds
readings older than a threshold, its clock is not synced, a sensor is failing or silent, or
the ingest dead-lettered one of its batches lately. An ingest needs attention when its last
``farmtel_ingest`` point is older than a few of its report intervals, and so does InfluxDB
when it does not answer (then none of the above that only it knows can be checked). The CLI
turns that into a non-zero exit code for cron and monitoring.

Dead-lettered batches: the agent's ``dead_lettered`` counter only grows (until the agent
restarts), so one bad batch would keep the exit code at 3 for good. What needs attention is
an *increase* within ``--dead-letter-window``: the counter now (retained status, else the
newest ``farmtel_agent`` point) less its value in the newest point from before the window.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from contract.ids import check_ident
from contract.mqtt import connect_properties, make_client, reason_text
from contract.settings import MqttSettings
from contract.topics import TOPIC_ROOT, parse_topic
from contract.wire import iso_utc
from ingest.config import IngestSection
from ingest.influx import InfluxError, InfluxQuery, InfluxQueryError, Series, redact_url

AGENT_MEASUREMENT = "farmtel_agent"
INGEST_MEASUREMENT = "farmtel_ingest"
FAILING_SENSOR_STATES = ("failing", "silent")
INGEST_LATE_MIN_S = 10.0
"""An ingest is never late sooner than this: clocks of two hosts differ, writes take time."""
DEFAULT_INGEST_INTERVAL_S: float = IngestSection.model_fields["metrics_interval"].default
"""``[ingest] metrics_interval`` by default, for an ingest whose points do not say theirs."""


class StatusUnavailable(ConnectionError):
    """The broker could not be asked; the message names host, port and what to check."""


@dataclass(frozen=True)
class Thresholds:
    """When a gateway needs attention. Seconds unless said otherwise."""

    max_backlog_age_s: float = 900.0
    """Oldest unsent reading older than this."""
    stale_after_s: float = 300.0
    """An "online" status older than this (the agent publishes every 30 s by default)."""
    require_synced_clock: bool = True
    """A clock other than ``synced`` needs attention."""
    ingest_late_after: float = 3.0
    """An ingest whose last point is older than this many of its report intervals (and
    :data:`INGEST_LATE_MIN_S`) needs attention."""
    dead_letter_window_s: float = 3600.0
    """A gateway with a batch dead-lettered within this many seconds needs attention."""


class _AsDict:
    """``as_dict()`` for the JSON output of a dataclass."""

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)  # type: ignore[call-overload]  # dataclasses only
        return data


@dataclass
class GatewayStatus(_AsDict):
    plantation: str
    gateway: str
    state: str
    """online, offline, stale or unknown (known to InfluxDB only)."""
    last_seen_ns: int | None = None
    clock: str = ""
    outbox_readings: int | None = None
    outbox_oldest_age_s: float | None = None
    inflight_batches: int | None = None
    batch_limit: int | None = None
    """Readings a new batch may take now: ``[outbox] batch_size``, less after lost connections."""
    failing_sensors: list[str] = field(default_factory=list)
    source: str = "broker"
    dead_lettered: int | None = None
    """Batches the ingest dead-lettered (refused) for this gateway since its agent started."""
    dead_lettered_recent: int | None = None
    """Of those, how many within the window; None when that cannot be known (no InfluxDB,
    or its points from before the window do not carry the counter)."""
    problems: list[str] = field(default_factory=list)


@dataclass
class IngestStatus(_AsDict):
    client_id: str
    host: str
    last_seen_ns: int
    fields: dict[str, float]
    report_interval_s: float = DEFAULT_INGEST_INTERVAL_S
    """Its ``[ingest] metrics_interval``: from its point, else the gap between its last two."""
    dead_letters_recent: int | None = None
    """Messages it dead-lettered within the window (all plantations), None when unknown."""
    problems: list[str] = field(default_factory=list)


@dataclass
class InfluxState(_AsDict):
    """Whether InfluxDB was asked, and why its answer is missing."""

    url: str
    database: str
    consulted: bool
    problem: str | None = None


def influx_problem(url: str, err: Exception) -> str:
    """One line for the table and JSON: which InfluxDB, and what went wrong."""
    where = redact_url(url)
    text = str(err)
    prefix = f"InfluxDB at {where} "
    detail = text[len(prefix) :] if text.startswith(prefix) else text
    if isinstance(err, InfluxError) and err.status is None:
        unreached = "could not be reached for "  # ingest/influx.py _transport_error
        if detail.startswith(unreached):
            return f"{prefix}did not answer {detail[len(unreached) :]}"
        return f"{prefix}did not answer: {detail}"
    if isinstance(err, InfluxError):
        return f"{prefix}could not be queried: {detail}"
    return f"{prefix}not consulted: {detail}"


def status_filter(plantation: str | None) -> str:
    if plantation is not None:
        check_ident(plantation, "--plantation")
    return f"{TOPIC_ROOT}/{plantation or '+'}/+/status"


def collect_retained(
    settings: MqttSettings, plantation: str | None, wait_s: float = 2.0, quiet_s: float = 0.3
) -> dict[tuple[str, str], bytes]:
    """The retained status payload of every gateway (of ``plantation``), by (plantation, gateway).

    Retained messages arrive right after the subscription is granted; we stop once none came
    for ``quiet_s`` after that, or after ``wait_s`` in all. Raises :class:`StatusUnavailable`
    when the broker cannot be reached or refuses us within ``wait_s`` (+ a connect timeout).
    """
    topic = status_filter(plantation)
    got: dict[tuple[str, str], bytes] = {}
    lock = threading.Lock()
    subscribed = threading.Event()
    failed: list[str] = []
    last_message = [time.monotonic()]
    client = make_client(settings, f"farmtel-status-{time.time_ns() % 10**12}")

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            failed.append(f"the broker refused the connection: {reason_text(rc)}")
            subscribed.set()
            return
        c.subscribe(topic, qos=0)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, rcs: Any, _p: Any = None) -> None:
        if any(r.is_failure for r in rcs):
            failed.append(f"the broker refused the subscription to {topic}: {reason_text(rcs[0])}")
        last_message[0] = time.monotonic()
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            parts = parse_topic(msg.topic)
        except ValueError:
            return
        with lock:
            if msg.payload:  # an empty retained message clears a status
                got[(parts.plantation, parts.gateway)] = bytes(msg.payload)
            last_message[0] = time.monotonic()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(
            settings.host,
            settings.port,
            keepalive=settings.keepalive,
            clean_start=True,
            properties=connect_properties(),
        )
    except OSError as err:
        raise StatusUnavailable(
            f"MQTT broker {settings.host}:{settings.port} cannot be reached ({err}); check "
            "--broker or [mqtt] host/port in --config"
        ) from None
    client.loop_start()
    try:
        if not subscribed.wait(wait_s + 5):
            raise StatusUnavailable(
                f"MQTT broker {settings.host}:{settings.port} did not answer within "
                f"{wait_s + 5:g} s"
            )
        if failed:
            raise StatusUnavailable(f"MQTT broker {settings.host}:{settings.port}: {failed[0]}")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with lock:
                if time.monotonic() - last_message[0] >= quiet_s:
                    break
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return dict(got)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """``raw[key]`` if it is a JSON object, else an empty one (a status from an older or
    broken agent)."""
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _whole(value: Any) -> int | None:
    """:func:`_num` as an int (a count), or None."""
    n = _num(value)
    return None if n is None else int(n)


def assess(
    plantation: str, gateway: str, payload: bytes, now_ns: int, limits: Thresholds
) -> GatewayStatus:
    """One gateway's status from its retained payload, with what needs attention."""
    row = GatewayStatus(plantation, gateway, state="unknown")
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raw = None
    if not isinstance(raw, dict):
        row.problems.append("status message is not a JSON object")
        return row
    row.state = str(raw.get("state") or "unknown")
    ts = raw.get("ts")
    row.last_seen_ns = int(ts) if isinstance(ts, int) and not isinstance(ts, bool) else None
    row.clock = str(raw.get("clock") or "")
    outbox = _table(raw, "outbox")
    row.outbox_readings = _whole(outbox.get("readings"))
    row.outbox_oldest_age_s = _num(outbox.get("oldest_age_s"))
    row.inflight_batches = _whole(outbox.get("inflight_batches"))
    row.batch_limit = _whole(outbox.get("batch_limit"))
    sensors = _table(raw, "sensors")
    row.failing_sensors = sorted(
        sid
        for sid, health in sensors.items()
        if isinstance(health, dict) and health.get("state") in FAILING_SENSOR_STATES
    )
    counters = _table(raw, "counters")
    row.dead_lettered = _whole(counters.get("dead_lettered"))
    judge(row, now_ns, limits)
    mqtt = raw.get("mqtt")
    shared = mqtt.get("client_id_shared") if isinstance(mqtt, dict) else None
    if isinstance(shared, str) and shared and row.state in ("online", "stale"):
        row.problems.append(shared[:500])
    return row


def judge(row: GatewayStatus, now_ns: int, limits: Thresholds) -> None:
    """Fill ``row.problems`` (and mark a stale "online" as ``stale``)."""
    if row.state == "online" and row.last_seen_ns is not None:
        age_s = (now_ns - row.last_seen_ns) / 1e9
        if age_s > limits.stale_after_s:
            row.state = "stale"
            row.problems.append(
                f"last status {age_s:.0f} s ago (more than --stale-after {limits.stale_after_s:g})"
            )
    if row.state == "offline":
        row.problems.append("offline")
    elif row.state == "unknown":
        row.problems.append("no status on the broker")
    # What a status says about the outbox is only true as of that status.
    if row.state in ("online", "stale"):
        # The age grew since the status was sent.
        oldest = row.outbox_oldest_age_s
        if oldest is not None and row.last_seen_ns is not None:
            oldest += max(0.0, (now_ns - row.last_seen_ns) / 1e9)
        if oldest is not None and oldest > limits.max_backlog_age_s:
            row.problems.append(
                f"outbox backlog {row.outbox_readings} reading(s), oldest {oldest:.0f} s "
                f"(more than --max-backlog-age {limits.max_backlog_age_s:g})"
            )
        if limits.require_synced_clock and row.clock and row.clock != "synced":
            row.problems.append(f"clock {row.clock}")
        if row.failing_sensors:
            row.problems.append("failing sensor(s): " + ", ".join(row.failing_sensors))


def judge_dead_letters(row: GatewayStatus, limits: Thresholds) -> None:
    """Batches refused lately: a revoked key, a bad signature, a malformed batch; their
    readings are not stored (the gateway deleted them on the receipt)."""
    if row.dead_lettered_recent:
        row.problems.append(
            f"{row.dead_lettered_recent} batch(es) dead-lettered by the ingest in the last "
            f"{limits.dead_letter_window_s:g} s (--dead-letter-window; {row.dead_lettered} since "
            "the agent started); the ingest's deadletter.sqlite says why"
        )


def mark_revoked(
    rows: list[GatewayStatus], revoked: dict[tuple[str, str], int], limits: Thresholds
) -> None:
    """Gateways revoked in the registry (``revoked``: (plantation, gateway) -> when): shown
    as ``revoked``, and not missing. Their Last Will is refused by the ACL, so the broker
    keeps their last "online" status and they would read as stale for ever. One that still
    sends keeps its dead-lettered problem: someone runs a revoked gateway."""
    for row in rows:
        at = revoked.get((row.plantation, row.gateway))
        if at is None:
            continue
        row.state = "revoked"
        row.problems = []
        judge_dead_letters(row, limits)
        row.problems = [f"revoked at {iso_utc(at)} but still sending: {p}" for p in row.problems]


def judge_ingest(ingest: IngestStatus, now_ns: int, limits: Thresholds) -> None:
    """An ingest that missed reports: dead, hung, or unable to write to InfluxDB. One whose
    last point says it stopped cleanly (``stopped``) was stopped on purpose: no problem."""
    if ingest.fields.get("stopped"):
        return
    interval = ingest.report_interval_s
    late_after = max(limits.ingest_late_after * interval, INGEST_LATE_MIN_S)
    age_s = (now_ns - ingest.last_seen_ns) / 1e9
    if age_s > late_after:
        ingest.problems.append(
            f"no report for {age_s:.0f} s, since {iso_utc(ingest.last_seen_ns)} (it reports "
            f"every {interval:g} s; late after {late_after:g} s: --ingest-late-after "
            f"{limits.ingest_late_after:g} intervals, at least {INGEST_LATE_MIN_S:g} s)"
        )


def increase(now: int | None, before: int | None) -> int | None:
    """How much a counter that only grows (and restarts at 0) grew since ``before``."""
    if now is None or before is None:
        return None
    return now if now < before else now - before


def _query_or_nothing(
    client: InfluxQuery, q: str, params: dict[str, str | int | float] | None = None
) -> list[Series]:
    """Run ``q``; a database that does not exist yet simply holds no points."""
    try:
        return client.query(q, params=params)
    except InfluxQueryError as err:
        if "database not found" in err.server_message:
            return []
        raise


def _where(plantation: str | None, times: str) -> tuple[str, dict[str, str | int | float]]:
    """``times``, and the plantation as a bound parameter when one is asked for."""
    if plantation is None:
        return times, {}
    return f'{times} AND "plantation" = $plantation', {"plantation": plantation}


def agent_points(
    client: InfluxQuery, plantation: str | None
) -> dict[tuple[str, str], GatewayStatus]:
    """The newest ``farmtel_agent`` point per gateway (last 30 days) as a status row."""
    where, params = _where(plantation, "time > now() - 30d")
    series = _query_or_nothing(
        client,
        f'SELECT * FROM "{AGENT_MEASUREMENT}" WHERE {where} '
        'GROUP BY "plantation", "gateway" ORDER BY time DESC LIMIT 1',
        params,
    )
    out = {}
    for s in series:
        if not s.values:
            continue
        rec = dict(zip(s.columns, s.values[0], strict=True))
        p, g = s.tags.get("plantation", ""), s.tags.get("gateway", "")
        out[(p, g)] = GatewayStatus(
            plantation=p,
            gateway=g,
            state="unknown",
            last_seen_ns=int(rec["time"]),
            outbox_readings=_whole(rec.get("outbox_readings")),
            outbox_oldest_age_s=_num(rec.get("outbox_oldest_age_s")),
            inflight_batches=_whole(rec.get("inflight_batches")),
            batch_limit=_whole(rec.get("batch_limit")),
            source="influxdb",
            dead_lettered=_whole(rec.get("dead_lettered")),
        )
    return out


def counters_before(
    client: InfluxQuery,
    measurement: str,
    counter: str,
    always: str,
    tags: tuple[str, str],
    window_s: float,
    plantation: str | None = None,
) -> dict[tuple[str, str], int | None]:
    """``counter`` in the newest point of each series from before the window (30 days back).

    ``always`` is a field every point has: a point without ``counter`` (written before the
    counter was) maps to None, "not known", rather than being skipped for an older one.
    """
    where, params = _where(plantation, f"time <= now() - {int(window_s)}s AND time > now() - 30d")
    series = _query_or_nothing(
        client,
        f'SELECT "{counter}", "{always}" FROM "{measurement}" WHERE {where} '
        f'GROUP BY "{tags[0]}", "{tags[1]}" ORDER BY time DESC LIMIT 1',
        params,
    )
    out = {}
    for s in series:
        if s.values:
            rec = dict(zip(s.columns, s.values[0], strict=True))
            out[(s.tags.get(tags[0], ""), s.tags.get(tags[1], ""))] = _whole(rec.get(counter))
    return out


def agent_dead_lettered_before(
    client: InfluxQuery, plantation: str | None, window_s: float
) -> dict[tuple[str, str], int | None]:
    """Each gateway's ``dead_lettered`` just before the window, by (plantation, gateway)."""
    return counters_before(
        client,
        AGENT_MEASUREMENT,
        "dead_lettered",
        "state",
        ("plantation", "gateway"),
        window_s,
        plantation,
    )


def ingest_points(client: InfluxQuery, window_s: float | None = None) -> list[IngestStatus]:
    """The newest ``farmtel_ingest`` point of every ingest process (last 30 days), its report
    interval, and (with ``window_s``) the messages it dead-lettered within that window."""
    series = _query_or_nothing(
        client,
        f'SELECT * FROM "{INGEST_MEASUREMENT}" WHERE time > now() - 30d '
        'GROUP BY "client_id", "host" ORDER BY time DESC LIMIT 2',
    )
    before = (
        {}
        if window_s is None
        else counters_before(
            client, INGEST_MEASUREMENT, "dead_letters", "messages", ("client_id", "host"), window_s
        )
    )
    out = []
    for s in series:
        if not s.values:
            continue
        rec = dict(zip(s.columns, s.values[0], strict=True))
        nums = {k: v for k, v in ((k, _num(v)) for k, v in rec.items() if k != "time")}
        fields = {k: v for k, v in nums.items() if v is not None}
        ingest = IngestStatus(
            client_id=s.tags.get("client_id", ""),
            host=s.tags.get("host", ""),
            last_seen_ns=int(rec["time"]),
            fields=fields,
        )
        if fields.get("metrics_interval_ms"):
            ingest.report_interval_s = fields["metrics_interval_ms"] / 1000
        elif len(s.values) > 1:  # an older ingest: its points do not say
            gap_s = (int(rec["time"]) - int(s.values[1][s.columns.index("time")])) / 1e9
            ingest.report_interval_s = max(1.0, round(gap_s, 1))
        if window_s is not None:
            # No point from before the window: it started within the window.
            ingest.dead_letters_recent = increase(
                _whole(fields.get("dead_letters")), before.get((ingest.client_id, ingest.host), 0)
            )
        out.append(ingest)
    return sorted(out, key=lambda i: i.client_id)


def combine(
    retained: dict[tuple[str, str], bytes],
    from_influx: dict[tuple[str, str], GatewayStatus],
    now_ns: int,
    limits: Thresholds,
    dead_before: dict[tuple[str, str], int | None] | None = None,
) -> list[GatewayStatus]:
    """Broker status first; a gateway only InfluxDB knows shows as ``unknown``.

    ``dead_before`` (from :func:`agent_dead_lettered_before`; None without InfluxDB) gives
    each gateway's dead-lettered batches within the window: a gateway InfluxDB knows but has
    no point of from before the window started reporting within it, so counts from 0.
    """
    rows = {key: assess(*key, payload, now_ns, limits) for key, payload in retained.items()}
    for key, row in from_influx.items():
        known = rows.get(key)
        if known is None:
            judge(row, now_ns, limits)
            rows[key] = row
            continue
        if known.last_seen_ns is None:
            known.last_seen_ns = row.last_seen_ns  # a Last Will has no time; the point has
        if known.dead_lettered is None:
            known.dead_lettered = row.dead_lettered  # nor counters
    if dead_before is not None:
        for key, row in rows.items():
            if key in dead_before:
                row.dead_lettered_recent = increase(row.dead_lettered, dead_before[key])
            elif key in from_influx:
                row.dead_lettered_recent = increase(row.dead_lettered, 0)
            judge_dead_letters(row, limits)
    return [rows[k] for k in sorted(rows)]
