"""Provisioning a gateway: credentials, signing key, registry entry and the bundle to install.

``farmtel devices add`` makes, for one gateway:

- a random broker password (its ``$7$`` hash goes to the registry, the password only into
  the bundle) and, with a PKI folder, a client certificate;
- an Ed25519 signing key (the public key goes to the registry, the private key only into
  the bundle);
- the bundle folder (mode 0700): ``gateway.toml`` (a stub: add the ``[[sensors]]``),
  ``mqtt.password`` and ``signing.key`` (mode 0600), ``signing.pub``, and ``ca.crt`` /
  ``client.crt`` / ``client.key`` when a PKI folder is given.

Nothing secret is kept on the ingest side: a lost bundle is replaced with ``rotate``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.ids import check_ident
from contract.signing import key_id
from ingest.broker_auth import hash_password, new_password, password_fingerprint, write_private
from ingest.pki import CA_CERT, Issued, PkiError, issue, load_ca
from ingest.registry import (
    DEFAULT_GRACE_NS,
    GatewayRecord,
    Registry,
    RegistryError,
    mqtt_username,
    registered_again,
)

PASSWORD_FILE = "mqtt.password"
SIGNING_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
CONFIG_FILE = "gateway.toml"


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "localhost"
    port: int = 8883
    tls: bool = True


@dataclass(frozen=True)
class Bundle:
    path: Path
    record: GatewayRecord
    key_id: str


def _prepare_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RegistryError(
            f"bundle folder {out_dir} exists and is not empty; choose a new --out folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    out_dir.chmod(0o700)


def _stub(
    plantation: str,
    gateway: str,
    install_dir: Path,
    broker: BrokerAddress,
    has_ca: bool,
    has_cert: bool,
) -> str:
    user = mqtt_username(plantation, gateway)
    lines = [
        f"## farmtel gateway config for {plantation}/{gateway}, written by `farmtel devices add`.",
        "## Add one [[sensors]] table per sensor (see `farmtel sensors drivers`), then install",
        f"## this folder on the gateway as {install_dir} (files keep their modes: secrets 0600).",
        "",
        "[gateway]",
        f'plantation = "{plantation}"',
        f'id = "{gateway}"',
        f'signing_key_file = "{install_dir / SIGNING_KEY_FILE}"',
        "",
        "[mqtt]",
        f'host = "{broker.host}"',
        f"port = {broker.port}",
        "## The broker uses the user name as client id (use_username_as_clientid).",
        f'client_id = "{user}"',
        f'username = "{user}"',
        f'password_file = "{install_dir / PASSWORD_FILE}"',
        f"tls = {'true' if broker.tls else 'false'}",
    ]
    if has_ca:
        lines.append(f'ca_file = "{install_dir / CA_CERT}"')
    if has_cert:
        lines += [
            f'cert_file = "{install_dir / "client.crt"}"',
            f'key_file = "{install_dir / "client.key"}"',
        ]
    return "\n".join(lines) + "\n"


def _write_bundle(
    out_dir: Path,
    plantation: str,
    gateway: str,
    password: str,
    signing_key: Ed25519PrivateKey,
    install_dir: Path | None,
    broker: BrokerAddress,
    pki_dir: Path | None,
    client_cert: Issued | None,
) -> None:
    write_private(out_dir / PASSWORD_FILE, password + "\n")
    write_private(
        out_dir / SIGNING_KEY_FILE,
        signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_private(
        out_dir / PUBLIC_KEY_FILE,
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        mode=0o644,
    )
    if pki_dir is not None:
        shutil.copyfile(pki_dir / CA_CERT, out_dir / CA_CERT)
        (out_dir / CA_CERT).chmod(0o644)
    if client_cert is not None:
        write_private(out_dir / "client.key", client_cert.key_pem())
        write_private(out_dir / "client.crt", client_cert.cert_pem(), mode=0o644)
    stub = _stub(
        plantation,
        gateway,
        (install_dir or out_dir).absolute(),
        broker,
        pki_dir is not None,
        client_cert is not None,
    )
    write_private(out_dir / CONFIG_FILE, stub)


def _fingerprint(password: str, cert: Issued | None) -> str:
    """The registry's public name for the credentials: password, and certificate if any."""
    fingerprint = password_fingerprint(password)
    return f"{fingerprint} {cert.fingerprint()}" if cert is not None else fingerprint


def _client_cert(pki_dir: Path | None, plantation: str, gateway: str, want: bool) -> Issued | None:
    if not want:
        return None
    if pki_dir is None:
        raise PkiError("--client-cert needs --pki DIR (the folder made by `farmtel pki init`)")
    return issue(load_ca(pki_dir), mqtt_username(plantation, gateway), server=False)


def add_gateway(
    registry: Registry,
    plantation: str,
    gateway: str,
    out_dir: Path,
    *,
    broker: BrokerAddress = BrokerAddress(),
    pki_dir: Path | None = None,
    client_cert: bool = False,
    install_dir: Path | None = None,
    actor: str | None = None,
) -> Bundle:
    """Register a gateway and write its bundle; RegistryError/PkiError say what is wrong.

    Nothing is registered when the bundle cannot be written, and the bundle is removed
    again when the registry refuses the gateway.
    """
    check_ident(plantation, "--plantation")
    check_ident(gateway, "--gateway")
    existing = registry.gateway(plantation, gateway)
    if existing is not None and existing.revoked_at_ns is not None:
        raise registered_again(plantation, gateway, existing.revoked_at_ns)
    if existing is not None:
        raise RegistryError(
            f"gateway {plantation}/{gateway} is already registered; use `farmtel devices "
            "rotate` for new credentials"
        )
    if pki_dir is not None:
        load_ca(pki_dir)  # fail before writing anything
    cert = _client_cert(pki_dir, plantation, gateway, client_cert)
    _prepare_dir(out_dir)
    password = new_password()
    signing_key = Ed25519PrivateKey.generate()
    try:
        _write_bundle(
            out_dir, plantation, gateway, password, signing_key, install_dir, broker, pki_dir, cert
        )
        record = registry.add_gateway(
            plantation,
            gateway,
            signing_key.public_key(),
            hash_password(password),
            _fingerprint(password, cert),
            actor=actor,
        )
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return Bundle(out_dir, record, key_id(signing_key.public_key()))


def rotate_gateway(
    registry: Registry,
    plantation: str,
    gateway: str,
    out_dir: Path,
    *,
    grace_ns: int = DEFAULT_GRACE_NS,
    broker: BrokerAddress = BrokerAddress(),
    pki_dir: Path | None = None,
    client_cert: bool = False,
    install_dir: Path | None = None,
    actor: str | None = None,
) -> Bundle:
    """New signing key and broker password in a new bundle; see :meth:`Registry.rotate`.

    Only the signing key has a grace period. The registry keeps just the new password's
    hash, and Mosquitto takes one hash per user (a second line for the same user replaces
    the first), so the old password works until the broker files are next rendered and
    mosquitto reloaded, and not a moment longer.
    """
    check_ident(plantation, "--plantation")
    check_ident(gateway, "--gateway")
    record = registry.gateway(plantation, gateway)
    if record is None:
        raise RegistryError(f"gateway {plantation}/{gateway} is not registered; use add")
    cert = _client_cert(pki_dir, plantation, gateway, client_cert)
    _prepare_dir(out_dir)
    password = new_password()
    signing_key = Ed25519PrivateKey.generate()
    try:
        _write_bundle(
            out_dir, plantation, gateway, password, signing_key, install_dir, broker, pki_dir, cert
        )
        record = registry.rotate(
            plantation,
            gateway,
            signing_key.public_key(),
            hash_password(password),
            _fingerprint(password, cert),
            grace_ns=grace_ns,
            actor=actor,
        )
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return Bundle(out_dir, record, key_id(signing_key.public_key()))
