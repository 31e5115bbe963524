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
- a status user (``farmtel status``, ingest/status.py ``collect_retained``) only reads
  every gateway's retained ``status``: with ``use_username_as_clientid`` it cannot share
  the ingest's user without throwing the ingest off the broker, and it needs none of the
  ingest's other rights;
- anyone else gets nothing: Mosquitto denies what the ACL does not grant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from contract.topics import SEQ_SHARE_ROOT, TOPIC_ROOT, receipt_topic, status_topic, telemetry_topic
from ingest.registry import GatewayRecord, Registry, check_service_username

PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
DEFAULT_INGEST_USER = "farmtel-ingest"
STATUS_ACL = (f"topic read {TOPIC_ROOT}/+/+/status",)
"""All a status user may do: ``farmtel status`` subscribes to ``farmtel/v1/+/+/status``
(or ``farmtel/v1/<plantation>/+/status``) and publishes nothing."""


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
    for user in registry.service_users("status"):
        lines += ["# farmtel status (read-only)", f"user {user}", *STATUS_ACL, ""]
    for g in registry.gateways():
        if g.revoked_at_ns is None:
            lines += _gateway_block(g)
    return "\n".join(lines)


def _keep_owner(fd: int, old: os.stat_result | None, mode: int) -> int:
    """Give a replacement file the old one's owner and group (as root), and its group read.

    The operator may have handed the file to the broker (``chown mosquitto:``, or
    ``root:mosquitto`` with mode 0640, docs/security.md); a rewrite that made it root's own
    again would lock mosquitto out at its next reload. Others never get any access.
    Returns the mode to give the file.
    """
    if old is None:
        return mode
    if os.geteuid() == 0:
        os.fchown(fd, old.st_uid, old.st_gid)
    if os.fstat(fd).st_gid == old.st_gid:
        mode |= stat.S_IMODE(old.st_mode) & stat.S_IRGRP
    return mode


def write_private(path: Path, text: str | bytes, mode: int = 0o600) -> None:
    """Write a file that only its owner may read, atomically (temp file + rename).

    The file is created with ``mode`` from the start, so the secret is never readable by
    others, not even for an instant. A file that is replaced keeps its owner and group
    when we run as root, and its group's read permission (see :func:`_keep_owner`).
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        old: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        old = None
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, mode)
    try:
        os.fchmod(fd, _keep_owner(fd, old, mode))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


class ServiceUserError(ValueError):
    """A service's broker user or password file cannot be used; the message says what to do."""


def setup_ingest_user(registry: Registry, out_dir: Path, username: str) -> tuple[str, Path]:
    """Make sure the registry has the ingest's broker user; never overwrite its password.

    Returns ``(what, path)`` for ``path = out_dir/<username>.password``, ``what`` being

    - ``"created"``: new user, new random password written to ``path`` (mode 0600);
    - ``"reused"``: new user in this registry, but ``path`` exists: the ingest that runs
      may already log in with it, so its password is kept and registered;
    - ``"registered"``: the registry has the user already (only its hash is kept);
    - ``"mismatch"``: it has, but ``path`` holds another password (the file is left alone).

    A status user is refused: an ingest's rights would quietly go to a read-only user.
    """
    return _setup_service_user(registry, out_dir, username, "ingest")


def setup_status_user(registry: Registry, out_dir: Path, username: str) -> tuple[str, Path]:
    """Make sure the registry has a read-only broker user for ``farmtel status``.

    The same rules and results as :func:`setup_ingest_user`. An ingest user of that name
    is refused: made read-only, an ingest that logs in as it would get no telemetry.
    """
    return _setup_service_user(registry, out_dir, username, "status")


def _setup_service_user(
    registry: Registry, out_dir: Path, username: str, role: str
) -> tuple[str, Path]:
    check_service_username(username, f"--{role}-user")
    path = out_dir / f"{username}.password"
    existing = path.exists()
    current = registry.service_role(username)
    if current == "status" and role == "ingest":
        raise ServiceUserError(
            f"--ingest-user {username!r} is the read-only broker user of farmtel status "
            "(--status-user); give the ingest a user of its own"
        )
    if current == "ingest" and role == "status":
        # Made read-only, it would cut off an ingest that logs in as it (a typo away).
        raise ServiceUserError(
            f"--status-user {username!r} is an ingest's broker user, which a running ingest "
            "may log in with; give farmtel status a user of its own, e.g. farmtel-status-ro"
        )
    if current is not None:
        hashed = dict(registry.password_entries())[username]
        if existing:
            try:
                same = check_password(_read_password(path, role), hashed)
            except ServiceUserError:
                same = False
            if not same:
                return "mismatch", path
        return "registered", path
    password = _read_password(path, role) if existing else None
    if password is None:
        password = new_password()
        write_private(path, password + "\n")
    registry.set_service_user(username, role, hash_password(password))
    return ("reused" if existing else "created"), path


def _read_password(path: Path, role: str) -> str:
    try:
        password = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ServiceUserError(f"{role} password file {path} cannot be read: {err}") from None
    if not password or any(c.isspace() for c in password):
        raise ServiceUserError(
            f"{role} password file {path} does not hold one password (it is empty or has "
            "spaces or several lines); fix it, or move it away to have a new one made"
        )
    return password
