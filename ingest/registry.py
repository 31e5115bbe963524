"""The device registry: which gateways may write a plantation's data, with which keys.

One SQLite file kept by the ingest side (``[ingest] registry_path``, default
``<state_dir>/registry.sqlite``, mode 0600 because it holds the broker password hashes).
``farmtel devices ...`` writes it; the ingest reads it to verify every batch; ``farmtel
broker config`` renders Mosquitto's password file and ACL from it; the certification
export reads :meth:`Registry.export`.

Tables:

- ``plantations``, ``fields``: the places gateways and sensors belong to.
- ``gateways``: MQTT user name, the broker password hash (mosquitto ``$7$`` form), a
  credential fingerprint (never the secret), ``registered_at_ns`` and ``revoked_at_ns``.
- ``gateway_keys``: Ed25519 public keys by key id (see :mod:`contract.signing`), each with
  ``valid_from_ns`` and ``valid_until_ns``. A rotation adds a key and ends the old one's
  validity after a grace period; old keys are never deleted, so stored data stays verifiable.
- ``sensors``: optional inventory (gateway, field, kind) with install/remove times.
- ``service_users``: broker users of farmtel's own services, by role (:data:`SERVICE_ROLES`).
- ``history``: append-only audit trail (install, remove, revoke, rotate ... with the time
  and who); SQLite triggers refuse UPDATE and DELETE on it.

All times are nanoseconds since the Unix epoch (UTC). Every id is checked against
:data:`contract.ids.IDENT_PATTERN`; bad input raises :class:`RegistryError` naming it.
"""

from __future__ import annotations

import base64
import getpass
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contract.ids import check_ident
from contract.signing import key_id, public_key_bytes
from contract.wire import iso_utc

SCHEMA = """
CREATE TABLE IF NOT EXISTS plantations (
    id TEXT PRIMARY KEY,
    created_at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fields (
    plantation TEXT NOT NULL REFERENCES plantations(id),
    id TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL,
    PRIMARY KEY (plantation, id)
);
CREATE TABLE IF NOT EXISTS gateways (
    plantation TEXT NOT NULL REFERENCES plantations(id),
    id TEXT NOT NULL,
    mqtt_username TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    credential_fingerprint TEXT NOT NULL,
    registered_at_ns INTEGER NOT NULL,
    revoked_at_ns INTEGER,
    PRIMARY KEY (plantation, id)
);
CREATE TABLE IF NOT EXISTS gateway_keys (
    plantation TEXT NOT NULL,
    gateway TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_from_ns INTEGER NOT NULL,
    valid_until_ns INTEGER,
    PRIMARY KEY (plantation, gateway, key_id),
    FOREIGN KEY (plantation, gateway) REFERENCES gateways(plantation, id)
);
CREATE TABLE IF NOT EXISTS sensors (
    plantation TEXT NOT NULL,
    gateway TEXT NOT NULL,
    id TEXT NOT NULL,
    field TEXT,
    kind TEXT,
    installed_at_ns INTEGER NOT NULL,
    removed_at_ns INTEGER,
    PRIMARY KEY (plantation, gateway, id)
);
CREATE TABLE IF NOT EXISTS service_users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ns INTEGER NOT NULL,
    plantation TEXT NOT NULL,
    gateway TEXT,
    sensor TEXT,
    event TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TRIGGER IF NOT EXISTS history_no_update BEFORE UPDATE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS history_no_delete BEFORE DELETE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
"""

EVENTS = (
    "plantation_add",
    "field_add",
    "install",
    "rotate",
    "revoke",
    "sensor_install",
    "sensor_remove",
)
"""Kinds of history events."""

DEFAULT_GRACE_NS = 24 * 3600 * 1_000_000_000
"""After a rotation the old key still signs new batches for this long (24 h), time for the
new bundle to reach the gateway; afterwards it only verifies data stored before."""


SERVICE_ROLES = ("ingest", "status")
"""Roles of farmtel's own broker users: ``ingest`` (the ingest service's ACL) and ``status``
(``farmtel status``: reads the retained status topics, nothing else)."""


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why and what to do."""


def check_service_username(username: str, what: str = "service user name") -> str:
    """Refuse a service user name the password file, the ACL or a gateway's would clash with."""
    if not username or any(c in username for c in ":#+/ \t\n") or "." in username:
        raise RegistryError(
            f"{what} {username!r} must not be empty nor contain ':', '#', '+', '/', '.' or spaces"
        )
    return username


def mqtt_username(plantation: str, gateway: str) -> str:
    """The broker user (and client id) of a gateway: ``<plantation>.<gateway>``.

    ``.`` cannot occur in an id, so the name is unambiguous and safe in ACL and password
    files (no ``:``, ``#``, ``+``, ``/`` or space).
    """
    return f"{check_ident(plantation, 'plantation id')}.{check_ident(gateway, 'gateway id')}"


def revoked_reason(revoked_at_ns: int) -> str:
    """Why a revoked gateway id cannot be registered, rotated or used again."""
    return (
        f"it was revoked at {iso_utc(revoked_at_ns)}, and a revoked gateway id is never used "
        "again (its keys stay registered to check the data it stored); register the gateway "
        "under a new --gateway id"
    )


def registered_again(plantation: str, gateway: str, revoked_at_ns: int) -> RegistryError:
    """The refusal to register a revoked gateway id again."""
    return RegistryError(
        f"gateway {plantation}/{gateway} cannot be registered again: "
        + revoked_reason(revoked_at_ns)
    )


def default_actor() -> str:
    """Who runs a command, for the history: ``$SUDO_USER`` or the login name."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    public_key: Ed25519PublicKey
    valid_from_ns: int
    valid_until_ns: int | None
    """None while the key is current; after a rotation, the end of its grace period."""

    def signs_at(self, now_ns: int) -> bool:
        """Whether a batch arriving at ``now_ns`` may be signed with this key."""
        return self.valid_until_ns is None or now_ns < self.valid_until_ns


@dataclass(frozen=True)
class GatewayRecord:
    plantation: str
    gateway: str
    mqtt_username: str
    credential_fingerprint: str
    registered_at_ns: int
    revoked_at_ns: int | None
    key_records: tuple[KeyRecord, ...] = field(default=())

    @property
    def keys(self) -> dict[str, Ed25519PublicKey]:
        """Every key this gateway ever had (key id -> public key): for verifying stored data."""
        return {k.key_id: k.public_key for k in self.key_records}

    def active_keys(self, now_ns: int) -> dict[str, Ed25519PublicKey]:
        """Keys that may sign a batch arriving at ``now_ns`` (current one + grace period)."""
        return {k.key_id: k.public_key for k in self.key_records if k.signs_at(now_ns)}

    def revoked_at(self, now_ns: int) -> bool:
        return self.revoked_at_ns is not None and now_ns >= self.revoked_at_ns


@dataclass(frozen=True)
class HistoryEvent:
    at_ns: int
    plantation: str
    gateway: str | None
    sensor: str | None
    event: str
    actor: str
    detail: str


def _create_private(path: Path) -> None:
    """Create ``path`` with mode 0600 (and its folder 0700) unless it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class Registry:
    """The registry file, opened for reading and writing (thread-safe; one connection).

    ``Registry(path, create=False)`` raises :class:`RegistryError` when the file is missing
    (the ingest must not invent an empty registry that refuses every gateway by accident).
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise RegistryError(
                    f"device registry {self.path} does not exist; create it with "
                    f"`farmtel devices add --registry {self.path} ...`"
                )
            _create_private(self.path)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as err:
            raise RegistryError(f"device registry {self.path} cannot be opened: {err}") from None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "has anything changed?"."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _log(
        self,
        db: sqlite3.Connection,
        at_ns: int,
        plantation: str,
        event: str,
        actor: str,
        gateway: str | None = None,
        sensor: str | None = None,
        detail: str = "",
    ) -> None:
        assert event in EVENTS, event
        db.execute(
            "INSERT INTO history (at_ns, plantation, gateway, sensor, event, actor, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (at_ns, plantation, gateway, sensor, event, actor, detail),
        )

    def _ensure_plantation(
        self, db: sqlite3.Connection, plantation: str, now: int, actor: str
    ) -> None:
        cur = db.execute(
            "INSERT OR IGNORE INTO plantations (id, created_at_ns) VALUES (?, ?)",
            (plantation, now),
        )
        if cur.rowcount:
            self._log(db, now, plantation, "plantation_add", actor)

    # -- writes --------------------------------------------------------------------------

    def add_field(self, plantation: str, field_id: str, actor: str | None = None) -> None:
        check_ident(plantation, "plantation id")
        check_ident(field_id, "field id")
        now, who = time.time_ns(), actor or default_actor()
        with self._tx() as db:
            self._ensure_plantation(db, plantation, now, who)
            cur = db.execute(
                "INSERT OR IGNORE INTO fields (plantation, id, created_at_ns) VALUES (?, ?, ?)",
                (plantation, field_id, now),
            )
            if cur.rowcount:
                self._log(db, now, plantation, "field_add", who, detail=f"field={field_id}")

    def add_gateway(
        self,
        plantation: str,
        gateway: str,
        public_key: Ed25519PublicKey,
        password_hash: str | None,
        credential_fingerprint: str,
        actor: str | None = None,
        now_ns: int | None = None,
    ) -> GatewayRecord:
        """Register a new gateway; RegistryError if it exists (revoked or not)."""
        check_ident(plantation, "plantation id")
        check_ident(gateway, "gateway id")
        now, who = now_ns or time.time_ns(), actor or default_actor()
        kid = key_id(public_key)
        with self._tx() as db:
            row = db.execute(
                "SELECT revoked_at_ns FROM gateways WHERE plantation = ? AND id = ?",
                (plantation, gateway),
            ).fetchone()
            if row is not None and row[0] is not None:
                raise registered_again(plantation, gateway, int(row[0]))
            if row is not None:
                raise RegistryError(
                    f"gateway {plantation}/{gateway} is already registered; use "
                    "`farmtel devices rotate` for new credentials, or choose another gateway id"
                )
            self._ensure_plantation(db, plantation, now, who)
            db.execute(
                "INSERT INTO gateways (plantation, id, mqtt_username, password_hash,"
                " credential_fingerprint, registered_at_ns) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    plantation,
                    gateway,
                    mqtt_username(plantation, gateway),
                    password_hash,
                    credential_fingerprint,
                    now,
                ),
            )
            self._insert_key(db, plantation, gateway, public_key, now)
            self._log(
                db,
                now,
                plantation,
                "install",
                who,
                gateway=gateway,
                detail=f"key={kid} credential={credential_fingerprint}",
            )
        record = self.gateway(plantation, gateway)
        assert record is not None
        return record

    @staticmethod
    def _insert_key(
        db: sqlite3.Connection, plantation: str, gateway: str, key: Ed25519PublicKey, now: int
    ) -> None:
        db.execute(
            "INSERT INTO gateway_keys (plantation, gateway, key_id, public_key, valid_from_ns)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                plantation,
                gateway,
                key_id(key),
                base64.b64encode(public_key_bytes(key)).decode(),
                now,
            ),
        )

    def rotate(
        self,
        plantation: str,
        gateway: str,
        public_key: Ed25519PublicKey,
        password_hash: str | None,
        credential_fingerprint: str,
        grace_ns: int = DEFAULT_GRACE_NS,
        actor: str | None = None,
        now_ns: int | None = None,
    ) -> GatewayRecord:
        """Add a new signing key and broker credential; old keys sign new batches for
        ``grace_ns`` more and stay registered for verifying stored data."""
        if grace_ns < 0:
            raise RegistryError(f"grace period {grace_ns} ns must not be negative")
        now, who = now_ns or time.time_ns(), actor or default_actor()
        current = self._live_gateway(plantation, gateway, now, "rotate")
        kid = key_id(public_key)
        if kid in current.keys:
            raise RegistryError(f"key {kid} is already registered for {plantation}/{gateway}")
        with self._tx() as db:
            db.execute(
                "UPDATE gateway_keys SET valid_until_ns = ? WHERE plantation = ? AND gateway = ?"
                " AND (valid_until_ns IS NULL OR valid_until_ns > ?)",
                (now + grace_ns, plantation, gateway, now + grace_ns),
            )
            self._insert_key(db, plantation, gateway, public_key, now)
            db.execute(
                "UPDATE gateways SET password_hash = ?, credential_fingerprint = ?"
                " WHERE plantation = ? AND id = ?",
                (password_hash, credential_fingerprint, plantation, gateway),
            )
            self._log(
                db,
                now,
                plantation,
                "rotate",
                who,
                gateway=gateway,
                detail=f"key={kid} credential={credential_fingerprint} grace_s={grace_ns // 10**9}",
            )
        record = self.gateway(plantation, gateway)
        assert record is not None
        return record

    def revoke(
        self,
        plantation: str,
        gateway: str,
        reason: str = "",
        actor: str | None = None,
        now_ns: int | None = None,
    ) -> GatewayRecord:
        """Revoke a gateway: no broker login, no new batch accepted, from now on. Its keys
        stay registered so data it stored before can still be verified."""
        now, who = now_ns or time.time_ns(), actor or default_actor()
        self._live_gateway(plantation, gateway, now, "revoke")
        with self._tx() as db:
            db.execute(
                "UPDATE gateways SET revoked_at_ns = ?, password_hash = NULL"
                " WHERE plantation = ? AND id = ?",
                (now, plantation, gateway),
            )
            db.execute(
                "UPDATE gateway_keys SET valid_until_ns = ? WHERE plantation = ? AND gateway = ?"
                " AND (valid_until_ns IS NULL OR valid_until_ns > ?)",
                (now, plantation, gateway, now),
            )
            self._log(db, now, plantation, "revoke", who, gateway=gateway, detail=reason[:500])
        record = self.gateway(plantation, gateway)
        assert record is not None
        return record

    def _live_gateway(self, plantation: str, gateway: str, now: int, action: str) -> GatewayRecord:
        record = self.gateway(plantation, gateway)
        if record is None:
            raise RegistryError(
                f"cannot {action} gateway {plantation}/{gateway}: it is not registered "
                f"in {self.path}"
            )
        if record.revoked_at_ns is not None and record.revoked_at(now):
            raise RegistryError(
                f"cannot {action} gateway {plantation}/{gateway}: "
                + revoked_reason(record.revoked_at_ns)
            )
        return record

    def install_sensor(
        self,
        plantation: str,
        gateway: str,
        sensor: str,
        field_id: str | None = None,
        kind: str | None = None,
        actor: str | None = None,
    ) -> None:
        check_ident(sensor, "sensor id")
        if field_id is not None:
            check_ident(field_id, "field id")
        now, who = time.time_ns(), actor or default_actor()
        self._live_gateway(plantation, gateway, now, "install a sensor on")
        with self._tx() as db:
            db.execute(
                "INSERT INTO sensors (plantation, gateway, id, field, kind, installed_at_ns)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (plantation, gateway, id) DO UPDATE SET"
                " field = excluded.field, kind = excluded.kind,"
                " installed_at_ns = excluded.installed_at_ns, removed_at_ns = NULL",
                (plantation, gateway, sensor, field_id, kind, now),
            )
            self._log(
                db,
                now,
                plantation,
                "sensor_install",
                who,
                gateway=gateway,
                sensor=sensor,
                detail=f"field={field_id or '-'} kind={kind or '-'}",
            )

    def remove_sensor(
        self, plantation: str, gateway: str, sensor: str, actor: str | None = None
    ) -> None:
        now, who = time.time_ns(), actor or default_actor()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE sensors SET removed_at_ns = ? WHERE plantation = ? AND gateway = ?"
                " AND id = ? AND removed_at_ns IS NULL",
                (now, plantation, gateway, sensor),
            )
            if not cur.rowcount:
                raise RegistryError(
                    f"sensor {sensor} is not installed on gateway {plantation}/{gateway}"
                )
            self._log(db, now, plantation, "sensor_remove", who, gateway=gateway, sensor=sensor)

    def set_service_user(self, username: str, role: str, password_hash: str) -> None:
        """Add or replace a broker user of a farmtel service (a role of :data:`SERVICE_ROLES`)."""
        if role not in SERVICE_ROLES:
            raise RegistryError(
                f"service role {role!r} is unknown; use one of {', '.join(SERVICE_ROLES)}"
            )
        check_service_username(username)
        with self._tx() as db:
            db.execute(
                "INSERT INTO service_users (username, role, password_hash, created_at_ns)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET"
                " role = excluded.role, password_hash = excluded.password_hash",
                (username, role, password_hash, time.time_ns()),
            )

    # -- reads ---------------------------------------------------------------------------

    def gateway(self, plantation: str, gateway: str) -> GatewayRecord | None:
        """The gateway's record with every key it ever had, or None when not registered."""
        with self._lock:
            row = self._db.execute(
                "SELECT plantation, id, mqtt_username, credential_fingerprint,"
                " registered_at_ns, revoked_at_ns FROM gateways WHERE plantation = ? AND id = ?",
                (plantation, gateway),
            ).fetchone()
            if row is None:
                return None
            keys = self._db.execute(
                "SELECT key_id, public_key, valid_from_ns, valid_until_ns FROM gateway_keys"
                " WHERE plantation = ? AND gateway = ? ORDER BY valid_from_ns, key_id",
                (plantation, gateway),
            ).fetchall()
        return GatewayRecord(
            plantation=row[0],
            gateway=row[1],
            mqtt_username=row[2],
            credential_fingerprint=row[3],
            registered_at_ns=int(row[4]),
            revoked_at_ns=None if row[5] is None else int(row[5]),
            key_records=tuple(
                KeyRecord(
                    key_id=k[0],
                    public_key=Ed25519PublicKey.from_public_bytes(base64.b64decode(k[1])),
                    valid_from_ns=int(k[2]),
                    valid_until_ns=None if k[3] is None else int(k[3]),
                )
                for k in keys
            ),
        )

    def gateways(self, plantation: str | None = None) -> list[GatewayRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT plantation, id FROM gateways WHERE ? IS NULL OR plantation = ?"
                " ORDER BY plantation, id",
                (plantation, plantation),
            ).fetchall()
        out = []
        for p, g in rows:
            record = self.gateway(p, g)
            if record is not None:
                out.append(record)
        return out

    def plantations(self) -> list[str]:
        """Every plantation the registry knows (it got a gateway or a field)."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM plantations ORDER BY id").fetchall()
        return [str(r[0]) for r in rows]

    def plantations_of(self, gateway: str) -> list[str]:
        """Plantations that have a gateway with this id (for clearer refusal messages)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT plantation FROM gateways WHERE id = ? ORDER BY plantation", (gateway,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def password_entries(self) -> list[tuple[str, str]]:
        """``(user, $7$ hash)`` for every live gateway and service user, for the broker."""
        with self._lock:
            rows = self._db.execute(
                "SELECT mqtt_username, password_hash FROM gateways"
                " WHERE revoked_at_ns IS NULL AND password_hash IS NOT NULL"
                " UNION ALL SELECT username, password_hash FROM service_users"
                " ORDER BY 1"
            ).fetchall()
        return [(str(u), str(h)) for u, h in rows]

    def service_role(self, username: str) -> str | None:
        """The role of a service user, or None when the registry has no such user."""
        with self._lock:
            row = self._db.execute(
                "SELECT role FROM service_users WHERE username = ?", (username,)
            ).fetchone()
        return None if row is None else str(row[0])

    def service_users(self, role: str = "ingest") -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT username FROM service_users WHERE role = ? ORDER BY username", (role,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def history(self, plantation: str | None = None) -> list[HistoryEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at_ns, plantation, gateway, sensor, event, actor, detail FROM history"
                " WHERE ? IS NULL OR plantation = ? ORDER BY id",
                (plantation, plantation),
            ).fetchall()
        return [HistoryEvent(int(r[0]), *r[1:]) for r in rows]

    def export(self, plantation: str) -> dict[str, Any]:
        """What a certifier needs to verify a plantation's stored batches, as plain JSON data.

        ``{"format": "farmtel-registry-v1", "plantation": P, "exported_at_ns": int,
        "gateways": [{"gateway", "mqtt_username", "credential_fingerprint",
        "registered_at_ns", "revoked_at_ns", "keys": [{"key_id", "public_key" (base64 of
        the 32 raw bytes), "valid_from_ns", "valid_until_ns"}]}], "sensors": [...],
        "fields": [...], "history": [{"at_ns", "gateway", "sensor", "event", "actor",
        "detail"}]}``. Holds no secret: no password hash, no private key.
        """
        check_ident(plantation, "plantation id")
        with self._lock:
            fields = [
                str(r[0])
                for r in self._db.execute(
                    "SELECT id FROM fields WHERE plantation = ? ORDER BY id", (plantation,)
                )
            ]
            sensors = [
                {
                    "gateway": r[0],
                    "sensor": r[1],
                    "field": r[2],
                    "kind": r[3],
                    "installed_at_ns": r[4],
                    "removed_at_ns": r[5],
                }
                for r in self._db.execute(
                    "SELECT gateway, id, field, kind, installed_at_ns, removed_at_ns FROM sensors"
                    " WHERE plantation = ? ORDER BY gateway, id",
                    (plantation,),
                )
            ]
        return {
            "format": "farmtel-registry-v1",
            "plantation": plantation,
            "exported_at_ns": time.time_ns(),
            "gateways": [
                {
                    "gateway": g.gateway,
                    "mqtt_username": g.mqtt_username,
                    "credential_fingerprint": g.credential_fingerprint,
                    "registered_at_ns": g.registered_at_ns,
                    "revoked_at_ns": g.revoked_at_ns,
                    "keys": [
                        {
                            "key_id": k.key_id,
                            "public_key": base64.b64encode(public_key_bytes(k.public_key)).decode(),
                            "valid_from_ns": k.valid_from_ns,
                            "valid_until_ns": k.valid_until_ns,
                        }
                        for k in g.key_records
                    ],
                }
                for g in self.gateways(plantation)
            ],
            "fields": fields,
            "sensors": sensors,
            "history": [
                {
                    "at_ns": e.at_ns,
                    "gateway": e.gateway,
                    "sensor": e.sensor,
                    "event": e.event,
                    "actor": e.actor,
                    "detail": e.detail,
                }
                for e in self.history(plantation)
            ],
        }
