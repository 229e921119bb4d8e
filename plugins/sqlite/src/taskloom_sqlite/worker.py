"""A thread that owns one SQLite connection and runs database jobs off the event loop.

Jobs queue up while a transaction runs, and the next transaction takes them all (group
commit): a burst of concurrent checkpoints costs one commit, not one each. Each job runs
inside its own SAVEPOINT, so one failing job does not undo the others.

Two ways in:

* ``await worker.call(fn)``: wait for ``fn(conn)`` to be committed; its result or error.
* ``Worker(collect=fn)``: the thread calls ``fn(True)`` before each batch and
  ``fn(False)`` after it (and every ``collect_every`` seconds when idle), without
  ``lock``; a job it returns runs first in the batch, as a posted write (after the batch:
  in a batch of its own). Buffers (events) drain this way without a queue entry, or a
  wake-up of the thread, per item: before a batch only what its reads need, after it the
  rest, so that queued checkpoints do not wait behind a buffer.
* ``worker.post(fn)``: queue a write and return at once (ledger rows, events). Posted
  writes keep their order with awaited ones, so an awaited job also makes every write
  posted before it durable. A posted write that fails for a passing reason (database
  locked, disk full) is kept and tried again with the next transaction.
* ``worker.background(fn)``: ``fn(conn)`` on a second connection of the thread's own,
  outside the order of the other jobs and without ``worker.lock`` (WAL checkpoints).

Sharing the connection (``Worker(shared=True)``): the caller's thread may run its own
transactions on ``worker.conn`` while it holds ``worker.lock`` and the worker is ``idle``
(every job queued so far is done, nothing waits to be retried), so that they keep their
order with queued jobs. The connection's busy timeout is then zero (a caller on an event
loop gets "busy" at once instead of waiting for another process's lock) and the thread
raises it to ``busy_timeout`` while it runs its own jobs. Automatic WAL checkpoints are
off on that connection (one would fsync on the caller's thread): the thread checkpoints
every ``CHECKPOINT_EVERY`` commits noted with :meth:`Worker.note_commit`, passively, on
its second connection.

The connection may be opened on the thread itself (``Worker(opener=...)``): opening and
migrating a file can wait for another process's write lock, which must not happen on the
event loop. Jobs queued meanwhile run once it is open; if opening fails, every awaited job
gets that error (``await worker.ready()`` raises it too) and posted ones are dropped.

This is what ``aiosqlite`` does (a thread per connection, futures resolved on the loop)
plus the batching, which aiosqlite lacks and which the checkpoint benchmark needs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sniffio

from .db import is_transient, translate

T = TypeVar("T")
log = logging.getLogger("taskloom.sqlite")

_MAX_BATCH = 1000
_MAX_RETRY = 100_000
CHECKPOINT_EVERY = 64
"""Commits on a shared connection between two passive WAL checkpoints."""


class _Job:
    __slots__ = ("fn", "future", "side", "write")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: concurrent.futures.Future[Any] | None,
        write: bool,
        side: bool = False,
    ) -> None:
        self.fn = fn
        self.future = future
        self.write = write
        self.side = side


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the file without waiting for anyone."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


_STOP = _Job(lambda conn: None, None, False)
_WAKE = _Job(lambda conn: None, None, False, side=True)


async def wait_future(future: concurrent.futures.Future[T]) -> T:
    """Await a thread's future from asyncio or trio without blocking the loop."""
    if future.done():
        return future.result()
    if sniffio.current_async_library() == "asyncio":
        return await asyncio.wrap_future(future)
    import anyio

    return await anyio.to_thread.run_sync(future.result)


def in_event_loop() -> bool:
    """Whether this thread is running an async event loop (so must not block)."""
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return False
    return True


class Worker:
    def __init__(
        self,
        conn: sqlite3.Connection | None = None,
        *,
        what: str,
        path: Path,
        name: str = "taskloom-sqlite",
        opener: Callable[[], sqlite3.Connection] | None = None,
        collect: Callable[[bool], Callable[[sqlite3.Connection], Any] | None] | None = None,
        collect_every: float = 0.05,
        busy_timeout: float = 5.0,
        shared: bool = False,
        synchronous: str = "normal",
    ) -> None:
        if (conn is None) == (opener is None):
            raise TypeError("give a connection or an opener")
        self.conn: sqlite3.Connection = conn  # type: ignore[assignment]  # set by the opener on the thread
        self.what = what
        self.path = path
        self._opener = opener
        self._collect = collect
        self._collect_every = collect_every
        self.opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        if conn is not None:
            self.opened.set_result(None)
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._retry: list[_Job] = []
        self._busy_ms = int(busy_timeout * 1000) if shared else None
        """Set while the thread runs jobs on a connection shared with callers (zero otherwise)."""
        self._side_busy_ms = int(busy_timeout * 1000)
        self._synchronous = synchronous.upper()
        self.lock = threading.Lock()
        """Held while the thread uses ``conn``; a caller sharing it takes it too."""
        self._count_lock = threading.Lock()
        self._submitted = 0
        self._finished = 0
        self._commits = 0
        self._usable = False
        self._side: sqlite3.Connection | None = None
        self._closed = False
        self._warned: set[str] = set()
        self.failed_writes = 0
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the caller's side

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def open_error(self) -> BaseException | None:
        """Why the file could not be opened (None while opening or once open)."""
        return self.opened.exception() if self.opened.done() else None

    @property
    def idle(self) -> bool:
        """Every queued job (but background ones) is done and no write waits for a retry."""
        return self._submitted == self._finished and not self._retry

    @property
    def usable(self) -> bool:
        """The connection is open and not closed: a caller may share it (under ``lock``)."""
        return self._usable

    def wake(self) -> None:
        """Make the thread look at its ``collect`` buffer now rather than at its next tick."""
        if not self._closed:
            self._queue.put(_WAKE)

    def note_commit(self) -> None:
        """A transaction was committed on the shared connection (for WAL checkpoints)."""
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and not self._closed:
            self._queue.put(_Job(checkpoint, None, False, side=True))

    def _put(self, job: _Job) -> None:
        with self._count_lock:
            self._submitted += 1
            self._queue.put(job)

    async def ready(self) -> None:
        """Wait until the connection is open; raise the error if it could not be."""
        await wait_future(self.opened)

    def submit(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = True) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError(f"{self.what} {self.path} is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._put(_Job(fn, future, write))
        return future

    async def call(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        return await wait_future(self.submit(fn, write=write))

    def post(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        if self._closed:
            raise RuntimeError(f"{self.what} {self.path} is closed")
        self._put(_Job(fn, None, True))

    def control(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        """Queue ``fn(conn)`` to run outside any transaction (it may replace ``self.conn``)."""
        if not self._closed:
            self._put(_Job(fn, None, False))

    def background(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        """Queue ``fn(conn)`` on the thread's second connection, in no order with other jobs."""
        if not self._closed:
            self._queue.put(_Job(fn, None, False, side=True))

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish queued work, then close the connection."""
        if self._closed:
            return
        self._closed = True
        self._usable = False
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._retry:
            log.warning(
                "%s %s: %d ledger writes could not be saved before closing (%s)",
                self.what,
                self.path,
                len(self._retry),
                "database locked or disk full",
            )
        if self.conn is not None:
            locked = self.lock.acquire(timeout=timeout if timeout is not None else -1)
            try:
                self.conn.close()
            finally:
                if locked:
                    self.lock.release()

    # ------------------------------------------------------------------ the thread

    def _open(self) -> bool:
        if self._opener is not None:
            try:
                self.conn = self._opener()
            except BaseException as exc:
                self.opened.set_exception(exc)
                return False
        if self._busy_ms is not None:
            try:
                self.conn.execute("PRAGMA busy_timeout=0")
                self.conn.execute("PRAGMA wal_autocheckpoint=0")
            except BaseException as exc:
                self.conn.close()
                self.opened.set_exception(translate(exc, self.what, self.path))
                return False
        if self._opener is not None:
            self.opened.set_result(None)
        self._usable = not self._closed
        return True

    def side_connection(self) -> sqlite3.Connection:
        """The thread's second connection (opened on first use; only on the thread): for
        work that needs no order with the jobs and must not hold ``lock`` (WAL
        checkpoints). Autocommit, the same durability, the full busy timeout."""
        if self._side is None:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout={self._side_busy_ms}")
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
            except BaseException:
                conn.close()
                raise
            self._side = conn
        return self._side

    def _run_side(self, jobs: list[_Job]) -> None:
        """Background jobs, on the thread's second connection, without ``lock``."""
        try:
            side = self.side_connection()
            for job in jobs:
                job.fn(side)
        except Exception as exc:
            self._warn(f"side:{type(exc).__name__}", f"{self.what} {self.path}: {type(exc).__name__}: {exc}")

    def _refuse(self) -> None:
        """The file could not be opened: fail every job until closed."""
        error = self.opened.exception()
        assert error is not None
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if job.future is not None:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(error)
            elif job.write:
                self.failed_writes += 1

    def _main(self) -> None:
        if not self._open():
            self._refuse()
            return
        try:
            self._loop()
        finally:
            if self._side is not None:
                self._side.close()

    def _loop(self) -> None:
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        collect = self._collect
        while True:
            if collect is None:
                batch = [get()]
            else:
                try:
                    batch = [get(timeout=self._collect_every)]
                except queue.Empty:
                    batch = []
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            stop = False
            if _STOP in batch:
                stop = True
                batch = [j for j in batch if j is not _STOP]
            side = [j for j in batch if j.side]
            if side:
                batch = [j for j in batch if not j.side]
                side = [j for j in side if j is not _WAKE]
            ordered = len(batch)
            if collect is not None:
                # What the batch's reads need of the buffers, first, so that they see it.
                # Collected before the lock is taken: preparing it keeps nobody waiting.
                extra = collect(True)
                if extra is not None:
                    batch.insert(0, _Job(extra, None, True))
            if batch or (stop and self._retry):
                with self.lock:
                    self._batch(batch, stop)
                    self._finished += ordered
            if collect is not None and not stop:
                extra = collect(False)
                if extra is not None:
                    with self.lock:
                        self._batch([_Job(extra, None, True)], False)
            if side:
                self._run_side(side)
            if stop:
                return

    def _batch(self, batch: list[_Job], stop: bool) -> None:
        busy_ms = self._busy_ms
        try:
            if busy_ms is not None:
                self.conn.execute(f"PRAGMA busy_timeout={busy_ms}")
            try:
                self._run(batch)
                if stop and self._retry:
                    self._run([])  # one last try for retried writes
            finally:
                if busy_ms is not None:
                    self.conn.execute("PRAGMA busy_timeout=0")
        except BaseException as exc:  # never let the thread die with jobs waiting
            for job in batch:
                if job.future is not None and not job.future.done():
                    job.future.set_exception(exc)

    def _run(self, batch: list[_Job]) -> None:
        """Consecutive writes share a transaction; reads run on their own."""
        writes: list[_Job] = []
        for job in batch:
            if job.future is not None and not job.future.set_running_or_notify_cancel():
                continue  # the caller was cancelled before the job started
            if job.write:
                writes.append(job)
                continue
            if writes:
                self._write(writes)
                writes = []
            self._read(job)
        if writes or self._retry:
            self._write(writes)

    def _read(self, job: _Job) -> None:
        if job.future is None:  # a control job
            try:
                job.fn(self.conn)
            except Exception as exc:
                self._warn(f"control:{type(exc).__name__}", f"{self.what} {self.path}: {type(exc).__name__}: {exc}")
            return
        try:
            result = job.fn(self.conn)
        except BaseException as exc:
            job.future.set_exception(translate(exc, self.what, self.path))
        else:
            job.future.set_result(result)

    def _write(self, jobs: list[_Job]) -> None:
        if self._retry:
            jobs = self._retry + jobs
            self._retry = []
        conn = self.conn
        done: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail(jobs, exc)
            return
        for job in jobs:
            try:
                conn.execute("SAVEPOINT job")
                result = job.fn(conn)
                conn.execute("RELEASE job")
            except BaseException as exc:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (it may, on a full disk).
                    self._fail(jobs, exc)
                    return
                try:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                except sqlite3.Error:
                    self._abort(jobs, exc)
                    return
                if is_transient(exc):
                    # The transaction cannot go on (full disk): undo it, keep the work.
                    self._abort(jobs, exc)
                    return
                done.append((job, None, exc))
            else:
                done.append((job, result, None))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._abort(jobs, exc)
            return
        if self._busy_ms is not None:
            self.note_commit()
        for job, result, error in done:
            if job.future is None:
                if error is not None:
                    self.failed_writes += 1
                    self._warn(f"job:{type(error).__name__}", f"a write was dropped: {type(error).__name__}: {error}")
            elif error is not None:
                job.future.set_exception(translate(error, self.what, self.path))
            else:
                job.future.set_result(result)

    def _abort(self, jobs: list[_Job], exc: BaseException) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._fail(jobs, exc)

    def _fail(self, jobs: list[_Job], exc: BaseException) -> None:
        """The whole transaction failed: awaited jobs get the error; posted ones are kept
        for the next transaction when the cause may pass."""
        error = translate(exc, self.what, self.path)
        transient = is_transient(exc) or is_transient(error)
        for job in jobs:
            if job.future is not None:
                job.future.set_exception(error)
            elif transient and len(self._retry) < _MAX_RETRY:
                self._retry.append(job)
            else:
                self.failed_writes += 1
        self._warn(
            f"fail:{type(error).__name__}", str(error) + (" (queued writes will be retried)" if transient else "")
        )

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)
