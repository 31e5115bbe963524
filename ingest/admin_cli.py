"""``farmtel devices``, ``farmtel broker`` and ``farmtel pki``: the operator's security tools.

Kept out of cli.py so the command file stays a table of contents; heavy imports happen
inside the commands. Exit codes as in cli.py: 0 success, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import typer

P = ParamSpec("P")
R = TypeVar("R")

devices_app = typer.Typer(
    help="Register gateways: credentials, signing keys, bundles (the device registry).",
    no_args_is_help=True,
)
broker_app = typer.Typer(
    help="Mosquitto configuration rendered from the registry.", no_args_is_help=True
)
pki_app = typer.Typer(
    help="A small CA for the broker's TLS and client certificates.", no_args_is_help=True
)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Device registry file (default: from --config, else "
        "/var/lib/farmtel/ingest/registry.sqlite).",
        show_default=False,
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="An ingest.toml to take [ingest] registry_path from.",
        show_default=False,
    ),
]
PlantationOpt = Annotated[
    str, typer.Option(help="Plantation id, e.g. hlj-001.", show_default=False)
]
GatewayOpt = Annotated[
    str, typer.Option(help="Gateway id within the plantation.", show_default=False)
]
ActorOpt = Annotated[
    str | None,
    typer.Option(
        help="Who does this, for the audit history (default: the login name).", show_default=False
    ),
]
BrokerHostOpt = Annotated[str, typer.Option(help="Broker host name the gateway connects to.")]
BrokerPortOpt = Annotated[int, typer.Option(min=1, max=65535, help="Broker port.")]
TlsOpt = Annotated[bool, typer.Option("--tls/--no-tls", help="Gateway connects with TLS.")]
PkiOpt = Annotated[
    Path | None,
    typer.Option(
        "--pki",
        help="PKI folder (farmtel pki init): copy ca.crt into the bundle.",
        show_default=False,
    ),
]
ClientCertOpt = Annotated[
    bool, typer.Option("--client-cert", help="Also issue a client certificate (needs --pki).")
]
InstallDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Where the bundle will live on the gateway (paths in gateway.toml); default: --out.",
        show_default=False,
    ),
]


def _registry_path(registry: Path | None, config: Path | None) -> Path:
    from contract.settings import ConfigError
    from ingest.config import IngestConfig, load_ingest_config

    if registry is not None:
        return registry
    try:
        cfg = load_ingest_config(config) if config else IngestConfig()
    except ConfigError as err:
        _fail(str(err))
    return cfg.registry_path()


def _open(registry: Path | None, config: Path | None, create: bool):  # type: ignore[no-untyped-def]
    from ingest.registry import Registry, RegistryError

    path = _registry_path(registry, config)
    try:
        return Registry(path, create=create)
    except RegistryError as err:
        hint = ""
        if registry is None and config is None and not path.exists():
            hint = (
                "; that is the default path: if the registry is elsewhere, give "
                "--registry FILE or -c INGEST.TOML"
            )
        _fail(f"{err}{hint}")


def _same_registry(registry: Path | None, config: Path | None) -> str:
    """The options of a `next:` hint that make it use the registry this command used."""
    import shlex

    if registry is not None:
        return f" --registry {shlex.quote(str(registry))}"
    return f" -c {shlex.quote(str(config))}" if config is not None else ""


def _guard(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn our ValueErrors (bad ids, registry and PKI refusals) into exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            _fail(str(err))
        except OSError as err:
            _fail(f"{err.filename or ''}: {err.strerror}", 1)

    return wrapper


_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")


def _grace_ns(text: str) -> int:
    m = _DURATION.fullmatch(text.strip())
    if not m:
        _fail(f"--grace {text!r} is not a duration; use e.g. 0s, 30m, 24h, 7d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86_400}[m.group(2)] * 10**9


@devices_app.command("add")
@_guard
def devices_add(
    plantation: PlantationOpt,
    gateway: GatewayOpt,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Bundle folder to create (default: ./bundle-<plantation>-<gateway>).",
            show_default=False,
        ),
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    broker_host: BrokerHostOpt = "localhost",
    broker_port: BrokerPortOpt = 8883,
    tls: TlsOpt = True,
    pki: PkiOpt = None,
    client_cert: ClientCertOpt = False,
    install_dir: InstallDirOpt = None,
    actor: ActorOpt = None,
) -> None:
    """Register a gateway and write its bundle (config stub, password, signing key)."""
    from ingest.devices import BrokerAddress, add_gateway

    out = out or Path(f"bundle-{plantation}-{gateway}")
    with _open(registry, config, create=True) as reg:
        bundle = add_gateway(
            reg,
            plantation,
            gateway,
            out,
            broker=BrokerAddress(broker_host, broker_port, tls),
            pki_dir=pki,
            client_cert=client_cert,
            install_dir=install_dir,
            actor=actor,
        )
    typer.echo(
        f"registered {plantation}/{gateway} (mqtt user {bundle.record.mqtt_username}, "
        f"key {bundle.key_id}) in {reg.path}\n"
        f"bundle: {bundle.path} (secret files mode 0600; add [[sensors]] to gateway.toml)\n"
        f"next: farmtel broker config --out DIR{_same_registry(registry, config)}, then reload "
        "mosquitto"
    )


@devices_app.command("rotate")
@_guard
def devices_rotate(
    plantation: PlantationOpt,
    gateway: GatewayOpt,
    out: Annotated[Path, typer.Option(help="New bundle folder to create.", show_default=False)],
    grace: Annotated[
        str,
        typer.Option(help="How long the old key may still sign new batches (0s, 30m, 24h, 7d)."),
    ] = "24h",
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    broker_host: BrokerHostOpt = "localhost",
    broker_port: BrokerPortOpt = 8883,
    tls: TlsOpt = True,
    pki: PkiOpt = None,
    client_cert: ClientCertOpt = False,
    install_dir: InstallDirOpt = None,
    actor: ActorOpt = None,
) -> None:
    """New signing key and broker password for a gateway, in a new bundle.

    The grace period is for the signing key only: the old key signs new batches until it
    ends and stays registered for checking data stored before. The broker password has no
    grace: the registry holds only the new one from now on, so the next `farmtel broker
    config` and mosquitto reload (also one made for another gateway) disconnects the
    gateway and refuses the old password. Install the new bundle on the gateway first, then
    render the broker files and reload at once; the gateway keeps its readings meanwhile.
    """
    from ingest.devices import BrokerAddress, rotate_gateway

    grace_ns = _grace_ns(grace)
    with _open(registry, config, create=False) as reg:
        bundle = rotate_gateway(
            reg,
            plantation,
            gateway,
            out,
            grace_ns=grace_ns,
            broker=BrokerAddress(broker_host, broker_port, tls),
            pki_dir=pki,
            client_cert=client_cert,
            install_dir=install_dir,
            actor=actor,
        )
    typer.echo(
        f"rotated {plantation}/{gateway}: new key {bundle.key_id}, old key(s) sign until "
        f"{grace} from now (the grace is for the signing key only)\nbundle: {bundle.path}\n"
        "the broker password changed in the registry now: the next `farmtel broker config` "
        "and mosquitto reload (made for any gateway) disconnects this gateway and refuses its "
        "old password\n"
        "next: install the bundle on the gateway, then at once farmtel broker config "
        f"--out DIR{_same_registry(registry, config)} and reload mosquitto (the gateway keeps "
        "its readings until it can log in)"
    )


@devices_app.command("revoke")
@_guard
def devices_revoke(
    plantation: PlantationOpt,
    gateway: GatewayOpt,
    reason: Annotated[str, typer.Option(help="Why, for the audit history.")] = "",
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
) -> None:
    """Revoke a gateway: the ingest refuses its batches at once; the broker refuses its login
    after `farmtel broker config` and a mosquitto reload."""
    with _open(registry, config, create=False) as reg:
        reg.revoke(plantation, gateway, reason, actor=actor)
    typer.echo(
        f"revoked {plantation}/{gateway}\nnext: farmtel broker config --out DIR"
        f"{_same_registry(registry, config)}, then reload mosquitto (it also closes the "
        "gateway's open session)"
    )


@devices_app.command("list")
@_guard
def devices_list(
    plantation: Annotated[
        str | None, typer.Option(help="Only this plantation.", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Registered gateways with their keys and state."""
    import orjson

    from contract.ids import check_ident
    from ingest.tabular import render

    if plantation is not None:
        check_ident(plantation, "--plantation")
    with _open(registry, config, create=False) as reg:
        records = reg.gateways(plantation)
    if as_json:
        data = [
            {
                "plantation": g.plantation,
                "gateway": g.gateway,
                "mqtt_username": g.mqtt_username,
                "credential_fingerprint": g.credential_fingerprint,
                "registered_at_ns": g.registered_at_ns,
                "revoked_at_ns": g.revoked_at_ns,
                "keys": [
                    {
                        "key_id": k.key_id,
                        "valid_from_ns": k.valid_from_ns,
                        "valid_until_ns": k.valid_until_ns,
                    }
                    for k in g.key_records
                ],
            }
            for g in records
        ]
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    rows = [
        [
            g.plantation,
            g.gateway,
            "revoked" if g.revoked_at_ns is not None else "active",
            g.mqtt_username,
            " ".join(
                k.key_id + ("" if k.valid_until_ns is None else "(old)") for k in g.key_records
            ),
            g.credential_fingerprint,
        ]
        for g in records
    ]
    typer.echo(
        render(
            ["plantation", "gateway", "state", "mqtt_user", "keys", "credential"], rows, "table"
        ),
        nl=False,
    )


@devices_app.command("export")
@_guard
def devices_export(
    plantation: PlantationOpt,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print the plantation's registry export (public keys, history) as JSON."""
    import orjson

    from contract.ids import check_ident

    check_ident(plantation, "--plantation")
    with _open(registry, config, create=False) as reg:
        known = reg.plantations()
        if plantation not in known:
            _fail(
                f"--plantation {plantation!r} is not in the device registry {reg.path} "
                f"(plantations there: {', '.join(known) or 'none'})"
            )
        data = reg.export(plantation)
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


@broker_app.command("config")
@_guard
def broker_config(
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for passwd, acl (and the service users' password files).",
            show_default=False,
        ),
    ],
    ingest_user: Annotated[
        str, typer.Option(help="Broker user of the ingest service.")
    ] = "farmtel-ingest",
    status_user: Annotated[
        str | None,
        typer.Option(
            help="Also make a read-only broker user for `farmtel status` (e.g. farmtel-status): "
            "it may only read the gateways' retained status. Its password goes to "
            "DIR/<status-user>.password (mode 0600).",
            show_default=False,
        ),
    ] = None,
    registry: RegistryOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Render Mosquitto's password file and ACL from the registry (which must exist).

    Point mosquitto at them with `password_file DIR/passwd` and `acl_file DIR/acl` (see
    broker_config/mosquitto-security.conf) and reload it after every change. Replaced files
    keep their owner and group (when run as root), so a `chown mosquitto:` stays. The
    first run also creates the ingest's broker password in DIR/<ingest-user>.password
    (mode 0600); an existing one is never overwritten but registered as it is.

    --status-user does the same for a user that may only read the retained status topics,
    for `farmtel status` (the broker throws off an ingest whose user logs in again). Made
    once, it stays in the registry and in every later render.
    """
    from ingest.broker_auth import (
        render_acl,
        render_password_file,
        setup_ingest_user,
        setup_status_user,
        write_private,
    )

    if status_user is not None and status_user == ingest_user:
        _fail(
            f"--status-user {status_user!r} is the --ingest-user too; farmtel status needs a "
            "broker user of its own, e.g. --status-user farmtel-status"
        )
    status = None
    with _open(registry, config, create=False) as reg:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        ingest = setup_ingest_user(reg, out, ingest_user)
        if status_user is not None:
            status = setup_status_user(reg, out, status_user)
        write_private(out / "passwd", render_password_file(reg))
        write_private(out / "acl", render_acl(reg))
        live = [g for g in reg.gateways() if g.revoked_at_ns is None]
    typer.echo(f"wrote {out / 'passwd'} and {out / 'acl'} ({len(live)} active gateway(s))")
    _say_service_user(ingest_user, "an ingest", *ingest)
    if status_user is not None and status is not None:
        _say_service_user(status_user, "farmtel status", *status)
        if status[0] in ("created", "reused"):
            typer.echo(
                f"run farmtel status as it: FARMTEL_MQTT__USERNAME={status_user} "
                f"FARMTEL_MQTT__PASSWORD_FILE={status[1]} farmtel status -c INGEST.TOML"
            )
    typer.echo("next: reload mosquitto (systemctl reload mosquitto, or kill -HUP its pid)")


def _say_service_user(user: str, who: str, what: str, password_file: Path) -> None:
    """What `broker config` did with a service user (see setup_ingest_user's results)."""
    if what == "created":
        typer.echo(f"created broker user {user}; its password is in {password_file} (mode 0600)")
    elif what == "reused":
        typer.echo(
            f"registered broker user {user} with the password already in "
            f"{password_file} (kept as it is)"
        )
    elif what == "mismatch":
        typer.echo(
            f"warning: {password_file} does not hold the password the registry has for "
            f"{user}; {who} using that file will be refused by the broker",
            err=True,
        )


PkiDirOpt = Annotated[Path, typer.Option("--dir", help="PKI folder holding ca.crt and ca.key.")]
DaysOpt = Annotated[
    int | None, typer.Option(min=1, help="Days the certificate is valid.", show_default=False)
]


@pki_app.command("init")
@_guard
def pki_init(
    pki_dir: PkiDirOpt,
    name: Annotated[str, typer.Option(help="CA common name.")] = "farmtel CA",
    days: DaysOpt = None,
) -> None:
    """Create the CA (ca.crt, ca.key mode 0600); never overwrites one."""
    from ingest.pki import DEFAULT_CA_DAYS, init_ca

    ca = init_ca(pki_dir, name, days or DEFAULT_CA_DAYS)
    typer.echo(f"CA {name!r} in {pki_dir} (valid until {ca.cert.not_valid_after_utc:%Y-%m-%d})")


@pki_app.command("broker")
@_guard
def pki_broker(
    pki_dir: PkiDirOpt,
    host: Annotated[
        list[str],
        typer.Option("--host", help="Host name or IP clients use; repeatable.", show_default=False),
    ],
    name: Annotated[str, typer.Option(help="File name and common name.")] = "broker",
    out: Annotated[
        Path | None, typer.Option(help="Folder for the files (default: --dir).", show_default=False)
    ] = None,
    days: DaysOpt = None,
) -> None:
    """Issue the broker's certificate with a SAN for every --host."""
    from ingest.pki import DEFAULT_CERT_DAYS, issue_files

    target = out or pki_dir
    issued = issue_files(
        pki_dir, name, target, hosts=host, server=True, days=days or DEFAULT_CERT_DAYS
    )
    typer.echo(
        f"wrote {target / (name + '.crt')} and {name}.key (SAN: {', '.join(host)}); "
        f"{issued.fingerprint()}"
    )


@pki_app.command("client")
@_guard
def pki_client(
    pki_dir: PkiDirOpt,
    name: Annotated[
        str,
        typer.Option(help="Common name (the MQTT user, e.g. hlj-001.gw-01).", show_default=False),
    ],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the files (default: --dir).", show_default=False)
    ] = None,
    days: DaysOpt = None,
) -> None:
    """Issue a client certificate (for `require_certificate` listeners)."""
    from ingest.pki import DEFAULT_CERT_DAYS, issue_files

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        _fail(f"--name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    target = out or pki_dir
    issued = issue_files(
        pki_dir, name, target, hosts=None, server=False, days=days or DEFAULT_CERT_DAYS
    )
    typer.echo(f"wrote {target / (name + '.crt')} and {name}.key; {issued.fingerprint()}")
