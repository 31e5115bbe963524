"""Mosquitto's password file and ACL, rendered from the device registry.

Password entries use the ``$7$`` form that ``mosquitto_passwd`` (2.0) writes:
``user:$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512(password, salt)>`` with
a 12-byte salt and a 64-byte hash. :data:`PBKDF2_ITERATIONS` is mosquitto_passwd's own
default (101): farmtel passwords are 32 random bytes, so key stretching adds nothing
while a broker checks every login against it.

The ACL has one explicit block per gateway (no ``%u`` patterns: those must fill a whole
topic level, see CVE-2017-7650):

- a gateway may write only its own ``telemetry`` and ``status`` topics and read only its
  own ``receipt`` topic;
- the ingest user reads every gateway's ``telemetry`` and ``status`` (a shared subscription
  ``$share/<group>/farmtel/v1/+/+/telemetry`` is checked by Mosquitto 2.0 against the
  topic filter without the ``$share/<group>/`` prefix, and every message delivered is
  checked against its topic) and writes ``receipt`` and ``alerts``; it also reads and
  writes ``farmtel/ingest/v1/#``, where the ingests of a share group share their seq
  bookkeeping (ingest/sequence.py);
- anyone else gets nothing: Mosquitto denies what the ACL does not grant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from contract.topics import SEQ_SHARE_ROOT, TOPIC_ROOT, receipt_topic, status_topic, telemetry_topic
from ingest.registry import GatewayRecord, Registry

PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
DEFAULT_INGEST_USER = "farmtel-ingest"


class PasswordHashError(ValueError):
    """A password-file entry that is not in mosquitto's ``$7$`` form."""


def new_password() -> str:
    """A random broker password: 32 bytes from the OS CSPRNG, URL-safe base64 (43 chars)."""
    return secrets.token_urlsafe(32)


def hash_password(
    password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """The ``$7$...`` hash mosquitto checks ``password`` against (no user name part)."""
    if not password:
        raise PasswordHashError("an empty password cannot be hashed; use new_password()")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (constant-time compare)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7" or not parts[2].isdigit():
        raise PasswordHashError(f"hash {hashed[:12]!r}... is not $7$<iterations>$<salt>$<hash>")
    salt = base64.b64decode(parts[3])
    expected = base64.b64decode(parts[4])
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(parts[2]))
    return hmac.compare_digest(got, expected)


def password_fingerprint(password: str) -> str:
    """A public name for a credential: ``pw:sha256:<16 hex>`` (irreversible; random input)."""
    return "pw:sha256:" + hashlib.sha256(password.encode("utf-8")).hexdigest()[:16]


def render_password_file(registry: Registry) -> str:
    """Every live gateway and service user as ``user:$7$...`` lines (revoked ones left out)."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in registry.password_entries())


def _gateway_block(g: GatewayRecord) -> list[str]:
    return [
        f"# {g.plantation}/{g.gateway}",
        f"user {g.mqtt_username}",
        f"topic write {telemetry_topic(g.plantation, g.gateway)}",
        f"topic write {status_topic(g.plantation, g.gateway)}",
        f"topic read {receipt_topic(g.plantation, g.gateway)}",
        "",
    ]


def render_acl(registry: Registry) -> str:
    """The Mosquitto ACL file: explicit lines per live gateway, wildcards for the ingest."""
    lines = [
        "# farmtel broker ACL, rendered by `farmtel broker config` from the device registry.",
        "# Do not edit: re-render after `farmtel devices add|rotate|revoke`, then reload",
        "# mosquitto (systemctl reload mosquitto, i.e. SIGHUP).",
        "# No top-level topic lines: a client that is not listed below gets nothing.",
        "",
    ]
    for user in registry.service_users("ingest"):
        lines += [
            "# ingest service",
            f"user {user}",
            f"topic read {TOPIC_ROOT}/+/+/telemetry",
            f"topic read {TOPIC_ROOT}/+/+/status",
            f"topic write {TOPIC_ROOT}/+/+/receipt",
            f"topic write {TOPIC_ROOT}/+/+/alerts",
            # The ingests of a share group share their seq bookkeeping (ingest/sequence.py).
            f"topic readwrite {SEQ_SHARE_ROOT}/#",
            "",
        ]
    for g in registry.gateways():
        if g.revoked_at_ns is None:
            lines += _gateway_block(g)
    return "\n".join(lines)


def write_private(path: Path, text: str | bytes, mode: int = 0o600) -> None:
    """Write a file that only its owner may read, atomically (temp file + rename).

    The file is created with ``mode`` from the start, so the secret is never readable by
    others, not even for an instant.
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def ensure_ingest_user(registry: Registry, out_dir: Path, username: str) -> Path | None:
    """Give the ingest a broker password if the registry has none for ``username``.

    Writes it to ``out_dir/<username>.password`` (mode 0600) and returns that path; returns
    None when the user exists already (its password is not known any more: only its hash
    is kept).
    """
    if username in registry.service_users("ingest"):
        return None
    password = new_password()
    path = out_dir / f"{username}.password"
    write_private(path, password + "\n")
    registry.set_service_user(username, "ingest", hash_password(password))
    return path
