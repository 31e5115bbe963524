"""What every farmtel command that reads InfluxDB shares: its options, the client it builds
from them, how it reports failure, and how it prints times.

Exit codes, for all commands: 0 success, 1 a runtime failure (a server unreachable ...),
2 bad input (config, arguments).
"""

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from contract.settings import ConfigError, validate

if TYPE_CHECKING:
    from ingest.config import IngestConfig
    from ingest.influx import InfluxQuery
    from ingest.queries import TimeRange


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def config_error(err: ConfigError) -> NoReturn:
    typer.echo(str(err), err=True)
    raise typer.Exit(2)


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="An ingest.toml to take the influxdb settings from.",
        show_default=False,
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        help="InfluxDB URL (default: from --config, else http://127.0.0.1:8086).",
        show_default=False,
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        help="InfluxDB database (v1) (default: from --config, else farmtel).", show_default=False
    ),
]
PlantationOpt = Annotated[
    str, typer.Option(help="Plantation id, e.g. hlj-001.", show_default=False)
]
SensorOpt = Annotated[str | None, typer.Option(help="Only this sensor id.", show_default=False)]
ValueOpt = Annotated[
    str | None,
    typer.Option(
        "--value",
        "--field",
        help="Only this value, by its name, e.g. moisture_pct (not the field, i.e. the plot, "
        "a reading comes from). --field is this option's old name.",
        show_default=False,
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(help="How far back from now: 90s, 15m, 24h, 7d, 4w.", show_default=False),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from", help="Start, ISO 8601 (local time unless an offset is given).", show_default=False
    ),
]
ToOpt = Annotated[
    str | None, typer.Option("--to", help="End, ISO 8601 (default: now).", show_default=False)
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
UtcOpt = Annotated[bool, typer.Option("--utc", help="Show times in UTC instead of local time.")]


def ingest_config(config: Path | None, url: str | None, database: str | None) -> "IngestConfig":
    """The ingest config from ``--config`` (or the environment alone), with ``--url`` and
    ``--database`` applied and validated like the file; exits 2 on a bad one."""
    from ingest.config import load_ingest_config, parse_ingest_config
    from ingest.influx import InfluxSettings

    try:
        # Without --config, FARMTEL_INFLUXDB__... variables still apply.
        cfg = load_ingest_config(config) if config else parse_ingest_config({}, "environment")
        update = {k: v for k, v in (("url", url), ("database", database)) if v}
        if update:
            # model_copy would skip the url/database checks.
            merged = {**cfg.influxdb.model_dump(), **update}
            influx = validate(InfluxSettings, merged, "--url/--database")
            cfg = cfg.model_copy(update={"influxdb": influx})
        return cfg
    except ConfigError as err:
        config_error(err)


def query_client(config: Path | None, url: str | None, database: str | None) -> "InfluxQuery":
    from ingest.influx import InfluxQuery

    return InfluxQuery(ingest_config(config, url, database).influxdb)


def time_span(
    since: str | None, start: str | None, end: str | None, default: str | None = None
) -> "TimeRange":
    """``--since`` or ``--from``/``--to`` (``default`` as ``--since`` when none is given)."""
    from ingest import queries

    try:
        if since is None and start is None and default is not None:
            since = default
        return queries.time_range(since, start, end)
    except queries.QueryInputError as err:
        fail(str(err), 2)


def when(ns: int | None, utc: bool) -> str:
    """A time for people: local by default, UTC with ``--utc``; ``-`` when unknown."""
    if not ns:
        return "-"
    t = datetime.fromtimestamp(ns / 1e9, UTC)
    return (t if utc else t.astimezone()).isoformat(timespec="seconds")


def age(ns: int) -> str:
    s = max(0, int(datetime.now(UTC).timestamp() - ns / 1e9))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172_800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"
