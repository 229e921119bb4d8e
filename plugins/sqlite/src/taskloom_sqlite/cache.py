"""``cache = "sqlite"``: a response cache in one SQLite file, shared by processes.

Reads run synchronously on the caller's thread, through a per-thread read-only
connection: in WAL mode a primary-key lookup in a local file takes a few microseconds and
never waits for writers, which is cheaper than any hop to a thread (~50 µs). The
bookkeeping a hit causes (last-access time for LRU, counters) is buffered and written by
the writer thread with the next write, at most a second later, and on close.

Writes (``set``, ``invalidate``, eviction, buffered bookkeeping) run on the writer thread
(:mod:`taskloom_sqlite.worker`), batched into transactions.

The run never fails because of the cache: every error becomes a miss (or a skipped write)
and a warning. A damaged file is renamed ``<name>.corrupt-<time>`` and a new one created.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .db import DatabasePathError, Schema, SchemaTooNew, StoreError, connect, is_corrupt, move_aside, open_database
from .worker import Worker

log = logging.getLogger("taskloom.sqlite")
WHAT = "response cache"
COUNTERS = ("hits", "misses", "evictions", "expirations")

SCHEMA = Schema(
    kind=WHAT,
    application_id=0x544C4343,  # "TLCC"
    migrations=[
        [
            """CREATE TABLE entries (
                key TEXT PRIMARY KEY,
                value BLOB NOT NULL,
                size INTEGER NOT NULL,
                expires_at REAL,
                accessed_at REAL NOT NULL,
                created_at REAL NOT NULL
            )""",
            "CREATE INDEX entries_accessed ON entries (accessed_at)",
            "CREATE INDEX entries_expires ON entries (expires_at) WHERE expires_at IS NOT NULL",
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
            """INSERT INTO counters VALUES ('hits', 0), ('misses', 0), ('evictions', 0), ('expirations', 0),
                ('entries', 0), ('bytes', 0)""",
            """CREATE TRIGGER entries_insert AFTER INSERT ON entries BEGIN
                UPDATE counters SET value = value + 1 WHERE name = 'entries';
                UPDATE counters SET value = value + new.size WHERE name = 'bytes';
            END""",
            """CREATE TRIGGER entries_delete AFTER DELETE ON entries BEGIN
                UPDATE counters SET value = value - 1 WHERE name = 'entries';
                UPDATE counters SET value = value - old.size WHERE name = 'bytes';
            END""",
            """CREATE TRIGGER entries_resize AFTER UPDATE OF size ON entries BEGIN
                UPDATE counters SET value = value + new.size - old.size WHERE name = 'bytes';
            END""",
        ],
    ],
)

_GET = "SELECT value, expires_at FROM entries WHERE key = ?"
_SET = """INSERT INTO entries (key, value, size, expires_at, accessed_at, created_at) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, size = excluded.size, expires_at = excluded.expires_at,
    accessed_at = excluded.accessed_at, created_at = excluded.created_at"""
_TOUCH = "UPDATE entries SET accessed_at = ? WHERE key = ? AND accessed_at < ?"
_ADD = "UPDATE counters SET value = value + ? WHERE name = ?"

_FLUSH_EVERY_S = 1.0
_FLUSH_AT = 500
_SWEEP_EVERY_S = 60.0


class _Pending:
    """Bookkeeping from reads not yet written: access times and counter increments."""

    __slots__ = ("counts", "touched")

    def __init__(self) -> None:
        self.touched: dict[str, float] = {}
        self.counts = dict.fromkeys(COUNTERS, 0)


class SqliteCache:
    """A :class:`taskloom.types.Cache` in a SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        ttl: float | None = 7 * 86400.0,
        max_bytes: int = 256 * 1024 * 1024,
        max_entries: int = 100_000,
        busy_timeout: float = 5.0,
        create_dir: bool = False,
        key: str = "cache_path",
    ) -> None:
        self.path = Path(path).expanduser()
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.busy_timeout = busy_timeout
        self._key = key
        self._lock = threading.Lock()
        self._pending = _Pending()
        self._flush_posted = False
        self._last_flush = time.monotonic()
        self._last_sweep = 0.0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._generation = 0
        self._warned: set[str] = set()
        self._worker: Worker | None = None
        self._recovering = False
        self.disabled: str | None = None
        """Why the cache is off for this process (it then answers every get with a miss)."""
        self._open(create_dir)

    # ------------------------------------------------------------------ opening

    def _open(self, create_dir: bool) -> None:
        try:
            conn = self._open_file(create_dir)
        except (DatabasePathError, SchemaTooNew, StoreError, sqlite3.Error, OSError) as exc:
            self._disable(f"{exc}")
            return
        self.path = self.path.absolute()
        self._worker = Worker(conn, what=WHAT, path=self.path, name="taskloom-sqlite-cache")

    def _open_file(self, create_dir: bool) -> sqlite3.Connection:
        try:
            return open_database(
                self.path, SCHEMA, key=self._key, busy_timeout=self.busy_timeout, create_dir=create_dir
            )
        except (StoreError, sqlite3.DatabaseError) as exc:
            if not (is_corrupt(exc) or is_corrupt(exc.__cause__ or exc)):
                raise
            moved = move_aside(self.path)
            self._warn(
                "moved",
                f"the response cache {self.path} was unreadable ({exc}); moved it to {moved.name} "
                "and started a new one",
            )
            return open_database(self.path, SCHEMA, key=self._key, busy_timeout=self.busy_timeout)

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        self._warn("disabled", f"the response cache is off for this process: {reason}")

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def _reader(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None or local.generation != self._generation:
            conn = connect(self.path, what=WHAT, key=self._key, busy_timeout=min(self.busy_timeout, 0.2), readonly=True)
            local.conn, local.generation = conn, self._generation
            with self._lock:
                self._readers.append(conn)
        return conn

    def _failed(self, action: str, exc: BaseException) -> None:
        self._warn(
            f"{action}:{type(exc).__name__}",
            f"response cache {self.path}: {action} failed ({type(exc).__name__}: {exc}); carrying on without it",
        )
        if is_corrupt(exc) and self._worker is not None and not self._recovering:
            self._recovering = True
            self._worker.control(self._recover)

    def _recover(self, conn: sqlite3.Connection) -> None:
        """On the writer thread, outside any transaction: move the damaged file aside and
        start a new one."""
        assert self._worker is not None
        conn.close()
        self._generation += 1
        try:
            moved = move_aside(self.path)
            fresh = open_database(self.path, SCHEMA, key=self._key, busy_timeout=self.busy_timeout)
        except Exception as exc:
            self._disable(f"{self.path} was damaged and could not be replaced ({type(exc).__name__}: {exc})")
            self._worker.conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            return
        self._warn(
            "moved", f"the response cache {self.path} was damaged; moved it to {moved.name} and started a new one"
        )
        self._worker.conn = fresh
        self._recovering = False

    # ------------------------------------------------------------------ the Cache protocol

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def get_now(self, key: str) -> bytes | None:
        """The synchronous lookup behind ``get``."""
        if self._worker is None or self.disabled:
            return None
        try:
            row = self._reader().execute(_GET, (key,)).fetchone()
        except Exception as exc:
            self._failed("read", exc)
            row = None
        now = time.time()
        with self._lock:
            pending = self._pending
            if row is None:
                pending.counts["misses"] += 1
                value = None
            elif row[1] is not None and row[1] <= now:
                pending.counts["misses"] += 1
                pending.counts["expirations"] += 1
                value = None
            else:
                pending.counts["hits"] += 1
                pending.touched[key] = now
                value = row[0]
            due = not self._flush_posted and (
                len(pending.touched) >= _FLUSH_AT or time.monotonic() - self._last_flush >= _FLUSH_EVERY_S
            )
            if due:
                self._flush_posted = True
        if due:
            self._worker.post(self._flush)
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        if self._worker is None or self.disabled or len(value) > self.max_bytes:
            return
        life = ttl if ttl is not None else self.ttl
        now = time.time()
        row = (key, sqlite3.Binary(value), len(value), now + life if life is not None else None, now, now)

        def job(conn: sqlite3.Connection) -> None:
            self._flush(conn)
            conn.execute(_SET, row)
            self._evict(conn, now)

        try:
            await self._worker.call(job)
        except Exception as exc:
            self._failed("write", exc)

    async def invalidate(self, prefix: str = "") -> int:
        if self._worker is None:
            return 0

        def job(conn: sqlite3.Connection) -> int:
            self._flush(conn)
            if not prefix:
                return conn.execute("DELETE FROM entries").rowcount
            last = prefix[-1]
            if ord(last) < 0x10FFFF:
                upper = prefix[:-1] + chr(ord(last) + 1)
                sql = "DELETE FROM entries WHERE key >= ? AND key < ?"
                return conn.execute(sql, (prefix, upper)).rowcount
            return conn.execute("DELETE FROM entries WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)).rowcount

        try:
            return await self._worker.call(job)
        except Exception as exc:
            self._failed("invalidate", exc)
            return 0

    def stats(self) -> dict[str, int]:
        """Counters of every process that used the file (written ones plus this process's
        buffered ones), entries and bytes."""
        out = dict.fromkeys((*COUNTERS, "entries", "bytes"), 0)
        if self._worker is not None:
            try:
                for name, value in self._reader().execute("SELECT name, value FROM counters"):
                    out[name] = int(value)
            except Exception as exc:
                self._failed("stats", exc)
        with self._lock:
            for name, value in self._pending.counts.items():
                out[name] += value
        return out

    async def flush(self) -> None:
        """Write buffered access times and counters now."""
        if self._worker is not None:
            await self._worker.call(self._flush)

    async def aclose(self) -> None:
        import anyio

        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.post(self._flush)
            worker.close()
        with self._lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    # ------------------------------------------------------------------ on the writer thread

    def _flush(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            pending, self._pending = self._pending, _Pending()
            self._flush_posted = False
            self._last_flush = time.monotonic()
        if pending.touched:
            conn.executemany(_TOUCH, [(t, k, t) for k, t in pending.touched.items()])
        conn.executemany(_ADD, [(v, name) for name, v in pending.counts.items() if v])
        now = time.time()
        if now - self._last_sweep >= _SWEEP_EVERY_S:
            self._last_sweep = now
            self._expire(conn, now)

    def _expire(self, conn: sqlite3.Connection, now: float) -> None:
        n = conn.execute("DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)).rowcount
        if n:
            conn.execute(_ADD, (n, "expirations"))

    def _evict(self, conn: sqlite3.Connection, now: float) -> None:
        """Drop the least recently used entries until both caps hold (expired ones first)."""
        entries, size = self._totals(conn)
        if entries <= self.max_entries and size <= self.max_bytes:
            return
        self._expire(conn, now)
        entries, size = self._totals(conn)
        evicted = 0
        while entries > self.max_entries or size > self.max_bytes:
            want = max(entries - self.max_entries, 1)
            rows = conn.execute(
                "SELECT key, size FROM entries ORDER BY accessed_at LIMIT ?", (max(want, 64),)
            ).fetchall()
            if not rows:
                break
            drop: list[tuple[Any]] = []
            for key, n in rows:
                if entries <= self.max_entries and size <= self.max_bytes:
                    break
                drop.append((key,))
                entries -= 1
                size -= n
            conn.executemany("DELETE FROM entries WHERE key = ?", drop)
            evicted += len(drop)
        if evicted:
            conn.execute(_ADD, (evicted, "evictions"))

    @staticmethod
    def _totals(conn: sqlite3.Connection) -> tuple[int, int]:
        values = dict(conn.execute("SELECT name, value FROM counters WHERE name IN ('entries', 'bytes')").fetchall())
        return int(values.get("entries", 0)), int(values.get("bytes", 0))
