"""farmtel: soil and weather telemetry for certified organic plantations.

The ``farmtel`` command. Every subcommand documents its options in ``--help``. Exit codes:
0 success, 1 a runtime failure (server unreachable ...), 2 bad input (config, arguments).
"""

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from certify import commands as _certify_commands
from contract.settings import ConfigError, read_toml
from ingest import commands as _ops_commands
from ingest.admin_cli import broker_app, devices_app, pki_app
from ingest.cli_options import (
    ConfigOpt,
    DatabaseOpt,
    FormatOpt,
    FromOpt,
    OutputFormat,
    PlantationOpt,
    SensorOpt,
    SinceOpt,
    ToOpt,
    UrlOpt,
    UtcOpt,
    ValueOpt,
    age,
    config_error,
    fail,
    query_client,
    time_span,
    when,
)


def _summary(command: TyperCommand | TyperGroup) -> str:
    """The first paragraph of a command's help, on one line."""
    text = command.short_help or command.help or ""
    return " ".join(text.split("\n\n")[0].split())


class _Command(TyperCommand):
    """Usage lines with FILE for an argument (typer 0.29 writes {FILE}), and the whole summary in
    a group's command list (click cuts it at the terminal width with "...")."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.display_name_raw
                name = name if param.required else f"[{name}]"
                pieces.append(name if param.nargs == 1 else f"{name}...")
            else:
                pieces += param.get_usage_pieces(ctx)
        return pieces

    def get_short_help_str(self, limit: int = 45) -> str:
        return _summary(self)


class _Group(TyperGroup):
    """A command group listed, like a command, with its whole summary."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return _summary(self)


# rich_markup_mode=None: help texts print as written (rich markup would take "[ingest]" in
# "[ingest] registry_path" for a tag and drop it) and click reflows their paragraphs. Typer
# applies the root's mode to every group and command under it.
app = typer.Typer(
    help="farmtel: soil and weather telemetry for certified organic plantations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
agent_app = typer.Typer(help="The field agent that runs on a gateway.", no_args_is_help=True)
ingest_app = typer.Typer(help="The ingest service: MQTT -> InfluxDB.", no_args_is_help=True)
query_app = typer.Typer(help="Ask InfluxDB about a plantation's readings.", no_args_is_help=True)
sensors_app = typer.Typer(help="Installer tools for sensors at the gateway.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(agent_app, name="agent")
app.add_typer(ingest_app, name="ingest")
app.add_typer(query_app, name="query")
app.add_typer(sensors_app, name="sensors")
# Security tools (issue 5): device registry, broker password file and ACL, TLS PKI.
app.add_typer(devices_app, name="devices")
app.add_typer(broker_app, name="broker")
app.add_typer(pki_app, name="pki")
# status, alerts list, query summary/gaps: see ingest/commands.py.
_ops_commands.register(app, query_app)
# export, verify, keys new (issue 6): see certify/commands.py.
_certify_commands.register(app)


class ConfigKind(StrEnum):
    auto = "auto"
    gateway = "gateway"
    ingest = "ingest"


ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Path of the TOML config file.", show_default=False)
]


@config_app.command("check")
def config_check(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="The TOML file to check.", show_default=False)
    ],
    kind: Annotated[
        ConfigKind,
        typer.Option(help="Which config this is; auto looks for a [gateway] or [ingest] table."),
    ] = ConfigKind.auto,
) -> None:
    """Check a gateway or ingest config and print every problem with its key."""
    from agent.config import parse_gateway_config
    from ingest.config import parse_ingest_config

    try:
        raw = read_toml(file)
        chosen = kind
        if chosen is ConfigKind.auto:
            if "gateway" in raw or "sensors" in raw:
                chosen = ConfigKind.gateway
            elif "ingest" in raw or "influxdb" in raw:
                chosen = ConfigKind.ingest
            else:
                fail(
                    f"{file}: cannot tell the kind of config (no [gateway] or [ingest] table); "
                    "pass --kind gateway or --kind ingest",
                    2,
                )
        if chosen is ConfigKind.gateway:
            gw = parse_gateway_config(raw, str(file))
            typer.echo(
                f"{file}: ok (gateway {gw.gateway.plantation}/{gw.gateway.id}, "
                f"{len(gw.sensors)} sensor(s))"
            )
        else:
            ing = parse_ingest_config(raw, str(file))
            typer.echo(f"{file}: ok (ingest, InfluxDB {ing.influxdb.api} at {ing.influxdb.url})")
    except ConfigError as err:
        config_error(err)


@agent_app.command("run")
def agent_run(config: ConfigOption) -> None:
    """Run the field agent: read the sensors, keep every reading in the outbox, publish."""
    from agent.config import load_gateway_config
    from agent.service import Agent
    from contract import logs

    try:
        cfg = load_gateway_config(config)
        logs.configure(cfg.log)
        agent = Agent(cfg)
    except ConfigError as err:
        config_error(err)
    agent.run_forever()


@ingest_app.command("run")
def ingest_run(config: ConfigOption) -> None:
    """Run the ingest service: store telemetry in InfluxDB, then ack and send receipts."""
    from contract import logs
    from ingest.config import load_ingest_config
    from ingest.service import Ingest

    try:
        cfg = load_ingest_config(config)
        logs.configure(cfg.log)
        service = Ingest(cfg)
    except ConfigError as err:
        config_error(err)
    service.run_forever()


@query_app.command("latest")
def query_latest(
    plantation: PlantationOpt,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    database: DatabaseOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    utc: UtcOpt = False,
) -> None:
    """One row per sensor: its newest reading, the time, the values and their age."""
    from ingest import queries
    from ingest.influx import InfluxError
    from ingest.tabular import render

    client = query_client(config, url, database)
    try:
        rows = queries.latest(client, plantation)
    except ValueError as err:
        fail(str(err), 2)
    except InfluxError as err:
        fail(str(err))
    if not rows:
        typer.echo(f"no readings stored for plantation {plantation}", err=True)
        raise typer.Exit(0)
    cols = ["field", "gateway", "sensor", "kind", "time", "age", "clock", "values"]
    out = [
        [
            r.field,
            r.gateway,
            r.sensor,
            r.measurement,
            when(r.time_ns, utc),
            age(r.time_ns),
            r.clock,
            r.values
            if fmt is OutputFormat.json
            else " ".join(f"{k}={v:g}" for k, v in sorted(r.values.items())),
        ]
        for r in rows
    ]
    typer.echo(render(cols, out, fmt.value), nl=False)


@query_app.command("history")
def query_history(
    plantation: PlantationOpt,
    sensor: SensorOpt = None,
    field: ValueOpt = None,
    since: SinceOpt = None,
    start: FromOpt = None,
    end: ToOpt = None,
    every: Annotated[str, typer.Option(help="Window for mean/min/max: 1m, 1h, 1d ...")] = "1h",
    config: ConfigOpt = None,
    url: UrlOpt = None,
    database: DatabaseOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    utc: UtcOpt = False,
    plot: Annotated[
        bool, typer.Option("--plot", help="Draw the window means as terminal charts instead.")
    ] = False,
    png: Annotated[
        Path | None,
        typer.Option(
            help="Also write a PNG chart of the window means to this file.", show_default=False
        ),
    ] = None,
    rollups: Annotated[
        bool,
        typer.Option(
            "--rollups/--no-rollups",
            help="For --every in whole hours (api v1): read and keep hourly rollups in the "
            "retention policy farmtel_1h, checked against the raw counts of each day "
            "(late data is recomputed). --no-rollups computes every window from the raw data.",
        ),
    ] = True,
) -> None:
    """mean/min/max of each value per time window, computed inside InfluxDB."""
    from ingest import queries
    from ingest.influx import InfluxError
    from ingest.tabular import render

    span = time_span(since, start, end)
    client = query_client(config, url, database)

    def say(message: str) -> None:
        typer.echo(message, err=True)

    try:
        rows = queries.history(
            client,
            plantation,
            span,
            every,
            sensor=sensor,
            value=field,
            rollups=rollups,
            progress=say,
            warn=lambda message: say(f"warning: {message}"),
        )
    except ValueError as err:
        fail(str(err), 2)
    except InfluxError as err:
        fail(str(err))
    if not rows:
        typer.echo(
            f"no readings for plantation {plantation} between {span.start.isoformat()} and "
            f"{span.end.isoformat()}",
            err=True,
        )
        raise typer.Exit(0)
    if plot or png:
        from ingest.charts import draw_history

        draw_history(rows, plantation, plot, png, utc)  # ChartError -> exit 1 inside
        if plot:
            return
    cols = ["window", "gateway", "sensor", "value", "mean", "min", "max"]
    # A year of hourly windows is 8,760 distinct times for 1.3M rows: format each once.
    times: dict[int, str] = {}

    def stamp(ns: int) -> str:
        t = times.get(ns)
        if t is None:
            t = times[ns] = when(ns, utc)
        return t

    def line(r: queries.HistoryRow) -> list[object]:
        return [stamp(r.window_start_ns), r.gateway, r.sensor, r.value, r.mean, r.min, r.max]

    if fmt is OutputFormat.table:  # the column widths need every row first
        typer.echo(render(cols, [line(r) for r in rows], "table"), nl=False)
        return
    # CSV and JSON lines: the same text as render(), written a slice at a time.
    kind: Literal["csv", "json"] = "csv" if fmt is OutputFormat.csv else "json"
    names = {r.gateway for r in rows} | {r.sensor for r in rows} | {r.value for r in rows}
    plain = kind == "csv" and all(_CSV_PLAIN.fullmatch(x) for x in names)
    step = 20_000
    for i in range(0, len(rows), step):
        if plain:  # nothing to quote: what csv.writer writes, without its per-cell cost
            text = "".join(
                f"{stamp(r.window_start_ns)},{r.gateway},{r.sensor},{r.value},{_csv_num(r.mean)},"
                f"{_csv_num(r.min)},{_csv_num(r.max)}\n"
                for r in rows[i : i + step]
            )
            if not i:
                text = ",".join(cols) + "\n" + text
        else:
            text = render(cols, [line(r) for r in rows[i : i + step]], kind)
            if i and kind == "csv":
                text = text.split("\n", 1)[1]  # the header once
        typer.echo(text, nl=False)


_CSV_PLAIN = re.compile(r"[A-Za-z0-9_.+-]*")


def _csv_num(v: float | None) -> str:
    return "" if v is None else repr(v)


@sensors_app.command("drivers")
def sensors_drivers() -> None:
    """List every sensor driver with its sample config."""
    from sensors.commands import list_drivers

    for name, summary, sample in list_drivers():
        typer.echo(f"{name}: {summary}\n")
        typer.echo("\n".join("    " + line for line in sample.rstrip().splitlines()))
        typer.echo("")


def _driver_options(items: list[str] | None) -> dict[str, str]:
    """The ``--option key=value`` pairs as a dict; exit 2 naming a malformed or repeated one."""
    options: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            fail(f"--option {item!r} must look like key=value", 2)
        if key in options:
            fail(f"--option {key!r} is given twice ({options[key]!r} and {value.strip()!r})", 2)
        options[key] = value.strip()
    return options


@sensors_app.command("read")
def sensors_read(
    driver: Annotated[
        str, typer.Option(help="Driver name (see `farmtel sensors drivers`).", show_default=False)
    ],
    port: Annotated[
        str,
        typer.Option(help="Serial port or pyserial URL, e.g. /dev/ttyUSB0.", show_default=False),
    ],
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Driver option key=value; repeatable, each key once.",
            show_default=False,
        ),
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="Readings to print before stopping.")] = 1,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait in all.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Read a device directly and print its readings (no agent, no outbox)."""
    import orjson

    from sensors.base import SensorError
    from sensors.commands import read_device

    options = _driver_options(option)
    got = 0
    try:
        for sample in read_device(driver, port, options, count, timeout):
            got += 1
            ts = sample.ts or 0
            if as_json:
                typer.echo(orjson.dumps({"ts": ts, "values": sample.values}).decode())
            else:
                vals = " ".join(f"{k}={v:g}" for k, v in sorted(sample.values.items()))
                typer.echo(f"{when(ts, False)}  {vals}")
    except ConfigError as err:
        config_error(err)
    except SensorError as err:
        fail(str(err))
    if got < count:
        fail(f"got {got} of {count} reading(s) within {timeout:g} s")


@sensors_app.command("scan")
def sensors_scan(
    driver: Annotated[
        str, typer.Option(help="Bus driver: sdi12 or modbus_soil.", show_default=False)
    ],
    port: Annotated[
        str,
        typer.Option(help="Serial port or pyserial URL, e.g. /dev/ttyUSB0.", show_default=False),
    ],
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Driver option key=value, e.g. addresses=1-16; repeatable, each key once.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Find the device addresses on a bus; progress goes to stderr."""
    import orjson

    from sensors.base import ScanNotSupported, SensorError
    from sensors.commands import scan_bus

    options = _driver_options(option)
    found = 0
    try:
        for device in scan_bus(driver, port, options, lambda m: typer.echo(m, err=True)):
            found += 1
            if as_json:
                typer.echo(orjson.dumps(device).decode())
            else:
                typer.echo("  ".join(f"{k}={v}" for k, v in device.items()))
    except ConfigError as err:
        config_error(err)
    except ScanNotSupported as err:
        fail(f"{err}; scan works with bus drivers (sdi12, modbus_soil)", 2)
    except SensorError as err:
        fail(str(err))
    typer.echo(f"{found} device(s) found on {port}", err=True)


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"farmtel {version('farmtel')}")
        except PackageNotFoundError:
            typer.echo("farmtel (not installed)")
        raise typer.Exit()


@app.callback()
def main_callback(
    show_version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            callback=version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = None,
) -> None:
    """farmtel: soil and weather telemetry for certified organic plantations."""


def _plain_help(typer_app: typer.Typer) -> None:
    """Build every command and group under ``typer_app`` with _Command and _Group, those that
    cli.py, ingest/ and certify/ register alike."""
    for command in typer_app.registered_commands:
        if command.cls in (None, TyperCommand):  # typer's default, not a class of its own
            command.cls = _Command
    for group in typer_app.registered_groups:
        group.cls = group.cls or _Group
        if group.typer_instance:
            _plain_help(group.typer_instance)


_plain_help(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
