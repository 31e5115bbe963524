"""``farmtel pki``: a small certificate authority for the broker's TLS, on ``cryptography``.

Files in the PKI folder (mode 0700): ``ca.crt`` / ``ca.key`` (the CA), ``broker.crt`` /
``broker.key`` (the broker's certificate, with a SAN for every host name and IP address
clients use to reach it), and client certificates for gateways that log in with one.
Private keys are ECDSA P-256 in PKCS#8 PEM, written with mode 0600.

Clients (agent and ingest, :func:`contract.mqtt.make_client`) check the broker's chain
against ``ca.crt`` and its host name against the SAN; an untrusted CA, a name mismatch
or an expired certificate ends the TLS handshake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ingest.broker_auth import write_private

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
DEFAULT_CA_DAYS = 3650
DEFAULT_CERT_DAYS = 825
"""Leaf certificates last 825 days at most (what browsers and many TLS stacks accept)."""


_DNS_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class PkiError(ValueError):
    """A PKI operation that cannot be done; the message names the file or value."""


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def fingerprint(self) -> str:
        """``cert:sha256:<hex>`` of the DER certificate (what the registry records)."""
        return "cert:sha256:" + self.cert.fingerprint(hashes.SHA256()).hex()


def _name(common_name: str) -> x509.Name:
    if not common_name or len(common_name) > 64:
        raise PkiError(f"common name {common_name!r} must have 1 to 64 characters")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _window(
    days: int, not_before: dt.datetime | None, not_after: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    end = not_after or start + dt.timedelta(days=days)
    if days < 1 and not_after is None:
        raise PkiError(f"--days {days} must be at least 1")
    if end <= start:
        raise PkiError(f"certificate would end ({end}) before it starts ({start})")
    return start, end


def make_ca(
    common_name: str = "farmtel CA",
    days: int = DEFAULT_CA_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(days, not_before, not_after)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def parse_hosts(hosts: list[str]) -> list[x509.GeneralName]:
    """SAN entries: an IP address becomes an IPAddress, anything else a DNSName."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        if _is_ip(host):
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        elif _DNS_RE.fullmatch(host):
            names.append(x509.DNSName(host.lower()))
        else:
            raise PkiError(
                f"--host {host!r} is not a host name (letters, digits, '-', '.') or an IP address"
            )
    return names


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def issue(
    ca: Issued,
    common_name: str,
    *,
    hosts: list[str] | None = None,
    server: bool,
    days: int = DEFAULT_CERT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """A leaf certificate signed by ``ca``: a server one (SAN = ``hosts``) or a client one."""
    if server and not hosts:
        raise PkiError("a broker certificate needs at least one --host (name or IP clients use)")
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(days, not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(parse_hosts(hosts)), critical=False
        )
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def save(issued: Issued, cert_path: Path, key_path: Path) -> None:
    """Write the certificate (0644) and its key (0600)."""
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(key_path, issued.key_pem())
    write_private(cert_path, issued.cert_pem(), mode=0o644)


def load_ca(pki_dir: Path) -> Issued:
    """The CA in ``pki_dir``; PkiError telling to run ``farmtel pki init`` when missing."""
    cert_path, key_path = pki_dir / CA_CERT, pki_dir / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise PkiError(
            f"no CA in {pki_dir} ({CA_CERT}, {CA_KEY}); create one with "
            f"`farmtel pki init --dir {pki_dir}`"
        ) from None
    except (OSError, ValueError) as err:
        raise PkiError(f"the CA in {pki_dir} cannot be read: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an ECDSA key made by `farmtel pki init`")
    return Issued(key, cert)


def init_ca(pki_dir: Path, common_name: str = "farmtel CA", days: int = DEFAULT_CA_DAYS) -> Issued:
    """Create the CA in ``pki_dir``; PkiError when one is already there (never overwritten)."""
    if (pki_dir / CA_KEY).exists() or (pki_dir / CA_CERT).exists():
        raise PkiError(f"{pki_dir} already holds a CA; it is never overwritten")
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = make_ca(common_name, days)
    save(ca, pki_dir / CA_CERT, pki_dir / CA_KEY)
    return ca


def issue_files(
    pki_dir: Path,
    name: str,
    out_dir: Path,
    *,
    hosts: list[str] | None,
    server: bool,
    days: int = DEFAULT_CERT_DAYS,
) -> Issued:
    """Issue ``out_dir/<name>.crt`` and ``<name>.key`` from the CA in ``pki_dir``."""
    ca = load_ca(pki_dir)
    issued = issue(ca, name, hosts=hosts, server=server, days=days)
    save(issued, out_dir / f"{name}.crt", out_dir / f"{name}.key")
    return issued
