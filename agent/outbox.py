"""The gateway's on-disk outbox: every reading is committed here before anything else.

A reading leaves the outbox only when the ingest's receipt says its batch is in InfluxDB
(:meth:`Outbox.ack`). The file is SQLite in WAL mode; readings and gaps are committed with
``synchronous=FULL`` in groups, so a committed group survives SIGKILL (tested: 20 kills, no
committed seq lost) and power loss (SQLite's guarantee with FULL; not testable here). Acks
commit with ``NORMAL`` by default: still atomic, and an ack lost to a power cut only means
its batch is sent again and overwrites itself in InfluxDB (``sync_acks=True`` for FULL).

Layout of the state next to ``path``:

- ``<path>`` (+ ``-wal``): the database. Readings are numbered by their per-gateway
  sequence number (``seq``). A row holds ``n`` readings of one commit with consecutive seq,
  keyed by the first: their compact JSON records, each the reading's wire form exactly as
  a batch carries it (seq included), joined by commas, and a CRC-32 of seq, n and the
  records (:func:`_row_crc`), checked whenever the row is read for sending. A row holds at
  most ``row_readings`` readings and :data:`ROW_BYTES` bytes (one reading at least), so it
  fits in a 4 KiB page. Rows a version 1 agent stored are JSON arrays without the seq, and
  older rows hold one reading each (see :data:`SCHEMA_VERSION`). Gaps (declared periods
  without data) are rows of their own, also checksummed.
- ``<path>.seq``: the sequence high-water mark, made durable before every group is
  committed (the older of two copies overwritten in place, then fdatasync; the file is
  created by write, fsync, rename, fsync of the folder), so seq never repeats even when a
  corrupt database has to be moved aside. A crash between that write and the commit
  leaves a hole in seq for readings that were never stored, which is the truth.
- ``<path>.corrupt-<UTC time>`` (+ ``-wal``/``-shm``): a database that failed its checks on
  open, kept for forensics; see :attr:`Outbox.recovered_from`.

Batches in flight live in memory only. A batch is a contiguous range of seq made of whole
rows (plus a list of gap rows), because :meth:`Outbox.next_batch` always takes the oldest
unassigned rows and nothing but ``ack`` removes assigned ones; so ``ack`` deletes by
primary-key range and no batch column or index has to be rewritten on the SD card for every
row sent. A new process
knows nothing of the previous one's batches, so on open every reading is unassigned again and
is sent again: a redelivered point overwrites itself in InfluxDB.

Thread safety: one connection guarded by one lock. Every frequent call writes (add, ack), and
SQLite admits one writer at a time anyway, so per-thread connections would bring
``SQLITE_BUSY`` retries and no concurrency. One lock also keeps the in-memory state (next
seq, batches, counters, the full flag) consistent with what is committed, lets the file be
held in ``locking_mode=EXCLUSIVE`` (a second agent on the same file fails at once, and no
``-shm`` is needed), and costs one page cache instead of three on a small gateway. The price
is that ``depth()`` or ``next_batch()`` may wait for a commit in progress (one fsync, ms).
"""

import logging
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

import orjson
from pydantic import ValidationError

from agent.downtime import AliveMark
from contract.ids import check_ident
from contract.wire import (
    _READING_FIELDS,
    MAX_READINGS_PER_BATCH,
    ClockQuality,
    Gap,
    Reading,
    WireReading,
    plain_reading,
    plain_reading_columns,
    reading_from_wire,
    validated_reading,
    wire_form,
)

log = logging.getLogger(__name__)

_Record = tuple[bytes, bytes]
"""A reading's record before it has a seq: the bytes before the seq and those after it."""

APPLICATION_ID = 0x46544F42
"""``PRAGMA application_id`` of a farmtel outbox ("FTOB"); anything else is a foreign file."""
SCHEMA_VERSION = 3
"""``PRAGMA user_version`` of the current layout; another value is treated as foreign.

Version 3 stores up to ``row_readings`` readings of a commit in one row (column ``n``
holds how many; the records joined by commas), so that sending and acking a reading costs a
twentieth of the SQLite calls at 100 readings/s. A version 1 or 2 row is a version 3 row of
one reading: its CRC is computed the same way (:func:`_row_crc`). A file of version 1 or 2
is opened as it is, and the commit that stores its first new rows adds the column ``n``
(``ALTER TABLE``, no rows rewritten) and marks the file 3, in the same transaction.

Version 2 stored a new reading's record as its wire JSON object (what a batch carries, so a
batch is its rows' records joined), one reading per row; version 1 stored a JSON array
(sensor, field, kind, ts, clock, values, cal). Their tables have no column ``n``. The
records of a version 1 file are still read (and checked against the contract). Until the
first new rows are committed the file keeps its version (an upgrade rolled back before it
stored anything leaves the backlog to the older agent), and the upgrade writes nothing on
open (a full disk does not keep the backlog from going). Once marked 3, an older agent
refuses the file instead of taking the new rows for corrupt ones.
"""
READABLE_VERSIONS = (1, 2, 3)
"""``PRAGMA user_version`` values this agent opens."""
_OBJECT_RECORD = b'{"sensor":'
"""How a version 2 or 3 record (and row) begins (a version 1 record begins with ``[``)."""

BATCH_READINGS_BYTES = 640 * 1024
"""A new batch takes readings only while their records add up to at most this many bytes
(each counted with :data:`_RECORD_OVERHEAD` more), and at least one. The rest of the
contract's 1 MiB (``MAX_BATCH_BYTES``, which the broker enforces too with
``max_packet_size``) is left to the envelope and up to 100 gaps of up to 3 KB each: readings
with many values never make a batch that neither the broker nor the ingest would take. At
~200 bytes a reading this cuts nothing below ~2,300 readings."""

ROW_READINGS = 50
"""At most this many readings in one row, by default for the agent (see ``row_readings``);
at 100 readings/s and a commit every 0.2 s a row holds 20."""
ROW_BYTES = 4000
"""A row's records add up to at most this many bytes (unless one record alone is larger), so
that a row stays within its 4 KiB b-tree page (SQLite keeps up to 4,061 bytes of a row in
the page; more goes to overflow pages that every read of the row follows)."""

_RECORD_OVERHEAD = 80
"""Bytes a record may grow by in the batch: the comma, and the keys that a version 1
record (a JSON array) gets back when it is decoded (``"sensor":`` ... ``"cal":``, 60)."""

DROPPED = -1
"""Returned by :meth:`Outbox.add` for a reading not stored because the outbox is full."""
REJECTED = -2
"""Returned by :meth:`Outbox.add` for a reading that is not valid (logged and counted)."""

LOW_WATER = 0.9
"""After the cap was hit, readings are stored again once the size falls below cap x this."""
ROW_OVERHEAD = 32
"""Bytes a stored reading costs beyond its record (cell header, rowid, crc, pointer)."""
ROW_OVERHEAD_WITH_SEQ = ROW_OVERHEAD + 8
"""... and beyond its record's two parts without the seq that goes between them."""
WAL_AUTOCHECKPOINT_PAGES = 1000
"""Checkpoint the WAL into the database after this many pages (~4 MiB at 4 KiB pages)."""
JOURNAL_SIZE_LIMIT = 8 * 2**20
"""Bytes the WAL file is truncated back to after a checkpoint."""
VACUUM_MIN_FREE = 4 * 2**20
"""Give free pages back to the file system once at least this many bytes are free ..."""
VACUUM_EVERY_S = 30.0
"""... at most this often (seconds), ..."""
VACUUM_PAGES = 1024
"""... this many pages at a time, so one ack never stalls for long."""
BUSY_TIMEOUT_S = 2.0
"""How long open() waits for a lock held by another process before giving up."""

_SIDECAR_MAGIC = "farmtel-outbox-seq"
_SIDECAR_VERSION = "2"
_SIDECAR_VERSIONS = ("1", "2")
"""Version 1 was one record, replaced by rename; version 2 keeps two copies (see below)."""
_SIDECAR_PAGE = 4096
"""Version 2 holds two copies of the record, one per 4 KiB page, overwritten in turn."""
_SIDECAR_RECORD = 64
"""Bytes of one record: magic, version, next seq, CRC-32, padded with blanks, then LF."""

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    # seq is the rowid: the pending scan and the ack range delete are primary-key ranges.
    # n: readings in the row, seq .. seq + n - 1 (added by ALTER TABLE to older files).
    "CREATE TABLE readings (seq INTEGER PRIMARY KEY, rec BLOB NOT NULL, crc INTEGER NOT NULL,"
    " n INTEGER NOT NULL DEFAULT 1)",
    # open_sensor is set while an outbox_full gap of that sensor is still growing.
    "CREATE TABLE gaps (id INTEGER PRIMARY KEY, open_sensor TEXT, dropped INTEGER NOT NULL"
    " DEFAULT 0, rec BLOB NOT NULL, crc INTEGER NOT NULL)",
    "CREATE UNIQUE INDEX gaps_open ON gaps (open_sensor) WHERE open_sensor IS NOT NULL",
)


class OutboxError(Exception):
    """The outbox cannot do what was asked (closed, disk error, file locked by another process)."""


class OutboxCorrupt(OutboxError):
    """SQLite reported the database corrupt while running.

    The outbox cannot go on with this file: ``close()`` it and open it again, which moves
    the file aside and starts a fresh one (see :attr:`Outbox.recovered_from`).
    """


@dataclass(frozen=True, slots=True)
class NewReading:
    """A reading as the scheduler hands it in; the outbox assigns ``seq``.

    ``ts`` is nanoseconds since the epoch from the gateway clock; ``values`` are finite
    numbers with the unit in the name (``temp_c``). It is validated like a
    :class:`contract.wire.Reading` when added.
    """

    sensor: str
    field: str
    kind: str
    ts: int
    clock: ClockQuality
    values: dict[str, float]
    cal: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    """What the outbox holds now."""

    readings: int
    """Readings stored, sent or not."""
    gaps: int
    """Gap rows stored, including outbox_full gaps still growing."""
    oldest_ts: int | None
    """``ts`` (ns) of the reading with the lowest seq, or None when there is none."""
    bytes: int
    """Bytes in use in the database (pages minus free pages); what the cap is checked against.
    The file itself can be larger by its free pages, and the WAL adds up to a few MiB."""
    inflight_batches: int
    """Batches handed out by next_batch() and not acked."""


@dataclass(slots=True)
class _Batch:
    first_seq: int | None
    last_seq: int | None
    gap_ids: list[int]
    assigned: float
    last_sent: float | None = None
    attempts: int = 0


@dataclass(slots=True)
class _Drops:
    """Readings of one sensor not stored since its outbox_full gap opened."""

    start: int
    end: int
    count: int = 0

    def extend(self, ts: int) -> None:
        self.start = min(self.start, ts)
        self.end = max(self.end, ts)
        self.count += 1


class _Unusable(Exception):
    """The file at path is not a usable outbox and must be moved aside; args[0] says why."""


def _sidecar_record(next_seq: int) -> bytes:
    digits = str(next_seq)
    text = f"{_SIDECAR_MAGIC} {_SIDECAR_VERSION} {digits} {zlib.crc32(digits.encode()):08x}"
    return text.ljust(_SIDECAR_RECORD - 1).encode("ascii") + b"\n"


def _parse_sidecar(page: bytes) -> int | None:
    """The next seq in one sidecar record (up to its LF), or None if it is not intact."""
    line, newline, _ = page.partition(b"\n")
    if not newline:
        return None
    try:
        parts = line.decode("ascii").split()
    except UnicodeDecodeError:
        return None
    if (
        len(parts) == 4
        and parts[0] == _SIDECAR_MAGIC
        and parts[1] in _SIDECAR_VERSIONS
        and parts[2].isdigit()
        and parts[3] == f"{zlib.crc32(parts[2].encode()):08x}"
    ):
        return int(parts[2])
    return None


def _reading_crc(seq: int, rec: bytes) -> int:
    """The CRC of a row of one reading (what versions 1 and 2 stored for every row)."""
    return _row_crc(seq, 1, rec)


def _row_prefix(seq: int, n: int) -> bytes:
    """What a row's CRC covers before its records: the seq, and n when it is not 1 (so a
    row of one reading has the CRC versions 1 and 2 wrote). Raises for a seq or n that is
    not an int in range (OverflowError, AttributeError, TypeError)."""
    if n == 1:
        return seq.to_bytes(8, "little")
    return seq.to_bytes(8, "little") + n.to_bytes(4, "little")


def _row_crc(seq: int, n: int, rec: bytes) -> int:
    """The CRC stored with a row of ``n`` readings from ``seq`` whose records are ``rec``."""
    return zlib.crc32(rec, zlib.crc32(_row_prefix(seq, n)))


def _is_corruption(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _is_full(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_FULL


def _first_problem(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "reading"
    return f"{loc}: {e['msg']}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """The on-disk queue of readings and gaps waiting for the ingest's receipt.

    Open it once per process; share the object between threads.

    Attributes (read-only for callers):

    - ``recovered_from``: where a corrupt or foreign file was moved on open, else None. The
      readings in it were not delivered: the agent should report it and declare a gap.
    - ``recovery_reason``: why it was moved, else None.
    - ``dropped_total``: readings not stored because the outbox was full, since open.
    - ``rejected_total``: invalid readings refused by :meth:`add`, since open.
    - ``corrupt_rows_total``: stored readings replaced by storage_corrupt gaps since open
      (their row failed its checksum, or they failed the contract), plus gap rows that
      failed theirs.
    - ``last_alive``: the :class:`~agent.downtime.AliveMark` the file held when opened
      (None for a new file, one from before marks were kept, or an unreadable mark).
    """

    def __init__(
        self,
        path: Path,
        gateway: str,
        max_bytes: int = 384 * 2**20,
        *,
        sync_acks: bool = False,
        row_readings: int = 1,
    ):
        """Open or create the outbox at ``path`` for ``gateway``; never refuse a bad file.

        ``max_bytes`` caps the pages in use (see :meth:`add`). ``row_readings`` (1..5000) is
        how many readings of one :meth:`add` may share a row (and at most :data:`ROW_BYTES`
        of records). A batch takes whole rows, and at least one: when the oldest row alone
        holds more readings than asked for, the batch is that row. The agent passes
        ``min(ROW_READINGS, its smallest batch)``, so that happens only with rows stored
        before ``batch_size`` was lowered below 50. ``sync_acks=True`` commits
        :meth:`ack` with ``synchronous=FULL`` too; by default acks commit with ``NORMAL``
        (still atomic), because an ack lost to a power cut only means that batch is sent
        again and overwrites itself in InfluxDB, while an fsync per ack slows a backlog drain.

        A file that is not a database, fails ``PRAGMA quick_check``, or is not a farmtel
        outbox of this gateway and schema version is moved aside with its -wal/-shm to
        ``<path>.corrupt-<UTC time>`` (logged as an error, see ``recovered_from``) and a fresh
        outbox is started; seq continues from the ``<path>.seq`` sidecar. Raises
        :class:`OutboxError` only when moving aside would not help: the folder is missing or
        not writable, or another process holds the database (a second agent).
        """
        check_ident(gateway, "gateway id")
        if max_bytes <= 0:
            raise ValueError(f"outbox max_bytes {max_bytes} must be a positive number of bytes")
        if not 1 <= row_readings <= MAX_READINGS_PER_BATCH:
            raise ValueError(
                f"outbox row_readings {row_readings} must be 1..{MAX_READINGS_PER_BATCH}"
            )
        self.path = Path(path)
        self.gateway = gateway
        self.max_bytes = max_bytes
        self.sync_acks = sync_acks
        self.row_readings = row_readings
        self.recovered_from: Path | None = None
        self.recovery_reason: str | None = None
        self.dropped_total = 0
        self.rejected_total = 0
        self.corrupt_rows_total = 0
        self.last_alive: AliveMark | None = None

        self._lock = threading.Lock()
        # The newest mark from note_alive(): every durable commit stores it.
        self._alive: AliveMark | None = None
        self._seq_path = Path(f"{self.path}.seq")
        self._seq_fd: int | None = None
        self._seq_page = 0
        self._batches: dict[str, _Batch] = {}
        self._assigned_gaps: set[int] = set()
        # Highest seq handed out in a batch: everything at or below it is in flight.
        self._cursor = -1
        self._drops: dict[str, _Drops] = {}
        self._unsaved_gaps: list[Gap] = []
        self._full_cause = f"outbox reached its cap of {max_bytes} bytes"
        self._last_vacuum = 0.0
        # The version of a file opened in an older format (set by _prepare): the commit that
        # stores its first new rows adds the column n and marks it SCHEMA_VERSION.
        self._upgrade_from: int | None = None
        # How SQL reads a row's count of readings: "1" until an older file has the column.
        self._n = "n"
        self._closed = False

        if not self.path.parent.is_dir():
            raise OutboxError(
                f"outbox folder {self.path.parent} does not exist; create it or set [outbox] path"
            )
        try:
            conn = self._connect()
        except _Unusable as bad:
            self.recovery_reason = str(bad)
            self.recovered_from = self._move_aside(str(bad))
            try:
                conn = self._connect()
            except _Unusable as again:
                raise OutboxError(
                    f"outbox {self.path}: a fresh database is unusable too ({again}); "
                    "check the storage"
                ) from None
        self._conn = conn
        self._sync_full = True
        self._page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        self._load_state()

    # --- opening ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """Open ``path``, creating the schema if empty; raise :class:`_Unusable` if bad."""
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
                check_same_thread=False,  # shared by threads, serialised by self._lock
            )
        except sqlite3.Error as err:
            raise OutboxError(f"outbox {self.path} cannot be opened: {err}") from err
        try:
            self._prepare(conn)
        except _Unusable:
            conn.close()
            raise
        except sqlite3.Error as err:
            conn.close()
            if _is_corruption(err):
                raise _Unusable(f"sqlite: {err}") from None
            raise OutboxError(self._describe(err, "open")) from err
        except BaseException:
            conn.close()
            raise
        return conn

    def _describe(self, err: sqlite3.Error, doing: str) -> str:
        if "locked" in str(err) or "busy" in str(err):
            return (
                f"outbox {self.path} is in use by another process ({err}); "
                "is a second agent running with the same state_dir?"
            )
        return f"outbox {self.path}: {doing} failed: {err}"

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # Exclusive before the first access: the file stays locked while we run and WAL
        # needs no shared-memory index.
        self._upgrade_from = None
        self._n = "n"
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and tables == 0:
            self._create_schema(conn)
        elif app_id != APPLICATION_ID:
            raise _Unusable(f"application_id is {app_id:#x}, not a farmtel outbox")
        else:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in READABLE_VERSIONS:
                raise _Unusable(
                    f"outbox schema version {version}, this agent reads"
                    f" {', '.join(map(str, READABLE_VERSIONS[:-1]))} and {READABLE_VERSIONS[-1]}"
                )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OutboxError(f"outbox {self.path}: cannot switch to WAL (journal_mode={mode})")
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise _Unusable("quick_check: " + "; ".join(problems))
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if not {"meta", "readings", "gaps"} <= names:
                raise _Unusable(f"tables {sorted(names)} are not an outbox's")
            row = conn.execute("SELECT value FROM meta WHERE key = 'gateway'").fetchone()
            if row is None or row[0] != self.gateway:
                owner = None if row is None else row[0]
                raise _Unusable(f"outbox belongs to gateway {owner!r}, not {self.gateway!r}")
            columns = [r[1] for r in conn.execute("PRAGMA table_info(readings)")]
            if version != SCHEMA_VERSION:
                # Its rows stay readable as rows of one reading; new rows (objects, several
                # readings) must not be taken for corrupt ones by an older agent: the commit
                # that stores the first of them marks the file (_add_locked), not this open.
                self._upgrade_from = version
                self._n = "1"
                if columns != ["seq", "rec", "crc"]:
                    raise _Unusable(
                        f"readings columns {columns} are not a version {version} outbox's"
                    )
            elif columns != ["seq", "rec", "crc", "n"]:
                raise _Unusable(f"readings columns {columns} are not a version 3 outbox's")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        # auto_vacuum can only be chosen before the first table exists.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise OutboxError(f"outbox {self.path}: cannot switch to WAL (journal_mode={mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("gateway", self.gateway), ("next_seq", 0), ("created_ns", time.time_ns())],
            )
            # In the same transaction: a crash here leaves an empty file, created again.
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        log.info("outbox created path=%s gateway=%s", self.path, self.gateway)

    def _move_aside(self, reason: str) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = Path(f"{self.path}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = Path(f"{self.path}.corrupt-{stamp}-{n}")
            n += 1
        try:
            for suffix in ("", "-wal", "-shm", "-journal"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    # Keep SQLite's naming so the copy opens with its WAL for forensics.
                    os.replace(src, Path(f"{aside}{suffix}"))
            _fsync_dir(self.path.parent)
        except OSError as err:
            raise OutboxError(
                f"outbox {self.path} is unusable ({reason}) and cannot be moved aside: {err}"
            ) from err
        log.error(
            "outbox unusable, moved aside path=%s moved_to=%s reason=%s; "
            "its unsent readings are not delivered",
            self.path,
            aside,
            reason,
        )
        return aside

    def _load_state(self) -> None:
        conn = self._conn
        try:
            meta_next = int(
                conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]
            )
            last = conn.execute(
                f"SELECT seq, rec, crc, {self._n} FROM readings ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            # A last row that fails its CRC counts as one reading: its n is not trusted.
            max_seq = None if last is None else last[0] + _trusted_count(last) - 1
            self._n_readings = int(
                conn.execute(f"SELECT total({self._n}) FROM readings").fetchone()[0]
            )
            self._n_gaps = conn.execute("SELECT count(*) FROM gaps").fetchone()[0]
            open_gaps = conn.execute(
                "SELECT count(*) FROM gaps WHERE open_sensor IS NOT NULL"
            ).fetchone()[0]
            alive = conn.execute("SELECT value FROM meta WHERE key='alive'").fetchone()
        except (sqlite3.Error, TypeError, ValueError) as err:
            conn.close()
            raise OutboxError(f"outbox {self.path}: reading its state failed: {err}") from err
        if alive is not None:
            try:
                self.last_alive = AliveMark.decode(alive[0])
            except ValueError as err:
                log.warning("outbox alive mark unreadable path=%s error=%s", self.path, err)
        db_next = max(meta_next, -1 if max_seq is None else max_seq + 1)
        sidecar_next = self._read_sidecar()
        self._next_seq = max(db_next, sidecar_next or 0)
        if sidecar_next is None or sidecar_next < self._next_seq:
            self._write_sidecar(self._next_seq)
        if self._next_seq > db_next:
            log.info(
                "outbox seq continues from the sidecar next_seq=%d database_next_seq=%d",
                self._next_seq,
                db_next,
            )
            if self.recovered_from is None:
                self._declare_burned_seq(db_next)
        self._full = open_gaps > 0
        if self._full:
            try:
                with self._translate("release space"), self._txn(durable=True) as c:
                    created = self._release_space(c)
            except OutboxError:
                conn.close()
                raise
            if created is not None:
                self._space_released(created)
        log.info(
            "outbox open path=%s readings=%d gaps=%d next_seq=%d bytes=%d",
            self.path,
            self._n_readings,
            self._n_gaps,
            self._next_seq,
            self._used_bytes(),
        )

    def _declare_burned_seq(self, db_next: int) -> None:
        """Declare the seq a crash burned (sidecar written, commit lost) as an agent_down gap.

        Without it the ingest would see an unexplained hole in seq. The readings were in
        the agent's memory only; the gap runs from the sidecar write (its mtime, just before
        the lost commit) to now. Stored with meta next_seq moved past it, in one commit, so
        it is declared once. A failure is logged: the hole then stays undeclared.
        """
        count = self._next_seq - db_next
        now = time.time_ns()
        try:
            start = min(self._seq_path.stat().st_mtime_ns, now)
        except OSError:
            start = now
        gap = Gap(
            start=start,
            end=now,
            reason="agent_down",
            detail=f"agent stopped before {count} readings reached the outbox",
            seq=db_next,
            count=count,
        )
        rec, crc = self._gap_record(gap)
        try:
            with self._txn(durable=True) as conn:
                conn.execute("INSERT INTO gaps (rec, crc) VALUES (?, ?)", (rec, crc))
                conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (self._next_seq,))
        except sqlite3.Error as err:
            log.error("outbox could not declare burned seq count=%d error=%s", count, err)
            return
        self._n_gaps += 1
        log.warning("outbox declared burned seq seq=%d count=%d", db_next, count)

    # --- the seq sidecar -------------------------------------------------------------------
    def _read_sidecar(self) -> int | None:
        try:
            data = self._seq_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.error("outbox seq sidecar unreadable path=%s error=%s", self._seq_path, err)
            return None
        # Version 2: two copies, one per page; a write torn by a power cut spoils at most the
        # copy being written, and the other still holds a high-water mark at or above every
        # committed seq. Version 1 (one record) reads as a file with its first page only.
        pages = [data[0:_SIDECAR_PAGE], data[_SIDECAR_PAGE : 2 * _SIDECAR_PAGE]]
        found = [v for v in map(_parse_sidecar, pages) if v is not None]
        if found:
            if len(found) < len([p for p in pages if p]):
                log.warning("outbox seq sidecar has one damaged copy path=%s", self._seq_path)
            return max(found)
        log.error("outbox seq sidecar is damaged path=%s content=%.80r", self._seq_path, data)
        return None

    def _write_sidecar(self, next_seq: int) -> None:
        """Durably record that seq below ``next_seq`` may be in use; log (not raise) failure.

        A failed write weakens only the corrupt-database case (the database keeps its own
        high-water mark), so it must not stop readings from being stored.

        The first write of a process creates the file whole (write, fsync, rename, fsync of
        the folder); later ones overwrite the older of its two copies in place and
        ``fdatasync`` it: one flush per commit instead of two plus a directory update. The
        file's mtime (the start of a burned-seq gap) may then lag after a power cut, which
        only makes that gap start earlier.
        """
        record = _sidecar_record(next_seq)
        try:
            if self._seq_fd is None:
                self._create_sidecar(record)
            else:
                os.pwrite(self._seq_fd, record, self._seq_page * _SIDECAR_PAGE)
                os.fdatasync(self._seq_fd)
                self._seq_page ^= 1
        except OSError as err:
            log.error("outbox seq sidecar not written path=%s error=%s", self._seq_path, err)
            self._close_sidecar()  # the next write starts a fresh file

    def _create_sidecar(self, record: bytes) -> None:
        page = record.ljust(_SIDECAR_PAGE, b"\0")
        tmp = Path(f"{self._seq_path}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, page + page)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._seq_path)
        _fsync_dir(self._seq_path.parent)
        self._seq_fd = os.open(self._seq_path, os.O_RDWR)
        self._seq_page = 0

    def _close_sidecar(self) -> None:
        fd, self._seq_fd = self._seq_fd, None
        if fd is not None:
            with suppress(OSError):
                os.close(fd)

    # --- transactions ----------------------------------------------------------------------
    @contextmanager
    def _txn(self, durable: bool) -> Iterator[sqlite3.Connection]:
        """One write transaction; ``durable`` commits with synchronous=FULL, else NORMAL.

        WAL stays consistent either way; NORMAL only risks losing this commit on power loss,
        and a later FULL commit makes it durable too (the WAL is synced as a whole).
        """
        conn = self._conn
        if durable != self._sync_full:
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._sync_full = durable
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            if _is_corruption(err):
                log.error("outbox corrupt path=%s while=%s error=%s", self.path, doing, err)
                raise OutboxCorrupt(
                    f"outbox {self.path} is corrupt ({doing}: {err}); close it and open it "
                    "again to move it aside and start a fresh one"
                ) from err
            raise OutboxError(self._describe(err, doing)) from err

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")

    def _used_bytes(self) -> int:
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free) * self._page_size

    # --- adding ----------------------------------------------------------------------------
    @staticmethod
    def _encode(new: NewReading) -> _Record | str:
        """The stored record of ``new`` in two parts, before and after its seq (given only
        when it is committed), or why it is not a valid reading.

        The record is the reading's wire form as ``orjson`` writes it, keys in the contract's
        order: ``head + b"%d" % seq + tail`` is what :func:`contract.wire.encode_wire_batch`
        writes for this reading.
        """
        clock = new.clock.value if isinstance(new.clock, ClockQuality) else new.clock
        # What the scheduler hands in passes the plain checks (no pydantic model per
        # reading, the committer's largest cost); anything else goes through pydantic, which
        # decides and says why. Same record either way.
        wire = plain_reading(new.sensor, new.field, new.kind, new.ts, clock, 0, new.values, new.cal)
        if wire is None:
            try:
                wire = wire_form(
                    Reading(
                        sensor=new.sensor,
                        field=new.field,
                        kind=new.kind,
                        ts=new.ts,
                        clock=new.clock,
                        seq=0,
                        values=new.values,
                        cal=new.cal,
                    )
                )
            except ValidationError as err:
                return _first_problem(err)
        head = orjson.dumps(
            {
                "sensor": wire["sensor"],
                "field": wire["field"],
                "kind": wire["kind"],
                "ts": wire["ts"],
                "clock": wire["clock"],
            }
        )
        tail = orjson.dumps({"values": wire["values"], "cal": wire["cal"]})
        return head[:-1] + b',"seq":', b"," + tail[1:]

    def add(self, readings: Sequence[NewReading]) -> list[int]:
        """Commit a group of readings in one durable transaction; return their seq.

        Seq are consecutive in the order given and never go backwards or repeat, across
        restarts and across a corrupt database moved aside. The result holds, per reading,
        its seq, or :data:`DROPPED` (-1) when the outbox is full, or :data:`REJECTED` (-2)
        when the reading is not a valid :class:`contract.wire.Reading` (logged, counted in
        ``rejected_total``, never stored).

        Full means: the pages in use would pass ``max_bytes`` (estimated per group, so it can
        be passed by a few pages), or the disk is full. Dropped readings get no seq; each
        sensor gets one open ``outbox_full`` gap from its first to its last dropped ``ts``,
        extended while drops go on. Once the size falls below 0.9 x ``max_bytes`` (after
        acks), or the disk accepts writes again, the open gaps are closed and are sent like
        any other gap. Returns only once the group is on disk. Raises :class:`OutboxError`
        (or :class:`OutboxCorrupt`) on other storage failures; nothing of the group is then
        stored.
        """
        if not readings:
            return []
        # Validation is the costly part; it runs before taking the lock.
        encoded = [self._encode(r) for r in readings]
        recs: list[_Record | None] = []
        with self._lock:
            self._check_open()
            for i, (new, rec) in enumerate(zip(readings, encoded, strict=True)):
                if isinstance(rec, str):
                    self.rejected_total += 1
                    log.warning(
                        "outbox rejected reading index=%d sensor=%.70r reason=%s",
                        i,
                        new.sensor,
                        rec,
                    )
                    recs.append(None)
                else:
                    recs.append(rec)
            return self._add_locked(readings, recs)

    def _add_locked(self, readings: Sequence[NewReading], recs: list[_Record | None]) -> list[int]:
        with self._translate("add"):
            used = self._used_bytes()
        full = self._full
        # Space came back: this commit closes the open gaps. If it fails (disk still full),
        # the close is rolled back and the gaps keep growing rather than split every group.
        release = full and used < self.max_bytes * LOW_WATER
        if release:
            full = False
        admitted: list[tuple[int, _Record]] = []
        dropped: list[NewReading] = []
        estimate = used
        for i, rec in enumerate(recs):
            if rec is None:
                continue
            if not full:
                estimate += len(rec[0]) + len(rec[1]) + ROW_OVERHEAD_WITH_SEQ
                if estimate > self.max_bytes:
                    full = True
                    self._full_cause = f"outbox reached its cap of {self.max_bytes} bytes"
            if full:
                dropped.append(readings[i])
            else:
                admitted.append((i, rec))

        first = self._next_seq
        count = len(admitted)
        rows = _rows_of(
            [head + b"%d" % (first + n) + tail for n, (_, (head, tail)) in enumerate(admitted)],
            first,
            self.row_readings,
        )
        if rows:
            # Before the commit: a crash in between burns these seq and never reuses them.
            self._write_sidecar(first + count)
        try:
            with self._translate("add"):
                try:
                    with self._txn(durable=True) as conn:
                        new_gaps = self._store_drops(conn, self._drops)
                        if release:
                            self._close_open_gaps(conn)
                        if rows and self._upgrade_from is not None:
                            # With its first new rows, in the same transaction.
                            conn.execute(
                                "ALTER TABLE readings ADD COLUMN n INTEGER NOT NULL DEFAULT 1"
                            )
                            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                        conn.executemany(
                            "INSERT INTO readings (seq, rec, crc, n) VALUES (?, ?, ?, ?)", rows
                        )
                        if rows:
                            conn.execute(
                                "UPDATE meta SET value = ? WHERE key = 'next_seq'",
                                (first + count,),
                            )
                        new_gaps += self._store_drops(conn, self._drops_of(dropped))
                        new_gaps += self._store_unsaved_gaps(conn)
                        self._store_alive(conn)
                except sqlite3.Error as err:
                    if not _is_full(err):
                        raise
                    return self._add_disk_full(readings, recs, err)
        except OutboxError:
            log.error("outbox commit failed; readings not stored count=%d", count)
            raise
        if release:
            log.warning("outbox has room again; outbox_full gaps closed path=%s", self.path)
        if rows and self._upgrade_from is not None:
            log.info(
                "outbox upgraded path=%s from_version=%d to_version=%d",
                self.path,
                self._upgrade_from,
                SCHEMA_VERSION,
            )
            self._upgrade_from = None
            self._n = "n"
        self._next_seq = first + count
        self._n_readings += count
        self._n_gaps += new_gaps
        self._drops = {}
        self._unsaved_gaps.clear()
        self._full = full
        if dropped:
            self.dropped_total += len(dropped)
            log.warning(
                "outbox full, readings dropped count=%d cause=%s path=%s",
                len(dropped),
                self._full_cause,
                self.path,
            )
        out = [REJECTED if rec is None else DROPPED for rec in recs]
        for n, (i, _) in enumerate(admitted):
            out[i] = first + n
        return out

    def _add_disk_full(
        self, readings: Sequence[NewReading], recs: list[_Record | None], err: sqlite3.Error
    ) -> list[int]:
        """The file system refused the group: record it as dropped, as if the cap was hit."""
        self._full_cause = f"disk full ({err})"
        self._full = True
        valid = [r for r, rec in zip(readings, recs, strict=True) if rec is not None]
        self._drops = self._drops_of(valid, into=self._drops)
        self.dropped_total += len(valid)
        log.error(
            "outbox disk full, readings dropped count=%d path=%s error=%s",
            len(valid),
            self.path,
            err,
        )
        # The gaps are smaller than the readings: try to get them on disk at least. If even
        # that fails they wait in memory for the next commit.
        try:
            with self._txn(durable=True) as conn:
                new_gaps = self._store_drops(conn, self._drops)
                new_gaps += self._store_unsaved_gaps(conn)
                # A downtime gap stored here without its mark would be declared again.
                self._store_alive(conn)
        except sqlite3.Error as again:
            log.error("outbox gap kept in memory until the disk has room error=%s", again)
        else:
            self._n_gaps += new_gaps
            self._drops = {}
            self._unsaved_gaps.clear()
        return [REJECTED if rec is None else DROPPED for rec in recs]

    @staticmethod
    def _drops_of(
        readings: Sequence[NewReading], into: dict[str, _Drops] | None = None
    ) -> dict[str, _Drops]:
        drops = dict(into or {})
        for r in readings:
            d = drops.get(r.sensor)
            if d is None:
                drops[r.sensor] = d = _Drops(start=r.ts, end=r.ts)
            d.extend(r.ts)
        return drops

    def _gap_record(self, gap: Gap) -> tuple[bytes, int]:
        rec = orjson.dumps(gap.model_dump(mode="json"))
        return rec, zlib.crc32(rec)

    def _store_drops(self, conn: sqlite3.Connection, drops: dict[str, _Drops]) -> int:
        """Create or extend each sensor's open outbox_full gap; return rows created."""
        created = 0
        for sensor, d in drops.items():
            row = conn.execute(
                "SELECT id, dropped, rec, crc FROM gaps WHERE open_sensor = ?", (sensor,)
            ).fetchone()
            start, end, count = d.start, d.end, d.count
            if row is not None:
                old = self._decode_gap(row[2], row[3])
                if old is None:
                    log.error("outbox open gap record corrupt sensor=%s id=%d", sensor, row[0])
                else:
                    start, end = min(start, old.start), max(end, old.end)
                count += int(row[1])
            gap = Gap(
                sensor=sensor,
                start=start,
                end=end,
                reason="outbox_full",
                detail=f"{self._full_cause}; {count} readings dropped"[:500],
            )
            rec, crc = self._gap_record(gap)
            if row is None:
                conn.execute(
                    "INSERT INTO gaps (open_sensor, dropped, rec, crc) VALUES (?, ?, ?, ?)",
                    (sensor, count, rec, crc),
                )
                created += 1
            else:
                conn.execute(
                    "UPDATE gaps SET dropped = ?, rec = ?, crc = ? WHERE id = ?",
                    (count, rec, crc, row[0]),
                )
        return created

    @staticmethod
    def _close_open_gaps(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE gaps SET open_sensor = NULL WHERE open_sensor IS NOT NULL")

    def _store_unsaved_gaps(self, conn: sqlite3.Connection) -> int:
        for gap in self._unsaved_gaps:
            rec, crc = self._gap_record(gap)
            conn.execute("INSERT INTO gaps (rec, crc) VALUES (?, ?)", (rec, crc))
        return len(self._unsaved_gaps)

    def _release_space(self, conn: sqlite3.Connection) -> int | None:
        """Close the open gaps if the size fell below the low-water mark (inside a txn).

        Returns None if still full, else the gap rows created for drops kept in memory; the
        caller applies that to its state once the transaction commits.
        """
        if self._used_bytes() >= self.max_bytes * LOW_WATER:
            return None
        created = self._store_drops(conn, self._drops)
        self._close_open_gaps(conn)
        return created

    def _space_released(self, created: int) -> None:
        self._n_gaps += created
        self._drops = {}
        self._full = False
        log.warning("outbox has room again; outbox_full gaps closed path=%s", self.path)

    # --- when the agent was last alive --------------------------------------------------------
    def note_alive(self, mark: AliveMark) -> None:
        """Keep ``mark`` for the next commit of readings or gaps (see agent/downtime.py)."""
        with self._lock:
            self._alive = mark

    def mark_alive(self, mark: AliveMark) -> None:
        """Commit ``mark`` on its own (when there is nothing else to commit, and on stop).

        Raises :class:`OutboxError` if it cannot be stored.
        """
        with self._lock:
            self._check_open()
            self._alive = mark
            with self._translate("mark alive"), self._txn(durable=True) as conn:
                self._store_alive(conn)

    def _store_alive(self, conn: sqlite3.Connection) -> None:
        if self._alive is not None:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('alive', ?)",
                (self._alive.encode(),),
            )

    def add_gap(self, gap: Gap) -> None:
        """Commit one gap durably (e.g. ``sensor_silent`` from the scheduler): :meth:`add_gaps`."""
        self.add_gaps([gap])

    def add_gaps(self, gaps: Sequence[Gap]) -> None:
        """Commit ``gaps`` durably, all in one transaction (the pieces of a long downtime:
        a power cut in between must not keep some and lose the rest).

        If the disk is full the gaps are kept in memory and written with the next commit
        that succeeds (and logged). Raises :class:`OutboxError` on other storage failures;
        none of them is then stored.
        """
        if not gaps:
            return
        with self._lock:
            self._check_open()
            self._unsaved_gaps.extend(gaps)
            with self._translate("add_gap"):
                try:
                    with self._txn(durable=True) as conn:
                        new_gaps = self._store_drops(conn, self._drops)
                        new_gaps += self._store_unsaved_gaps(conn)
                        self._store_alive(conn)
                except sqlite3.Error as err:
                    if not _is_full(err):
                        del self._unsaved_gaps[-len(gaps) :]
                        raise
                    log.error(
                        "outbox disk full, %d gap(s) kept in memory sensor=%s reason=%s error=%s",
                        len(gaps),
                        gaps[0].sensor,
                        gaps[0].reason,
                        err,
                    )
                    return
            self._n_gaps += new_gaps
            self._drops = {}
            self._unsaved_gaps.clear()

    # --- batches ---------------------------------------------------------------------------
    @staticmethod
    def _decode_readings(
        rows: Sequence[Any], bound: int
    ) -> tuple[list[WireReading | None], dict[int, int]]:
        """Each reading's wire form, or None where its row fails its checksum or the reading
        fails the contract; and the seq of each reading that failed, by its index.

        ``rows`` are (seq, rec, crc, n) in seq order, and ``bound`` is the seq of the row
        after the last (or the next seq to assign): a row that fails its checksum counts as
        ``n`` readings only where that does not reach the next row (:func:`_reading_rows`).
        Each record is checked against the contract again: a
        record that passes its CRC but not the contract would make ingest dead-letter the
        whole batch. (:meth:`Outbox.next_raw_batch` skips this for rows that pass their CRC
        and hold this version's object records, checked when they were added; it comes here
        for anything else, e.g. a version 1 file's array records.)

        A batch is checked a column at a time first (:func:`_plain_wire_readings`), which
        costs less per reading than one row at a time (and than decoding each row as the
        cursor hands it over). A batch it is not sure of (a row that fails its CRC, does not
        parse, or is not plainly valid) is decided row by row (:func:`_decode_rows`) as a
        whole, with the same outcome either way.
        """
        per_reading = _reading_rows(rows, bound)
        readings = _plain_wire_readings(per_reading)
        if readings is not None:
            return readings, {}
        return _decode_rows(per_reading)

    @staticmethod
    def _decode_gap(rec: bytes, crc: int) -> Gap | None:
        if zlib.crc32(rec) != crc:
            return None
        try:
            return Gap.model_validate_json(rec)
        except ValueError:
            return None

    def _load(
        self,
        batch: _Batch,
        decoded: list[WireReading | None],
        bad: dict[int, int],
        gap_rows: list[Any],
        rows: Sequence[Any],
    ) -> tuple[list[WireReading], list[Gap]]:
        """The readings and gaps of ``batch`` from its reading rows ``rows``, decoded
        (:meth:`_decode_readings`), and its gap rows; corrupt ones are replaced by
        storage_corrupt gaps in it."""
        runs: list[_BadRun] = []
        if not bad:  # every row intact: the usual case
            readings = cast(list[WireReading], decoded)
        else:
            readings = []
            run: _BadRun | None = None
            prev_ts: int | None = None
            for i, reading in enumerate(decoded):
                if reading is None:
                    seq = bad[i]
                    if run is not None and run.first + run.count == seq:
                        run.count += 1
                    else:
                        run = _BadRun(first=seq, before=prev_ts)
                        runs.append(run)
                    continue
                if run is not None:
                    run.after = reading["ts"]
                    run = None
                prev_ts = reading["ts"]
                readings.append(reading)
        gaps: list[tuple[int, Gap]] = []
        bad_gap_ids: list[int] = []
        for gap_id, rec, crc in gap_rows:
            gap = self._decode_gap(rec, crc)
            if gap is None:
                bad_gap_ids.append(gap_id)
            else:
                gaps.append((gap_id, gap))
        if runs or bad_gap_ids:
            gaps += self._replace_corrupt(batch, runs, bad_gap_ids, rows, set(bad.values()))
        return readings, [g for _, g in gaps]

    def _replace_corrupt(
        self,
        batch: _Batch,
        runs: list["_BadRun"],
        bad_gap_ids: list[int],
        rows: Sequence[Any],
        bad_seqs: set[int],
    ) -> list[tuple[int, Gap]]:
        """Put a storage_corrupt gap in ``batch`` for each run of bad readings and each bad
        gap row, and take those out of the outbox in the same commit, so that a resend or the
        next process never declares them again.

        A reading row (of ``rows``, the batch's) that fails its CRC, or whose readings are
        all bad, is deleted. An intact row with some readings the contract refuses is
        replaced by rows of its other readings (consecutive seq each), which stay stored
        until the batch's receipt. ``_n_readings`` stays the stored rows' total of n.

        A corrupt reading's own sensor and time cannot be trusted, so its gap names no sensor
        and spans the timestamps of the intact readings on either side of it in seq order.
        """
        now = time.time_ns()
        replacements: list[Gap] = []
        for run in runs:
            around = [t for t in (run.before, run.after) if t is not None] or [now]
            last = run.first + run.count - 1
            replacements.append(
                Gap(
                    start=min(around),
                    end=max(around),
                    reason="storage_corrupt",
                    detail=(
                        f"outbox record(s) seq {run.first}..{last} failed their checksum "
                        "(storage corruption); sensor unknown, time bounded by the "
                        "neighbouring readings"
                    ),
                    seq=run.first,
                    count=run.count,
                )
            )
        for gap_id in bad_gap_ids:
            replacements.append(
                Gap(
                    start=now,
                    end=now,
                    reason="storage_corrupt",
                    detail=(
                        f"outbox gap record {gap_id} failed its checksum (storage corruption); "
                        "its sensor and time range are unknown"
                    ),
                )
            )
        out: list[tuple[int, Gap]] = []
        doomed: list[int] = []
        kept: list[tuple[int, bytes, int, int]] = []
        for row in rows:
            first = row[0]
            # (A row that fails its CRC always has its first seq among the bad ones.)
            if not any(s in bad_seqs for s in range(first, first + _count_of(row))):
                continue
            records = _row_records(row)
            if records is None:
                doomed.append(first)
                continue
            hit = [k for k in range(len(records)) if first + k in bad_seqs]
            if not hit:
                continue
            doomed.append(first)
            if len(hit) < len(records):
                kept += _rows_without(records, first, set(hit))
        n_before = self._n_readings
        with self._txn(durable=True) as conn:
            for key in doomed:
                n_before -= int(
                    conn.execute(
                        f"SELECT total({self._n}) FROM readings WHERE seq = ?", (key,)
                    ).fetchone()[0]
                )
                conn.execute("DELETE FROM readings WHERE seq = ?", (key,))
            # Only rows of several readings are split, and only a version 3 file has them.
            conn.executemany("INSERT INTO readings (seq, rec, crc, n) VALUES (?, ?, ?, ?)", kept)
            for gap_id in bad_gap_ids:
                conn.execute("DELETE FROM gaps WHERE id = ?", (gap_id,))
            for gap in replacements:
                rec, crc = self._gap_record(gap)
                new_id = conn.execute(
                    "INSERT INTO gaps (rec, crc) VALUES (?, ?)", (rec, crc)
                ).lastrowid
                if new_id is None:
                    raise OutboxError(f"outbox {self.path}: inserting a gap returned no row id")
                out.append((new_id, gap))
        self._n_readings = n_before + sum(row[3] for row in kept)
        self._n_gaps += len(replacements) - len(bad_gap_ids)
        self.corrupt_rows_total += sum(r.count for r in runs) + len(bad_gap_ids)
        batch.gap_ids = [i for i in batch.gap_ids if i not in bad_gap_ids] + [i for i, _ in out]
        for run in runs:
            log.error(
                "outbox record corrupt, replaced by a gap seq=%d count=%d path=%s",
                run.first,
                run.count,
                self.path,
            )
        for gap_id in bad_gap_ids:
            log.error("outbox gap record corrupt, replaced id=%d path=%s", gap_id, self.path)
        return out

    def _pending_gap_rows(self, max_gaps: int) -> list[Any]:
        out: list[Any] = []
        if max_gaps <= 0:
            return out
        cur = self._conn.execute(
            "SELECT id, rec, crc FROM gaps WHERE open_sensor IS NULL ORDER BY id"
        )
        try:
            for row in cur:
                if row[0] not in self._assigned_gaps:
                    out.append(row)
                    if len(out) >= max_gaps:
                        break
        finally:
            cur.close()
        return out

    def next_batch(
        self, batch_id: str, max_readings: int, max_gaps: int = 100
    ) -> tuple[list[Reading], list[Gap]]:
        """:meth:`next_wire_batch` with the readings as :class:`contract.wire.Reading`."""
        readings, gaps = self.next_wire_batch(batch_id, max_readings, max_gaps)
        return [reading_from_wire(r) for r in readings], gaps

    def next_wire_batch(
        self, batch_id: str, max_readings: int, max_gaps: int = 100
    ) -> tuple[list[WireReading], list[Gap]]:
        """Assign the oldest unassigned readings (by seq) and closed gaps to ``batch_id``.

        Returns them, readings in their wire form (``contract.wire.WireReading``, ready for
        ``encode_wire_batch``) in seq order, or ``([], [])`` (and no batch) when nothing is
        pending. Readings of a stored row that fails its checksum, and readings that fail
        the contract, are not returned as data: they are taken out of the outbox and a
        ``storage_corrupt`` gap (with their seq and count) takes their place in this batch
        (see :meth:`_replace_corrupt`). Assignment lives in memory only: a new process sends
        everything unreceipted again. ``batch_id`` must be new (``ValueError`` otherwise)
        and match the batch envelope's ``^[A-Za-z0-9_-]{1,64}$``; ``max_readings`` is at most
        5000 and ``max_gaps`` at most 1000 (``ValueError``).
        """
        _, readings, _, gaps = self._take(batch_id, max_readings, max_gaps, raw=False)
        return cast(list[WireReading], readings), gaps

    def next_raw_batch(
        self, batch_id: str, max_readings: int, max_gaps: int = 100
    ) -> tuple[int, bytes, list[Gap]]:
        """:meth:`next_wire_batch` with the readings as one JSON array, ready to go into the
        batch as it is (``orjson.Fragment``): ``(how many readings, the array, the gaps)``.

        When every row passes its CRC and holds a record this version writes (a wire form,
        checked against the contract when it was added), the array is the records joined:
        no record is parsed. Otherwise the rows are decided as :meth:`next_wire_batch` does
        (records of a version 1 file checked against the contract, corrupt rows replaced by
        gaps) and the array is their wire forms encoded. Either way the array holds the same
        bytes for the same readings.
        """
        count, readings, raw, gaps = self._take(batch_id, max_readings, max_gaps, raw=True)
        if raw is None:
            return len(readings), orjson.dumps(readings), gaps
        return count, raw, gaps

    def _key_after(self, seq: int) -> int | None:
        """The seq of the first row after ``seq`` (the key of a row is its first seq)."""
        row = self._conn.execute(
            "SELECT seq FROM readings WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)
        ).fetchone()
        return None if row is None else int(row[0])

    def _pending_rows(self, max_readings: int) -> list[Any]:
        """The oldest unassigned rows (seq, rec, crc, n), whole, holding at most
        ``max_readings`` readings, or one row if the first alone holds more."""
        if max_readings <= 0:
            return []
        first = self._key_after(self._cursor)
        if first is None:
            return []
        # Seq are consecutive from row to row, so the rows that can fit start in this range
        # (after a hole in seq the batch is just smaller).
        rows = self._conn.execute(
            f"SELECT seq, rec, crc, {self._n} FROM readings WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (first, first + max_readings - 1),
        ).fetchall()
        # A corrupt row's n may be anything: counted as at least one, decided by the decoder.
        total = sum(map(_count_of, rows))
        while total > max_readings and len(rows) > 1:
            total -= _count_of(rows.pop())
        return rows

    def _take(
        self, batch_id: str, max_readings: int, max_gaps: int, raw: bool
    ) -> tuple[int, list[Any], bytes | None, list[Gap]]:
        """Assign a new batch (see :meth:`next_wire_batch`): how many readings it holds, its
        readings, their records joined into a JSON array if ``raw`` and every row allows it
        (then the readings are the rows, not parsed), and its gaps."""
        _check_batch_id(batch_id)
        if not 0 <= max_readings <= MAX_READINGS_PER_BATCH:
            raise ValueError(f"max_readings {max_readings} must be 0..{MAX_READINGS_PER_BATCH}")
        if not 0 <= max_gaps <= 1000:
            raise ValueError(f"max_gaps {max_gaps} must be 0..1000")
        with self._lock:
            self._check_open()
            if batch_id in self._batches:
                raise ValueError(f"batch id {batch_id!r} is already in flight; use a new id")
            with self._translate("next_batch"):
                rows = _within_byte_budget(self._pending_rows(max_readings))
                joined = _joined_records(rows) if raw else None
                gap_rows = self._pending_gap_rows(max_gaps)
                if not rows and not gap_rows:
                    return 0, [], None, []
                decoded: list[WireReading | None] = []
                bad: dict[int, int] = {}
                first_seq = last_seq = None
                count = 0
                if joined is not None:  # every row intact: none to decode, none bad
                    if rows:
                        count = sum(map(_N, rows))
                        first_seq, last_seq = rows[0][0], rows[-1][0] + rows[-1][3] - 1
                else:
                    after = self._key_after(rows[-1][0]) if rows else None
                    bound = self._next_seq if after is None else after
                    decoded, bad = self._decode_readings(rows, bound)
                    if decoded:
                        first_seq = _seq_at(decoded, bad, 0)
                        last_seq = _seq_at(decoded, bad, len(decoded) - 1)
                batch = _Batch(
                    first_seq=first_seq,
                    last_seq=last_seq,
                    gap_ids=[row[0] for row in gap_rows],
                    assigned=time.monotonic(),
                )
                readings, gaps = self._load(batch, decoded, bad, gap_rows, rows)
            self._batches[batch_id] = batch
            self._assigned_gaps.update(batch.gap_ids)
            if batch.last_seq is not None:
                self._cursor = batch.last_seq
            # Joined: the readings handed back are the rows (only their count is used).
            if joined is not None:
                return count, rows, joined, gaps
            return len(readings), readings, None, gaps

    def batch_contents(self, batch_id: str) -> tuple[list[Reading], list[Gap]]:
        """:meth:`wire_batch_contents` with the readings as :class:`contract.wire.Reading`."""
        readings, gaps = self.wire_batch_contents(batch_id)
        return [reading_from_wire(r) for r in readings], gaps

    def wire_batch_contents(self, batch_id: str) -> tuple[list[WireReading], list[Gap]]:
        """What ``batch_id`` holds now, to publish it again; ``([], [])`` if unknown or acked.

        Readings in their wire form, as :meth:`next_wire_batch` returns them. Rows are
        checked again; one that went corrupt since is replaced as in next_batch.
        """
        with self._lock:
            self._check_open()
            batch = self._batches.get(batch_id)
            if batch is None:
                return [], []
            with self._translate("batch_contents"):
                decoded: list[WireReading | None] = []
                bad: dict[int, int] = {}
                rows: list[Any] = []
                if batch.first_seq is not None and batch.last_seq is not None:
                    rows = self._conn.execute(
                        f"SELECT seq, rec, crc, {self._n} FROM readings "
                        "WHERE seq BETWEEN ? AND ? ORDER BY seq",
                        (batch.first_seq, batch.last_seq),
                    ).fetchall()
                    decoded, bad = self._decode_readings(rows, batch.last_seq + 1)
                gap_rows: list[Any] = []
                if batch.gap_ids:
                    marks = ",".join("?" * len(batch.gap_ids))
                    gap_rows = self._conn.execute(
                        f"SELECT id, rec, crc FROM gaps WHERE id IN ({marks}) ORDER BY id",
                        batch.gap_ids,
                    ).fetchall()
                before = set(batch.gap_ids)
                readings, gaps = self._load(batch, decoded, bad, gap_rows, rows)
            self._assigned_gaps.difference_update(before - set(batch.gap_ids))
            self._assigned_gaps.update(batch.gap_ids)
            return readings, gaps

    def mark_sent(self, batch_id: str, now: float | None = None) -> None:
        """Record that ``batch_id`` was published at ``now`` (``time.monotonic()`` seconds).

        Counts an attempt. Unknown or already acked ids are ignored (a fast receipt can beat
        the call).
        """
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is not None:
                batch.last_sent = time.monotonic() if now is None else now
                batch.attempts += 1

    def attempts(self, batch_id: str) -> int:
        """How often ``batch_id`` was marked sent; 0 if unknown."""
        with self._lock:
            batch = self._batches.get(batch_id)
            return 0 if batch is None else batch.attempts

    def overdue_batches(self, older_than_s: float, now: float | None = None) -> list[str]:
        """Batches in flight last sent (or, never sent, assigned) more than ``older_than_s`` ago.

        Times are ``time.monotonic()`` seconds (``now`` defaults to it), immune to the wall
        clock steps of a gateway without a battery clock. Oldest assignment first.
        """
        with self._lock:
            t = time.monotonic() if now is None else now
            return [
                name
                for name, b in self._batches.items()
                if t - (b.assigned if b.last_sent is None else b.last_sent) > older_than_s
            ]

    def has_unassigned_readings(self) -> bool:
        """Whether readings wait that no batch in flight holds: after a batch shorter than
        asked for, False means it took every one there was, True that the byte budget
        (:data:`BATCH_READINGS_BYTES`) cut it short."""
        with self._lock:
            self._check_open()
            with self._translate("has_unassigned_readings"):
                return self._key_after(self._cursor) is not None

    def inflight_batches(self) -> int:
        """Batches assigned by next_batch() and not acked."""
        with self._lock:
            return len(self._batches)

    def ack(self, batch_id: str) -> int:
        """Delete exactly the readings and gaps of ``batch_id``; return how many readings and
        gap rows went.

        Unknown (or already acked) ids return 0. Frees space: if the outbox was full and is
        now below 0.9 x ``max_bytes``, the open outbox_full gaps are closed in the same
        transaction. Raises :class:`OutboxError` on storage failure; the batch then stays
        in flight and its receipt can be applied again.
        """
        with self._lock:
            self._check_open()
            batch = self._batches.get(batch_id)
            if batch is None:
                return 0
            n_readings = n_gaps = 0
            released: int | None = None
            with self._translate("ack"), self._txn(durable=self.sync_acks) as conn:
                if batch.first_seq is not None:
                    span = (batch.first_seq, batch.last_seq)
                    n_readings = int(
                        conn.execute(
                            f"SELECT total({self._n}) FROM readings WHERE seq BETWEEN ? AND ?",
                            span,
                        ).fetchone()[0]
                    )
                    conn.execute("DELETE FROM readings WHERE seq BETWEEN ? AND ?", span)
                if batch.gap_ids:
                    marks = ",".join("?" * len(batch.gap_ids))
                    n_gaps = conn.execute(
                        f"DELETE FROM gaps WHERE id IN ({marks})", batch.gap_ids
                    ).rowcount
                if self._full:
                    released = self._release_space(conn)
            del self._batches[batch_id]
            self._assigned_gaps.difference_update(batch.gap_ids)
            self._n_readings -= n_readings
            self._n_gaps -= n_gaps
            if released is not None:
                self._space_released(released)
            self._maybe_vacuum()
            return n_readings + n_gaps

    def _maybe_vacuum(self) -> None:
        now = time.monotonic()
        if now - self._last_vacuum < VACUUM_EVERY_S:
            return
        try:
            free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
            if free * self._page_size < VACUUM_MIN_FREE:
                return
            self._last_vacuum = now
            # Each step of this pragma frees one page, and execute() steps a statement without
            # result columns only once (measured: 1 page of 113); executescript() steps it to
            # the end.
            self._conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
        except sqlite3.Error as err:
            log.warning("outbox incremental vacuum failed path=%s error=%s", self.path, err)

    # --- inspection and lifecycle ----------------------------------------------------------
    def depth(self) -> OutboxDepth:
        """Counts and size now (cheap: counters kept in memory, two pragmas, one row read)."""
        with self._lock:
            self._check_open()
            with self._translate("depth"):
                used = self._used_bytes()
                row = self._conn.execute(
                    f"SELECT seq, rec, crc, {self._n} FROM readings ORDER BY seq LIMIT 1"
                ).fetchone()
            oldest = None
            if row is not None:
                reading = self._decode_readings([row], row[0] + _trusted_count(row))[0][0]
                oldest = None if reading is None else reading["ts"]
            return OutboxDepth(
                readings=self._n_readings,
                gaps=self._n_gaps + len(self._unsaved_gaps),
                oldest_ts=oldest,
                bytes=used,
                inflight_batches=len(self._batches),
            )

    def integrity_ok(self) -> bool:
        """True if ``PRAGMA integrity_check`` says ok (reads the whole file: seconds when big)."""
        with self._lock:
            self._check_open()
            try:
                rows = self._conn.execute("PRAGMA integrity_check").fetchall()
            except sqlite3.DatabaseError as err:
                log.error("outbox integrity check failed path=%s error=%s", self.path, err)
                return False
            ok = rows == [("ok",)]
            if not ok:
                log.error("outbox integrity check path=%s problems=%.500s", self.path, rows)
            return ok

    def close(self) -> None:
        """Checkpoint the WAL into the database and close; safe to call twice.

        Batches in flight are forgotten (their rows are sent again by the next process).
        Errors while checkpointing are logged, and the file is closed anyway.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._drops or self._unsaved_gaps:
                    with self._txn(durable=True) as conn:
                        self._store_drops(conn, self._drops)
                        self._store_unsaved_gaps(conn)
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as err:
                log.error("outbox close: checkpoint failed path=%s error=%s", self.path, err)
            finally:
                self._conn.close()
                self._close_sidecar()
                self._batches.clear()
                self._assigned_gaps.clear()


@dataclass(slots=True)
class _BadRun:
    """Consecutive seq whose rows failed their checksum, and the ts of intact neighbours."""

    first: int
    before: int | None
    count: int = 1
    after: int | None = None


def _seq_at(decoded: list[WireReading | None], bad: dict[int, int], i: int) -> int:
    """The seq of row ``i`` of a :meth:`Outbox._decode_readings` result."""
    reading = decoded[i]
    return bad[i] if reading is None else int(reading["seq"])


_SEQ_BYTES = struct.Struct("<Q").pack
"""``seq.to_bytes(8, "little")`` for 0 <= seq < 2**64, as a function map() can call."""


def _intact_columns(rows: list[Any]) -> tuple[Sequence[Any], Sequence[Any]] | None:
    """The seqs and records of (non-empty) rows (seq, rec, crc) if every row passes its
    CRC, else None; all CRCs by one ``map`` and one list comparison.

    Raises ValueError unless every row has three parts, ``struct.error`` for a seq that is
    not an int in 0..2**64-1 (``to_bytes`` raises then), TypeError for a record that is not
    bytes: the callers leave such rows to :func:`_decode_rows`, which says what is wrong.
    """
    crc32 = zlib.crc32
    seqs, recs, crcs = zip(*rows, strict=True)
    if list(map(crc32, recs, map(crc32, map(_SEQ_BYTES, seqs)))) != list(crcs):
        return None
    return seqs, recs


_REC = itemgetter(1)


def _within_byte_budget(rows: list[Any]) -> list[Any]:
    """The first of ``rows`` (seq, rec, crc) whose records fit :data:`BATCH_READINGS_BYTES`,
    at least one; all of them in one C-level sum when they fit, as they do unless readings
    carry many values. A record that is not bytes (a corrupt row) counts as empty: the
    decoder replaces it by a gap."""
    budget = BATCH_READINGS_BYTES
    try:
        if sum(map(len, map(_REC, rows))) + _RECORD_OVERHEAD * len(rows) <= budget:
            return rows
    except TypeError:
        pass
    size = 0
    for i, row in enumerate(rows):
        rec = row[1]
        size += (len(rec) if isinstance(rec, bytes | str) else 0) + _RECORD_OVERHEAD
        if size > budget and i > 0:
            return rows[:i]
    return rows


def _joined_records(rows: list[Any]) -> bytes | None:
    """The records of rows (seq, rec, crc, n) as one JSON array if every row holds object
    records (what versions 2 and 3 write, checked when they were added) and passes its CRC,
    else None: then the rows are decoded and checked (:meth:`Outbox._decode_readings`).

    A row that passes its CRC is byte for byte what :meth:`Outbox.add` wrote, so its
    records are the wire forms of readings the contract accepted: no need to parse them.
    """
    if not rows:
        return b"[]"
    crc32 = zlib.crc32
    try:
        seqs, recs, crcs, counts = zip(*rows, strict=True)
        # The cheap test first: a version 1 file's array records go to the decoder without
        # their CRCs computed here as well.
        if not all(map(bytes.startswith, recs, repeat(_OBJECT_RECORD))):
            return None
        if list(map(crc32, recs, map(crc32, map(_row_prefix, seqs, counts)))) != list(crcs):
            return None
    except (TypeError, ValueError, IndexError, OverflowError, AttributeError):
        return None
    return b"[" + b",".join(recs) + b"]"


_N = itemgetter(3)
"""A row's count of readings (rows are seq, rec, crc, n)."""


def _count_of(row: Any) -> int:
    """How many readings a row (seq, rec, crc, n) is counted as while choosing a batch: its
    n, or 1 when n is not a positive int (a corrupt row, decided by the decoder)."""
    n = row[3]
    return n if type(n) is int and n >= 1 else 1


def _trusted_count(row: Any) -> int:
    """A row's n if the row passes its CRC, else 1."""
    seq, rec, crc, n = row
    try:
        if type(n) is int and n >= 1 and _row_crc(seq, n, rec) == crc:
            return n
    except (TypeError, OverflowError, AttributeError):
        pass
    return 1


def _rows_of(recs: list[bytes], first: int, most: int) -> list[tuple[int, bytes, int, int]]:
    """Rows (seq, rec, crc, n) for the records of consecutive seq from ``first``: at most
    ``most`` records and :data:`ROW_BYTES` bytes in a row, one record at least."""
    rows: list[tuple[int, bytes, int, int]] = []
    start = 0
    total = len(recs)
    while start < total:
        end = start + 1
        size = len(recs[start])
        limit = min(total, start + most)
        while end < limit:
            size += len(recs[end]) + 1
            if size > ROW_BYTES:
                break
            end += 1
        seq = first + start
        n = end - start
        rec = recs[start] if n == 1 else b",".join(recs[start:end])
        rows.append((seq, rec, _row_crc(seq, n, rec), n))
        start = end
    return rows


_NOT_A_CRC = -1
"""Stands for the CRC of a reading whose row failed its own: no CRC-32 is negative."""


def _row_records(row: Any) -> list[bytes] | None:
    """The records of a row (seq, rec, crc, n) that passes its CRC and holds n records,
    else None. A row of one reading is its record as stored (an object, or a version 1
    array); a row of several is parsed and each record written again as it was."""
    seq, rec, crc, n = row
    if type(n) is not int or not 1 <= n <= MAX_READINGS_PER_BATCH:
        return None
    # A seq SQLite cannot hold (it keys rows by 64-bit ints) raises, as in the decoders.
    prefix = _row_prefix(seq, n)
    try:
        if zlib.crc32(rec, zlib.crc32(prefix)) != crc:
            return None
    except TypeError:  # a record that is not bytes
        return None
    if n == 1:
        return [rec]
    try:
        parsed = orjson.loads(b"[" + rec + b"]")
    except orjson.JSONDecodeError:
        return None
    if type(parsed) is not list or len(parsed) != n:
        return None
    return [orjson.dumps(record) for record in parsed]


def _reading_rows(rows: Sequence[Any], bound: int) -> list[tuple[Any, Any, Any]]:
    """Rows (seq, rec, crc, n) as rows (seq, rec, crc) of one reading each, what the decoders
    check (:func:`_plain_wire_readings`, :func:`_decode_rows`).

    An intact row is split into its records (:func:`_row_records`), each with its own CRC.
    A row that fails its CRC (its n included) stands for every seq up to the next row
    (``bound`` after the last row; at most 5,000): they become readings that fail their
    CRC, so the decoder puts one storage_corrupt gap for the range, and nothing in it is
    left unaccounted for whatever its n says.
    """
    out: list[tuple[Any, Any, Any]] = []
    for i, row in enumerate(rows):
        seq = row[0]
        records = _row_records(row)
        if records is not None:
            if len(records) == 1:
                out.append((seq, records[0], row[2]))
            else:
                out.extend((seq + k, r, _reading_crc(seq + k, r)) for k, r in enumerate(records))
            continue
        after = rows[i + 1][0] if i + 1 < len(rows) else bound
        span = max(1, min(after - seq, MAX_READINGS_PER_BATCH))
        out.extend((seq + k, b"", _NOT_A_CRC) for k in range(span))
    return out


def _rows_without(
    records: list[bytes], first: int, dropped: set[int]
) -> list[tuple[int, bytes, int, int]]:
    """Rows (seq, rec, crc, n) of the records of seq ``first``... but those at the offsets
    in ``dropped``: one row per run of consecutive seq."""
    out: list[tuple[int, bytes, int, int]] = []
    run: list[bytes] = []
    start = first
    for k, rec in enumerate([*records, None]):
        if rec is None or k in dropped:
            if run:
                joined = b",".join(run)
                out.append((start, joined, _row_crc(start, len(run), joined), len(run)))
            run = []
            continue
        if not run:
            start = first + k
        run.append(rec)
    return out


_WIRE_KEYS = tuple(_READING_FIELDS)
_SENSORS, _FIELDS, _KINDS, _STAMPS, _CLOCKS, _SEQS, _VALUES, _CALS = map(
    itemgetter, _READING_FIELDS
)


def _plain_wire_readings(rows: list[Any]) -> list[WireReading | None] | None:
    """The wire forms of rows (seq, rec, crc) if every row passes its CRC and plainly
    passes the contract, else None: then :func:`_decode_rows` decides row by row.

    What :func:`_decode_rows` does, a column at a time in C: the CRCs of all rows by one
    ``map`` and one list comparison, each record parsed by ``map(orjson.loads, ...)``, and
    the fields checked by :func:`contract.wire.plain_reading_columns`. The wire dicts are
    those :func:`contract.wire.plain_reading` builds, keys in the same order. Records are
    all objects (version 2) or all arrays (version 1); a mix is left to the reference.
    """
    if not rows:
        return []
    try:
        intact = _intact_columns(rows)
        if intact is None:
            return None
        seqs, recs = intact
        records = list(map(orjson.loads, recs))
        kinds_of_record = set(map(type, records))
        if kinds_of_record == _DICT_ONLY:
            return _plain_object_records(seqs, records)
        if kinds_of_record != _LIST_ONLY:
            return None
        # ValueError unless every record is seven items.
        sensors, fields, kinds, stamps, clocks, values, cals = zip(*records, strict=True)
    except (TypeError, ValueError, struct.error):  # orjson.JSONDecodeError is a ValueError
        return None
    # This checks seq too (an int, exactly, in 0..2**63-1).
    if not plain_reading_columns(sensors, fields, kinds, stamps, clocks, seqs, values, cals):
        return None
    return [
        {
            "sensor": sensor,
            "field": field_,
            "kind": kind,
            "ts": ts,
            "clock": clock,
            "seq": seq,
            "values": values_,
            "cal": cal,
        }
        for sensor, field_, kind, ts, clock, seq, values_, cal in zip(
            sensors, fields, kinds, stamps, clocks, seqs, values, cals, strict=True
        )
    ]


_DICT_ONLY = frozenset({dict})
_LIST_ONLY = frozenset({list})


def _plain_object_records(
    seqs: Sequence[Any], records: list[dict[str, Any]]
) -> list[WireReading | None] | None:
    """Object records (version 2) of rows with these seqs, if each has exactly the wire
    keys in order, its row's seq, and plainly passes the contract; else None."""
    if set(map(tuple, records)) != {_WIRE_KEYS}:
        return None
    stored_seqs = list(map(_SEQS, records))
    if stored_seqs != list(seqs):
        return None
    if not plain_reading_columns(
        list(map(_SENSORS, records)),
        list(map(_FIELDS, records)),
        list(map(_KINDS, records)),
        list(map(_STAMPS, records)),
        list(map(_CLOCKS, records)),
        stored_seqs,
        list(map(_VALUES, records)),
        list(map(_CALS, records)),
    ):
        return None
    return cast(list[WireReading | None], records)


def _decode_rows(rows: Iterable[Any]) -> tuple[list[WireReading | None], dict[int, int]]:
    """:meth:`Outbox._decode_readings` one row at a time: the reference, and what decides
    every batch that :func:`_plain_wire_readings` is not sure of.

    Records as this agent writes them pass contract.wire.plain_reading (no pydantic, the
    agent's largest cost per reading before); pydantic decides whatever that leaves open,
    with the same outcome.
    """
    out: list[WireReading | None] = []
    bad: dict[int, int] = {}
    append = out.append
    crc32 = zlib.crc32
    loads = orjson.loads
    plain = plain_reading
    for seq, rec, crc in rows:
        if crc32(rec, crc32(seq.to_bytes(8, "little"))) != crc:
            bad[len(out)] = seq
            append(None)
            continue
        try:
            record = loads(rec)
            if type(record) is dict:  # version 2: the wire form, seq included
                stored_seq = record.get("seq")
                if tuple(record) != _WIRE_KEYS or type(stored_seq) is not int or stored_seq != seq:
                    raise ValueError("not this row's wire form")
                sensor, field_, kind, ts, clock, _, values, cal = record.values()
            else:  # version 1: an array without the seq
                sensor, field_, kind, ts, clock, values, cal = record
        except (ValueError, TypeError):
            bad[len(out)] = seq
            append(None)
            continue
        wire = plain(sensor, field_, kind, ts, clock, seq, values, cal)
        if wire is None:
            try:
                wire = wire_form(
                    validated_reading(sensor, field_, kind, ts, clock, seq, values, cal)
                )
            except ValidationError:
                bad[len(out)] = seq
                wire = None
        append(wire)
    return out, bad


def _check_batch_id(batch_id: str) -> None:
    if (
        not isinstance(batch_id, str)
        or not 1 <= len(batch_id) <= 64
        or not all(c.isascii() and (c.isalnum() or c in "_-") for c in batch_id)
    ):
        raise ValueError(f"batch id {batch_id!r} must match ^[A-Za-z0-9_-]{{1,64}}$")
