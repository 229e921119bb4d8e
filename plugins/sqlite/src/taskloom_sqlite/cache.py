"""``cache = "sqlite"``: a response cache in one SQLite file, shared by processes.

Nothing here waits for a lock on the event loop:

* Opening (and migrating) the file runs on the writer thread when the cache is made
  inside an event loop; operations made meanwhile wait for it without blocking the loop.
* ``get`` and ``stats`` first try the file on the caller's thread through a per-thread
  connection whose busy timeout is **zero**: in WAL mode a primary-key lookup in a local
  file takes a few microseconds, cheaper than any hop to a thread (~50 µs). If SQLite
  answers "busy" (it would have to wait), ``get`` retries on a worker thread
  (``anyio.to_thread``) and ``stats`` answers with the last counters it read.
* ``set`` commits on the caller's thread too, in its own short transaction begun with a
  zero busy timeout (one uncontended commit, ~0.1 ms, no fsync in WAL/NORMAL mode, no
  automatic checkpoint: the writer thread checkpoints). When the write lock is taken (by
  another process, or by this cache's writer thread) or the set would have to evict many
  rows, the write goes to the writer thread instead, which waits for the lock off the loop.
  Either way ``set`` returns once its value is committed, visible to every process.

The bookkeeping a hit causes (last-access time for LRU, counters) is buffered and written
by the writer thread (:mod:`taskloom_sqlite.worker`) at most a second later, and on close.
``invalidate`` and buffered bookkeeping run on the writer thread, batched into transactions.

The run never fails because of the cache: every error becomes a miss (or a skipped write)
and a warning. A damaged file is renamed ``<name>.corrupt-<time>`` and a new one created.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .db import (
    DatabasePathError,
    Schema,
    SchemaTooNew,
    StoreError,
    check_path,
    is_corrupt,
    move_aside,
    open_database,
)
from .worker import Worker, in_event_loop

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

_TOTALS = "SELECT name, value FROM counters WHERE name IN ('entries', 'bytes')"
_EXPIRE = """DELETE FROM entries WHERE key IN
    (SELECT key FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)"""

_INLINE_EVICT_MAX = 64
"""A set on the caller's thread evicts at most this many rows; more go to the writer thread."""
_CHECKPOINT_EVERY = 256
"""Commits on callers' threads between checkpoints by the writer thread."""
_SLOW_READ_TIMEOUT_S = 0.2
_FLUSH_EVERY_S = 1.0
_FLUSH_AT = 500
_SWEEP_EVERY_S = 60.0


def _busy(exc: BaseException) -> bool:
    """SQLite would have had to wait for another connection's lock."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc) or "busy" in str(exc)


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
        self._slow_local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._generation = 0
        self._warned: set[str] = set()
        self._worker: Worker | None = None
        self._recovering = False
        self._ok = False
        """The file is open and usable (the fast-path test)."""
        self._snapshot = dict.fromkeys((*COUNTERS, "entries", "bytes"), 0)
        self._inline_commits = 0
        self.disabled: str | None = None
        """Why the cache is off for this process (it then answers every get with a miss)."""
        self._open(create_dir)

    # ------------------------------------------------------------------ opening

    def _open(self, create_dir: bool) -> None:
        try:
            # Only a few stat/create calls: safe on the loop, and a bad path is known at once.
            self.path = check_path(self.path, what=WHAT, key=self._key, create_dir=create_dir).absolute()
        except (DatabasePathError, OSError) as exc:
            self._disable(f"{exc}")
            return
        self._worker = Worker(what=WHAT, path=self.path, name="taskloom-sqlite-cache", opener=self._open_file)
        if not in_event_loop():
            concurrent.futures.wait([self._worker.opened])  # no loop to keep responsive: open now

    def _open_file(self) -> sqlite3.Connection:
        """On the writer thread: open (or replace a damaged file), read the counters."""
        try:
            conn = self._open_or_replace()
        except (DatabasePathError, SchemaTooNew, StoreError, sqlite3.Error, OSError) as exc:
            self._disable(f"{exc}")
            raise
        try:
            self._snapshot.update({str(n): int(v) for n, v in conn.execute("SELECT name, value FROM counters")})
        except sqlite3.Error:
            pass
        self._ok = True
        return conn

    def _open_or_replace(self) -> sqlite3.Connection:
        try:
            return open_database(self.path, SCHEMA, key=self._key, busy_timeout=self.busy_timeout)
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

    async def ready(self) -> bool:
        """Wait (without blocking the loop) until the file is open; whether the cache is usable."""
        worker = self._worker
        if worker is None or self.disabled:
            return False
        if not worker.opened.done():
            try:
                await worker.ready()
            except Exception:
                return False
        return self._ok and not self.disabled

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        self._ok = False
        self._warn("disabled", f"the response cache is off for this process: {reason}")

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection for the fast path: busy timeout zero, so it never waits."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None or local.generation != self._generation:
            conn = self._connect(0.0)
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer thread checkpoints
            local.conn, local.generation = conn, self._generation
        return conn

    def _slow_conn(self) -> sqlite3.Connection:
        """A worker thread's connection for reads that found the file busy."""
        local = self._slow_local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None or local.generation != self._generation:
            conn = self._connect(min(self.busy_timeout, _SLOW_READ_TIMEOUT_S))
            conn.execute("PRAGMA query_only=1")
            local.conn, local.generation = conn, self._generation
        return conn

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        # The file is already in WAL mode (the writer thread set it): no journal-mode change,
        # which could need a lock.
        conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False, cached_statements=64
        )
        try:
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
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
        if not self._ok and not await self.ready():
            return None
        try:
            row = self._conn().execute(_GET, (key,)).fetchone()
        except Exception as exc:
            if not _busy(exc):
                self._failed("read", exc)
                return self._account(key, None)
            import anyio  # SQLite would wait: let a worker thread do that

            row = await anyio.to_thread.run_sync(self._slow_get, key)
        return self._account(key, row)

    def get_now(self, key: str) -> bytes | None:
        """A synchronous lookup that never waits: a miss when the file is busy or not open yet."""
        if not self._ok:
            return None
        row = None
        try:
            row = self._conn().execute(_GET, (key,)).fetchone()
        except Exception as exc:
            if not _busy(exc):
                self._failed("read", exc)
        return self._account(key, row)

    def _slow_get(self, key: str) -> Any:
        try:
            return self._slow_conn().execute(_GET, (key,)).fetchone()
        except Exception as exc:
            self._failed("read", exc)
            return None

    def _account(self, key: str, row: Any) -> bytes | None:
        """Count a lookup (buffered) and say whether it hit."""
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
            due = (
                self._worker is not None
                and not self._flush_posted
                and (len(pending.touched) >= _FLUSH_AT or time.monotonic() - self._last_flush >= _FLUSH_EVERY_S)
            )
            if due:
                self._flush_posted = True
        if due and self._worker is not None and not self._worker.closed:
            self._worker.post(self._flush)
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        if len(value) > self.max_bytes or (not self._ok and not await self.ready()):
            return
        worker = self._worker
        assert worker is not None
        life = ttl if ttl is not None else self.ttl
        now = time.time()
        row = (key, sqlite3.Binary(value), len(value), now + life if life is not None else None, now, now)
        try:
            if self._set_here(row, now):
                return
        except Exception as exc:
            if not _busy(exc):
                self._failed("write", exc)
                return

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(_SET, row)
            self._flush(conn)
            self._make_room(conn, now, None)

        try:
            await worker.call(job)
        except Exception as exc:
            self._failed("write", exc)

    def _set_here(self, row: tuple[Any, ...], now: float) -> bool:
        """Commit a set on this thread if that needs no waiting and little eviction.

        Returns False when the writer thread must do it (the transaction was rolled back);
        raises the busy error when the write lock is taken."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # busy timeout zero: fails at once if the lock is taken
        try:
            conn.execute(_SET, row)
            if not self._make_room(conn, now, _INLINE_EVICT_MAX):
                conn.execute("ROLLBACK")
                return False
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._inline_commits += 1
        if self._inline_commits % _CHECKPOINT_EVERY == 0 and self._worker is not None:
            self._worker.control(_checkpoint)
        return True

    async def invalidate(self, prefix: str = "") -> int:
        if not await self.ready():
            return 0
        assert self._worker is not None

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
        buffered ones), entries and bytes. Never waits: if the file is busy (or still
        opening), the counters last read are given."""
        out = dict(self._snapshot)
        if self._ok:
            try:
                read = {str(n): int(v) for n, v in self._conn().execute("SELECT name, value FROM counters")}
            except Exception as exc:
                if not _busy(exc):
                    self._failed("stats", exc)
            else:
                out.update(read)
                self._snapshot = dict(out)
        with self._lock:
            for name, value in self._pending.counts.items():
                out[name] += value
        return out

    async def flush(self) -> None:
        """Write buffered access times and counters now."""
        if await self.ready():
            assert self._worker is not None
            await self._worker.call(self._flush)

    async def aclose(self) -> None:
        import anyio

        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        worker, self._worker = self._worker, None
        self._ok = False
        if worker is not None:
            if worker.open_error is None:
                worker.post(self._flush)
            worker.close()
        with self._lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    # ------------------------------------------------------------------ in write transactions

    def _flush(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            pending, self._pending = self._pending, _Pending()
            self._flush_posted = False
            self._last_flush = time.monotonic()
        if pending.touched:
            conn.executemany(_TOUCH, [(t, k, t) for k, t in pending.touched.items()])
        counts = [(v, name) for name, v in pending.counts.items() if v]
        if counts:
            conn.executemany(_ADD, counts)
        now = time.time()
        if now - self._last_sweep >= _SWEEP_EVERY_S:
            self._last_sweep = now
            self._expire(conn, now, -1)

    def _expire(self, conn: sqlite3.Connection, now: float, limit: int) -> int:
        n: int = conn.execute(_EXPIRE, (now, limit)).rowcount
        if n:
            conn.execute(_ADD, (n, "expirations"))
        return n

    def _make_room(self, conn: sqlite3.Connection, now: float, limit: int | None) -> bool:
        """Drop expired entries, then the least recently used, until both caps hold.

        With ``limit``, give up (return False) rather than drop more than ``limit`` rows."""
        entries, size = self._totals(conn)
        if entries <= self.max_entries and size <= self.max_bytes:
            return True
        if limit is not None:
            # Recent hits decide what is least recently used: write their access times first
            # (idempotent; the buffer is written again by the next flush).
            with self._lock:
                touched = list(self._pending.touched.items())
            if touched:
                conn.executemany(_TOUCH, [(t, k, t) for k, t in touched])
        dropped = self._expire(conn, now, limit if limit is not None else -1)
        entries, size = self._totals(conn)
        evicted = 0
        while entries > self.max_entries or size > self.max_bytes:
            want = max(entries - self.max_entries, 64)
            if limit is not None:
                want = limit - dropped - evicted
                if want <= 0:
                    return False
            rows = conn.execute("SELECT key, size FROM entries ORDER BY accessed_at LIMIT ?", (want,)).fetchall()
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
        return True

    @staticmethod
    def _totals(conn: sqlite3.Connection) -> tuple[int, int]:
        values = dict(conn.execute(_TOTALS).fetchall())
        return int(values.get("entries", 0)), int(values.get("bytes", 0))


def _checkpoint(conn: sqlite3.Connection) -> None:
    """On the writer thread: copy the WAL into the file without waiting for anyone."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
