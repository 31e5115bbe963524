"""CLI commands for running farmtel for real: ``status``, ``alerts list``, ``query summary``
and ``query gaps``. cli.py registers them with :func:`register`; the logic lives in
:mod:`ingest.status`, :mod:`ingest.reports` and :mod:`ingest.charts`.

Exit codes as in cli.py (0 ok, 1 runtime failure, 2 bad input), plus 3 from ``status``:
something needs attention.
"""

from __future__ import annotations

import sqlite3
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from contract.settings import ConfigError
from ingest.cli_options import (
    ConfigOpt,
    DatabaseOpt,
    FromOpt,
    OutputFormat,
    PlantationOpt,
    SensorOpt,
    ToOpt,
    UrlOpt,
    UtcOpt,
    ValueOpt,
    fail,
    ingest_config,
    query_client,
    time_span,
    when,
)

if TYPE_CHECKING:
    from ingest.status import IngestStatus

NEEDS_ATTENTION = 3


class StatusFormat(StrEnum):
    table = "table"
    json = "json"


class AlertState(StrEnum):
    firing = "firing"
    resolved = "resolved"
    all = "all"


alerts_app = typer.Typer(help="Threshold alerts raised by the ingest.", no_args_is_help=True)


def _since(default: str) -> Any:
    """The ``--since`` option of a report that reads the last ``default`` without one."""
    return typer.Option(
        help=f"How far back from now: 90s, 15m, 24h, 7d, 4w (default: {default}).",
        show_default=False,
    )


# -- query summary / gaps ----------------------------------------------------------------------


def query_summary(
    plantation: PlantationOpt,
    sensor: SensorOpt = None,
    field: ValueOpt = None,
    since: Annotated[str | None, _since("24h")] = None,
    start: FromOpt = None,
    end: ToOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    database: DatabaseOpt = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = (
        OutputFormat.table
    ),
    utc: UtcOpt = False,
) -> None:
    """count/min/mean/max of every value of every sensor over the range (default: 24h)."""
    from ingest import reports
    from ingest.influx import InfluxError
    from ingest.tabular import render

    span = time_span(since, start, end, default="24h")
    client = query_client(config, url, database)
    try:
        rows = reports.summary(client, plantation, span, sensor=sensor, value=field)
    except ValueError as err:
        fail(str(err), 2)
    except InfluxError as err:
        fail(str(err))
    if not rows:
        typer.echo(
            f"no readings for plantation {plantation} between {when(span.start_ns, utc)} and "
            f"{when(span.end_ns, utc)}",
            err=True,
        )
        raise typer.Exit(0)
    cols = ["gateway", "sensor", "kind", "value", "count", "min", "mean", "max"]
    out = [
        [r.gateway, r.sensor, r.measurement, r.value, r.count, r.min, r.mean, r.max] for r in rows
    ]
    typer.echo(render(cols, out, fmt.value), nl=False)


def query_gaps(
    plantation: PlantationOpt,
    gateway: Annotated[
        str | None, typer.Option(help="Only this gateway id.", show_default=False)
    ] = None,
    sensor: Annotated[
        str | None,
        typer.Option(help="Only this sensor id ('*' is a whole-gateway gap).", show_default=False),
    ] = None,
    since: Annotated[str | None, _since("7d")] = None,
    start: FromOpt = None,
    end: ToOpt = None,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    database: DatabaseOpt = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = (
        OutputFormat.table
    ),
    utc: UtcOpt = False,
) -> None:
    """Declared gaps (no data, and why) that start within the range (default: 7d)."""
    from ingest import reports
    from ingest.influx import InfluxError
    from ingest.tabular import render

    span = time_span(since, start, end, default="7d")
    client = query_client(config, url, database)
    try:
        rows = reports.gaps(
            client, plantation, span, gateway=gateway, sensor=None if sensor == "*" else sensor
        )
    except ValueError as err:
        fail(str(err), 2)
    except InfluxError as err:
        fail(str(err))
    if sensor == "*":
        rows = [r for r in rows if r.sensor == "*"]
    if not rows:
        typer.echo(f"no gaps recorded for plantation {plantation} in that range", err=True)
        raise typer.Exit(0)
    cols = ["start", "end", "duration_s", "gateway", "sensor", "reason", "detail"]
    out = [
        [when(r.start_ns, utc), when(r.end_ns, utc), r.duration_s, r.gateway, r.sensor,
         r.reason, r.detail]
        for r in rows
    ]  # fmt: skip
    typer.echo(render(cols, out, fmt.value), nl=False)


# -- alerts ------------------------------------------------------------------------------------


@alerts_app.command("list")
def alerts_list(
    plantation: Annotated[
        str | None,
        typer.Option(help="Only this plantation (default: all).", show_default=False),
    ] = None,
    since: Annotated[str, typer.Option(help="How far back from now: 90s, 15m, 24h, 7d.")] = "24h",
    state: Annotated[AlertState, typer.Option(help="Which transitions to show.")] = AlertState.all,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    database: DatabaseOpt = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = (
        OutputFormat.table
    ),
    utc: UtcOpt = False,
) -> None:
    """Recent alert transitions (firing, resolved) recorded by the ingest, newest first."""
    from ingest import reports
    from ingest.influx import InfluxError
    from ingest.tabular import render

    span = time_span(since, None, None)
    client = query_client(config, url, database)
    try:
        rows = reports.alerts(
            client, plantation, span, None if state is AlertState.all else state.value
        )
    except ValueError as err:
        fail(str(err), 2)
    except InfluxError as err:
        fail(str(err))
    if not rows:
        typer.echo(f"no alerts in the last {since}", err=True)
        raise typer.Exit(0)
    cols = ["time", "state", "severity", "rule", "plantation", "gateway", "sensor", "value",
            "condition", "since"]  # fmt: skip
    out = [
        [
            when(r.time_ns, utc),
            r.state,
            r.severity,
            r.rule,
            r.plantation,
            r.gateway,
            r.sensor,
            r.value,
            f"{r.value_name} {r.op} {r.threshold:g}" if r.threshold is not None else r.value_name,
            when(r.since_ns, utc),
        ]
        for r in rows
    ]
    typer.echo(render(cols, out, fmt.value), nl=False)


# -- status ------------------------------------------------------------------------------------


def status(
    plantation: Annotated[
        str | None,
        typer.Option(help="Only this plantation's gateways (default: all).", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="An ingest.toml for the [mqtt] and [influxdb] settings (FARMTEL_ env applies).",
            show_default=False,
        ),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            help="MQTT broker host:port, instead of [mqtt] host and port.", show_default=False
        ),
    ] = None,
    url: UrlOpt = None,
    database: DatabaseOpt = None,
    use_influx: Annotated[
        bool,
        typer.Option(
            "--influx/--no-influx",
            help="Also read farmtel_agent/farmtel_ingest points from InfluxDB (one that does "
            "not answer then needs attention). --no-influx: the broker alone; ingests and "
            "dead-lettered batches are not checked.",
        ),
    ] = True,
    wait: Annotated[
        float,
        typer.Option(min=0.1, max=60, help="Seconds to wait for retained status messages."),
    ] = 2.0,
    max_backlog_age: Annotated[
        float,
        typer.Option(min=0, help="Seconds the oldest unsent reading may wait before attention."),
    ] = 900.0,
    stale_after: Annotated[
        float, typer.Option(min=1, help="Seconds after which an online status counts as stale.")
    ] = 300.0,
    allow_unsynced_clock: Annotated[
        bool,
        typer.Option(
            "--allow-unsynced-clock", help="Do not count a clock other than synced as a problem."
        ),
    ] = False,
    ingest_late_after: Annotated[
        float,
        typer.Option(
            min=1,
            help="An ingest whose last farmtel_ingest point is older than this many of its "
            "report intervals ([ingest] metrics_interval), and at least 10 s, needs attention.",
        ),
    ] = 3.0,
    dead_letter_window: Annotated[
        float,
        typer.Option(
            min=60,
            max=7 * 86_400,
            help="Seconds back to look for dead-lettered batches: a gateway with any in that "
            "window needs attention.",
        ),
    ] = 3600.0,
    fmt: Annotated[StatusFormat, typer.Option("--format", "-f", help="Output format.")] = (
        StatusFormat.table
    ),
    utc: UtcOpt = False,
) -> None:
    """Every gateway: online/offline, last seen, outbox backlog, clock, failing sensors,
    dead-lettered batches; every ingest: last report, dead letters; and InfluxDB.

    "batch" is how many readings a new batch may take now: the gateway's outbox.batch_size
    setting, or less after it lost connections with batches in flight (a poor link).

    "dead_lettered" is NEW/ALL: batches of the gateway the ingest refused (revoked key,
    malformed batch ...) within --dead-letter-window, and since its agent started. The
    agent's counter only grows, so attention goes by NEW, the counter now less its value in
    the newest farmtel_agent point from before the window ("-" when InfluxDB has none with
    it): one bad batch needs attention for one window, a revoked key until it is fixed.

    A gateway revoked in the device registry ([ingest] registry_path of --config, when this
    host has it) shows as "revoked" instead of stale or offline; one that still sends needs
    attention.

    Exit code 0 when all is well, 3 when something needs attention (offline, stale status,
    old backlog, clock not synced, failing sensor, dead-lettered batches, no gateway found,
    an ingest that stopped reporting, InfluxDB not answering), 1 when the broker cannot be
    asked, 2 for bad options.
    """
    import orjson

    from contract.settings import MqttSettings
    from ingest.influx import InfluxError, InfluxQuery, redact_url
    from ingest.status import (
        InfluxState,
        StatusUnavailable,
        Thresholds,
        agent_dead_lettered_before,
        agent_points,
        collect_retained,
        combine,
        influx_problem,
        ingest_points,
        judge_ingest,
        mark_revoked,
        status_filter,
    )
    from ingest.tabular import render

    try:
        status_filter(plantation)
    except ValueError as err:
        fail(str(err), 2)
    cfg = ingest_config(config, url, database)
    mqtt_settings: MqttSettings = cfg.mqtt
    if broker is not None:
        host, sep, port = broker.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            fail(f"--broker {broker!r} must look like host:port, e.g. 127.0.0.1:1883", 2)
        mqtt_settings = mqtt_settings.model_copy(update={"host": host, "port": int(port)})
    limits = Thresholds(
        max_backlog_age_s=max_backlog_age,
        stale_after_s=stale_after,
        require_synced_clock=not allow_unsynced_clock,
        ingest_late_after=ingest_late_after,
        dead_letter_window_s=dead_letter_window,
    )
    try:
        retained = collect_retained(mqtt_settings, plantation, wait_s=wait)
    except (StatusUnavailable, ConfigError) as err:
        fail(str(err))
    from_influx = {}
    dead_before = None
    ingests = []
    influx = InfluxState(redact_url(cfg.influxdb.url), cfg.influxdb.target, use_influx)
    if use_influx:
        try:
            client = InfluxQuery(cfg.influxdb)
            from_influx = agent_points(client, plantation)
            dead_before = agent_dead_lettered_before(client, plantation, dead_letter_window)
            ingests = ingest_points(client, dead_letter_window)
        except (InfluxError, ValueError, ConfigError) as err:
            # Not a warning: what only InfluxDB knows (ingests, dead letters) goes unchecked.
            influx.problem = influx_problem(cfg.influxdb.url, err)
            dead_before = None
    now = time.time_ns()
    rows = combine(retained, from_influx, now, limits, dead_before)
    mark_revoked(rows, _revoked_gateways(cfg.registry_path()), limits)
    for i in ingests:
        judge_ingest(i, now, limits)
    attention = (
        any(r.problems for r in rows)
        or not rows
        or any(i.problems for i in ingests)
        or influx.problem is not None
    )
    if fmt is StatusFormat.json:
        doc = {
            "attention": attention,
            "gateways": [r.as_dict() for r in rows],
            "ingests": [i.as_dict() for i in ingests],
            "influxdb": influx.as_dict(),
        }
        typer.echo(orjson.dumps(doc).decode())
    else:
        cols = ["plantation", "gateway", "state", "last_seen", "outbox", "oldest_s", "inflight",
                "batch", "clock", "failing", "dead_lettered", "attention"]  # fmt: skip
        out = [
            [
                r.plantation,
                r.gateway,
                r.state,
                when(r.last_seen_ns, utc),
                r.outbox_readings,
                None if r.outbox_oldest_age_s is None else round(r.outbox_oldest_age_s),
                r.inflight_batches,
                r.batch_limit,
                r.clock or "-",
                ",".join(r.failing_sensors) or "-",
                _new_of_all(r.dead_lettered_recent, r.dead_lettered),
                "; ".join(r.problems) or "ok",
            ]
            for r in rows
        ]
        if out:
            typer.echo(render(cols, out, "table"), nl=False)
        for i in ingests:
            typer.echo(_ingest_line(i, now, dead_letter_window))
        if influx.problem is not None:
            typer.echo(f"attention: {influx.problem}")
    if not rows:
        where = f"plantation {plantation}" if plantation else "any plantation"
        typer.echo(
            f"no gateway status found for {where} on {mqtt_settings.host}:{mqtt_settings.port}",
            err=True,
        )
    raise typer.Exit(NEEDS_ATTENTION if attention else 0)


def _revoked_gateways(path: Path) -> dict[tuple[str, str], int]:
    """(plantation, gateway) -> revoked at (ns) from the device registry, if this host has
    it ([ingest] registry_path); none when it has not (status run on another machine)."""
    from ingest.registry import Registry, RegistryError

    if not path.exists():
        return {}
    try:
        with Registry(path, create=False) as registry:
            return {
                (g.plantation, g.gateway): g.revoked_at_ns
                for g in registry.gateways()
                if g.revoked_at_ns is not None
            }
    except (RegistryError, OSError, sqlite3.Error) as err:
        typer.echo(f"note: the device registry {path} was not read ({err})", err=True)
        return {}


def _ingest_line(i: IngestStatus, now_ns: int, window_s: float) -> str:
    """One ingest under the table: when it last reported, what it did, what is wrong."""
    age = f"{(now_ns - i.last_seen_ns) / 1e9:.0f} s ago"
    text = (
        f"ingest {i.client_id} on {i.host}: "
        + (f"stopped cleanly {age}, " if i.fields.get("stopped") else "")
        + f"last report {age} (every {i.report_interval_s:g} s), "
        f"{int(i.fields.get('readings_stored', 0))} readings stored, "
        f"{int(i.fields.get('inbox', 0))} in its inbox"
    )
    if "dead_letters" in i.fields:
        text += f", {int(i.fields['dead_letters'])} dead letters"
        if i.dead_letters_recent is not None:
            text += f" ({i.dead_letters_recent} in the last {window_s:g} s)"
    if i.problems:
        text += "; attention: " + "; ".join(i.problems)
    return text


def _new_of_all(new: int | None, total: int | None) -> str:
    """The dead_lettered cell: NEW/ALL, "-" for what is not known."""
    if total is None:
        return "-"
    return f"{'-' if new is None else new}/{total}"


def register(app: typer.Typer, query_app: typer.Typer) -> None:
    """Add ``status``, ``alerts`` and ``query summary``/``gaps`` to the farmtel CLI."""
    app.command("status")(status)
    app.add_typer(alerts_app, name="alerts")
    query_app.command("summary")(query_summary)
    query_app.command("gaps")(query_gaps)
