"""CLI commands ``farmtel export``, ``farmtel verify`` and ``farmtel keys new``.

cli.py registers them with :func:`register`; the logic lives in certify.export,
certify.verify and certify.orgkey. Exit codes as in cli.py: 0 ok, 1 a runtime failure
(server unreachable; for ``verify``: the bundle is NOT valid), 2 bad input.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ingest.cli_options import fail, ingest_config

if TYPE_CHECKING:
    from ingest.queries import TimeRange

keys_app = typer.Typer(help="The exporting organisation's signing key.", no_args_is_help=True)


def export(
    plantation: Annotated[
        str, typer.Option(help="Plantation id, e.g. hlj-001.", show_default=False)
    ],
    start: Annotated[
        str,
        typer.Option(
            "--from",
            help="Start, ISO 8601 (local time unless an offset is given).",
            show_default=False,
        ),
    ],
    end: Annotated[str, typer.Option("--to", help="End (excluded), ISO 8601.", show_default=False)],
    out: Annotated[Path, typer.Option(help="New folder for the bundle.", show_default=False)],
    key: Annotated[
        Path,
        typer.Option(
            help="The organisation's Ed25519 private key (PEM); see `farmtel keys new`.",
            show_default=False,
        ),
    ],
    registry: Annotated[
        Path | None,
        typer.Option(
            help="Device registry: its SQLite file or the JSON of `farmtel devices export` "
            "(default: [ingest] registry_path of --config).",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="An ingest.toml (InfluxDB settings, registry).",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="InfluxDB URL (default: from --config).", show_default=False)
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(help="InfluxDB database (default: from --config).", show_default=False),
    ] = None,
    progress: Annotated[
        bool, typer.Option(help="Show a progress bar on stderr when it is a terminal.")
    ] = True,
) -> None:
    """Write a plantation's readings, gaps and signed batches as a sealed BagIt bundle."""
    from certify.bag import BagError
    from certify.devices import RegistryError, load_registry_file
    from certify.export import export_bundle
    from certify.orgkey import KeyFileError, load_org_key
    from certify.source import SourceError, Span
    from contract.ids import check_ident
    from ingest.influx import InfluxError, InfluxQuery

    try:
        check_ident(plantation, "--plantation")
        span = _export_span(start, end)
    except ValueError as err:  # QueryInputError too
        fail(str(err), 2)
    try:
        org_key = load_org_key(key)
    except KeyFileError as err:
        fail(str(err), 2)
    cfg = ingest_config(config, url, database)
    reg_path = registry or cfg.registry_path()
    if registry is None and not reg_path.exists():
        fail(
            f"no device registry at {reg_path} ([ingest] registry_path); pass --registry "
            "with the registry file or the JSON of `farmtel devices export`",
            2,
        )
    try:
        reg = load_registry_file(reg_path, plantation)
    except (RegistryError, ValueError) as err:
        fail(str(err), 2)
    client = InfluxQuery(cfg.influxdb)
    try:
        summary = export_bundle(
            client,
            plantation,
            Span(span.start_ns, span.end_ns),
            out,
            org_key,
            reg,
            progress=progress,
        )
    except BagError as err:
        fail(str(err), 2)
    except ValueError as err:
        fail(str(err), 2)
    except (InfluxError, SourceError) as err:
        fail(str(err), 1)
    except OSError as err:
        fail(f"writing the bundle in {out} failed: {err}", 1)
    finally:
        client.close()
    rate = summary.readings / summary.seconds if summary.seconds else 0.0
    typer.echo(
        f"wrote {out}: {summary.readings} readings ({summary.outside_period} outside the "
        f"period, completing edge batches), {summary.batches} batches, {summary.gaps} gaps "
        f"in {summary.seconds:.1f} s ({rate:,.0f} readings/s)"
    )
    if summary.quarantined:
        typer.echo(
            f"{summary.quarantined} quarantined reading(s) of these batches (not data) are in "
            "data/quarantined.jsonl"
        )
    for w in summary.warnings:
        typer.echo(f"warning: {w}", err=True)


def _export_span(start: str, end: str) -> "TimeRange":
    """``--from``/``--to`` checked as the queries check them, and far enough inside the
    times InfluxDB stores for the batches export also reads before and after the period
    (certify.export.LOOKBACK_NS, LOOKAHEAD_NS): past them InfluxDB refuses the query."""
    from datetime import timedelta

    from certify.export import LOOKAHEAD_NS, LOOKBACK_NS
    from ingest.line_protocol import MAX_TIME_NS, MIN_TIME_NS
    from ingest.queries import (
        EARLIEST,
        LATEST,
        QueryInputError,
        format_duration,
        time_range,
        utc_text,
    )

    span = time_range(None, start, end)
    before, after = (
        timedelta(microseconds=LOOKBACK_NS // 1000),
        timedelta(microseconds=LOOKAHEAD_NS // 1000),
    )
    if span.start_ns - LOOKBACK_NS < MIN_TIME_NS:
        raise QueryInputError(
            f"--from {start!r} is too early: export also reads the {format_duration(before)} "
            f"before it (batches sent late), and InfluxDB stores nothing before "
            f"{utc_text(EARLIEST)}; give a --from of {utc_text(EARLIEST + before)} or later"
        )
    if span.end_ns + LOOKAHEAD_NS > MAX_TIME_NS:
        raise QueryInputError(
            f"--to {end!r} is too late: export also reads the {format_duration(after)} after "
            f"it (batches sent late), and InfluxDB stores nothing after {utc_text(LATEST)}; "
            f"give a --to of {utc_text(LATEST - after)} or earlier"
        )
    return span


def verify(
    bundle: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="The bundle folder.", show_default=False)
    ],
    pubkey: Annotated[
        Path | None,
        typer.Option(
            help="The organisation's public key (PEM or base64), obtained from the "
            "organisation. Without it the key inside the bundle is used.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check a bundle: checksums, the seal, every batch signature, sequence continuity."""
    from certify.bag import FolderBundle
    from certify.orgkey import KeyFileError, load_pubkey_file
    from certify.verify import verify_bundle

    if not bundle.is_dir():
        fail(f"{bundle} is not a folder; give the bundle folder that `farmtel export` wrote", 2)
    try:
        pinned = load_pubkey_file(pubkey) if pubkey else None
    except KeyFileError as err:
        fail(str(err), 2)
    verdict = verify_bundle(FolderBundle(bundle), pinned)
    if verdict.not_a_bundle:  # bad input (e.g. the folder that holds the bundles), not a verdict
        fail(verdict.failures[0], 2)
    typer.echo(verdict.render(), nl=False)
    if not verdict.ok:
        raise typer.Exit(1)


@keys_app.command("new")
def keys_new(
    out: Annotated[
        Path, typer.Option(help="File for the new private key (mode 0600).", show_default=False)
    ],
) -> None:
    """Create the organisation's Ed25519 key for sealing exports, and OUT.pub beside it.

    OUT.pub is the public key (PEM) to give certifiers; the key id is printed."""
    from certify.orgkey import KeyFileError, new_key_file, public_pem
    from contract.signing import key_id

    try:
        public = new_key_file(out)
    except KeyFileError as err:
        fail(str(err), 2)
    pub_path = out.with_name(out.name + ".pub")
    pub_path.write_bytes(public_pem(public))
    typer.echo(
        f"wrote {out} (keep it secret) and {pub_path} (key {key_id(public)}): give the public "
        "key to certifiers through a channel they trust"
    )


def register(app: typer.Typer) -> None:
    """Add ``export``, ``verify`` and ``keys`` to the farmtel CLI."""
    app.command("export")(export)
    app.command("verify")(verify)
    app.add_typer(keys_app, name="keys")
