"""Where refused messages are kept, with the reason, instead of being stored as data.

A plain SQLite file an operator can open: ``sqlite3 deadletter.sqlite 'select * from
dead_letters'``. Payloads are kept whole up to :data:`MAX_KEPT_BYTES`; a larger one keeps
its head, its length and its SHA-256.
"""

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

MAX_KEPT_BYTES = 1_048_576


class DeadLetters:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS dead_letters ("
            " id INTEGER PRIMARY KEY,"
            " received_ns INTEGER NOT NULL,"
            " topic TEXT NOT NULL,"
            " reason TEXT NOT NULL,"
            " size INTEGER NOT NULL,"
            " sha256 TEXT NOT NULL,"
            " payload BLOB NOT NULL)"
        )

    def put(self, topic: str, payload: bytes, reason: str) -> int:
        digest = hashlib.sha256(payload).hexdigest()
        kept = payload if len(payload) <= MAX_KEPT_BYTES else payload[:65_536]
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO dead_letters (received_ns, topic, reason, size, sha256, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (time.time_ns(), topic[:1024], reason[:2000], len(payload), digest, kept),
            )
            return int(cur.lastrowid or 0)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def recent(self, limit: int = 20) -> list[tuple[int, int, str, str, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, received_ns, topic, reason, size FROM dead_letters"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [(int(a), int(b), str(c), str(d), int(e)) for a, b, c, d, e in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
