"""``store = "sqlite"``: the run store in one SQLite file.

Runs, task checkpoints, model calls, tool calls and events. Every record keeps its full
JSON (exact round trip: decimals stay decimal text) next to the columns reports query.
Checkpoints (``save_task``, ``create_run``, ``update_run``) are committed before they
return; ledger rows (model and tool calls) are queued and committed with the next
transaction, at the latest with the next checkpoint or ``flush()``; events are serialised
when posted, buffered, and written in batches (see :meth:`SqliteStore.post_event`).

On an asyncio loop, task checkpoints and ledger rows are group-committed on the loop's own
thread: each is added to a list, and one callback, run by the loop once the tasks that are
ready have had their turn, writes the whole list in one transaction (``executemany``, no
fsync in WAL/NORMAL mode) and wakes the waiting ``save_task`` calls. That costs a few
microseconds per row and no hop to another thread, whose wake-ups wait for the GIL while the
loop is busy. The transaction is begun with a zero busy timeout, so it never waits: when
the file is locked (another process writes), the disk is full or any other error occurs,
it is rolled back and the same rows go to the writer thread, which waits off the loop and
reports errors as before. It never overtakes work queued for the writer thread (it runs
only while that thread is idle), so every write keeps its order.

Durability: WAL with ``synchronous=NORMAL`` by default. A commit is then safe from the
process dying at any moment (SIGKILL, OOM, Ctrl-C): the WAL frames are in the OS before
``COMMIT`` returns. A power cut may lose the last commits but never leaves a damaged file;
resume then reruns those tasks. ``synchronous = "full"`` also syncs every commit to disk.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import deque
from functools import cache, partial
from pathlib import Path
from typing import Any

from pydantic_core import to_json
from taskloom.records import CallRecord, RunRecord, TaskRecord, ToolCallRecord
from taskloom.types import Event

from .db import Schema, Synchronous, check_path, open_database
from .worker import Worker, in_event_loop, wait_future

WHAT = "run store"

SCHEMA = Schema(
    kind=WHAT,
    application_id=0x544C5253,  # "TLRS"
    migrations=[
        [
            """CREATE TABLE runs (
                id TEXT PRIMARY KEY,
                workflow TEXT NOT NULL,
                status TEXT NOT NULL,
                started_at REAL NOT NULL,
                finished_at REAL,
                input_tokens INTEGER NOT NULL DEFAULT 0,
                output_tokens INTEGER NOT NULL DEFAULT 0,
                cost TEXT NOT NULL DEFAULT '0',
                error TEXT,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX runs_started ON runs (started_at)",
            """CREATE TABLE tasks (
                seq INTEGER PRIMARY KEY,
                run_id TEXT NOT NULL,
                task_id TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                agent TEXT,
                started_at REAL,
                finished_at REAL,
                input_tokens INTEGER NOT NULL DEFAULT 0,
                output_tokens INTEGER NOT NULL DEFAULT 0,
                cost TEXT NOT NULL DEFAULT '0',
                data TEXT NOT NULL,
                UNIQUE (run_id, task_id)
            )""",
            """CREATE TABLE model_calls (
                id INTEGER PRIMARY KEY,
                run_id TEXT,
                task_id TEXT,
                agent TEXT,
                user TEXT,
                request_hash TEXT NOT NULL,
                alias TEXT NOT NULL,
                model TEXT NOT NULL,
                provider TEXT NOT NULL,
                input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL,
                cost TEXT NOT NULL,
                priced INTEGER NOT NULL,
                latency_s REAL NOT NULL,
                cached INTEGER NOT NULL,
                error TEXT,
                time REAL NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX model_calls_run ON model_calls (run_id)",
            """CREATE TABLE tool_calls (
                id INTEGER PRIMARY KEY,
                run_id TEXT,
                task_id TEXT,
                agent TEXT,
                name TEXT NOT NULL,
                arguments TEXT NOT NULL,
                duration_s REAL NOT NULL,
                cost TEXT NOT NULL,
                error TEXT,
                time REAL NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX tool_calls_run ON tool_calls (run_id)",
            """CREATE TABLE events (
                id INTEGER PRIMARY KEY,
                time REAL NOT NULL,
                kind TEXT NOT NULL,
                run_id TEXT,
                task_id TEXT,
                agent TEXT,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX events_run ON events (run_id)",
        ],
    ],
)

_INSERT_RUN = "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPDATE_RUN = """UPDATE runs SET workflow = ?, status = ?, started_at = ?, finished_at = ?, input_tokens = ?,
    output_tokens = ?, cost = ?, error = ?, data = ? WHERE id = ?"""
_SAVE_TASK = """INSERT INTO tasks (run_id, task_id, state, attempts, agent, started_at, finished_at, input_tokens,
    output_tokens, cost, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (run_id, task_id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
    agent = excluded.agent, started_at = excluded.started_at, finished_at = excluded.finished_at,
    input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, cost = excluded.cost,
    data = excluded.data"""
_INSERT_CALL = """INSERT INTO model_calls (run_id, task_id, agent, user, request_hash, alias, model, provider,
    input_tokens, output_tokens, cost, priced, latency_s, cached, error, time, data)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_INSERT_TOOL_CALL = """INSERT INTO tool_calls (run_id, task_id, agent, name, arguments, duration_s, cost, error,
    time, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_TASK_JSON = TaskRecord.__pydantic_serializer__.to_json
_CALL_JSON = CallRecord.__pydantic_serializer__.to_json
_TOOL_CALL_JSON = ToolCallRecord.__pydantic_serializer__.to_json
"""``model_dump_json()`` without its per-call keyword handling (the same bytes)."""

_LOCK_RETRY_S = 0.0005
_LOCK_RETRIES = 200
"""While the writer thread holds the connection (a read, say), a batch on the loop
is tried again every ``_LOCK_RETRY_S`` this many times before it goes to the thread."""


_EVENTS_EVERY_S = 0.05
"""Longest an event waits in the buffer while the writer thread is awake."""
_EVENTS_BATCH = 500
_EVENTS_MAX = 10_000
"""Buffered events that make the writer thread write them at once."""


_EVENT_STATEMENTS = (256, 64, 16)
"""Rows of the (padded, so cached) multi-row INSERTs of events: the largest that is full,
the rest padded to the smallest."""
_EVENTS_RIDE = 64
"""Buffered events that ride along with the loop's next group commit."""


def _event_data(data: Any) -> str:
    try:
        return to_json(data).decode()
    except Exception:  # something pydantic-core cannot serialise: its str()
        return to_json(data, fallback=str).decode()


@cache
def _insert_events_sql(rows: int) -> str:
    # Padding rows are all NULL: the WHERE drops them (kind is never NULL).
    return (
        "INSERT INTO events (time, kind, run_id, task_id, agent, data) SELECT * FROM (VALUES "
        + ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
        + ") WHERE column2 IS NOT NULL"
    )


def _insert_events(conn: sqlite3.Connection, flat: list[Any]) -> None:
    """Insert serialised events (six values a row) with a few multi-row INSERTs: one bind
    call and one step per statement instead of one per row."""
    sizes = [n for n in _EVENT_STATEMENTS if n * 6 <= conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)]
    smallest = sizes[-1] if sizes else 1
    start, total = 0, len(flat) // 6
    while start < total:
        left = total - start
        rows = next((n for n in sizes if n <= left), smallest)
        params = flat[start * 6 : (start + rows) * 6]
        if len(params) < rows * 6:
            params += [None] * (rows * 6 - len(params))
        conn.execute(_insert_events_sql(rows), params)
        start += rows


def _execute(sql: str, row: tuple[Any, ...], conn: sqlite3.Connection) -> None:
    conn.execute(sql, row)


def _execute_many(sql: str, rows: list[tuple[Any, ...]], conn: sqlite3.Connection) -> None:
    conn.executemany(sql, rows)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None = None) -> None:
    """Give ``future`` its result (or ``error``), from any thread."""

    def settle() -> None:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    loop = future.get_loop()
    if asyncio._get_running_loop() is loop:
        settle()
    else:
        loop.call_soon_threadsafe(settle)


def _run_row(run: RunRecord) -> tuple[Any, ...]:
    return (
        run.workflow,
        run.status,
        run.started_at,
        run.finished_at,
        run.usage.input_tokens,
        run.usage.output_tokens,
        str(run.cost.total),
        run.error,
        run.model_dump_json(),
    )


_Op = tuple[str, tuple[Any, ...], "asyncio.Future[Any] | None"]


class SqliteStore:
    """A :class:`taskloom.records.RunStore` in a SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 5.0,
        synchronous: Synchronous = "normal",
        create_dir: bool = False,
        key: str = "store_path",
    ) -> None:
        # A bad path is an error at once (a few stat/create calls); opening and migrating the
        # file may wait for another process's lock, so inside an event loop it happens on the
        # writer thread and its error (a newer schema, say) comes from the first operation.
        self.path = check_path(Path(path), what=WHAT, key=key, create_dir=create_dir).absolute()
        self._events: deque[tuple[Any, ...]] = deque()
        """Serialised events not yet taken by the writer thread (appends and pops are atomic)."""
        self._unwritten: list[Any] = []
        """Serialised events a passing error (locked, full) kept from being written."""
        self._events_since = 0.0
        self._events_wanted = False
        """A reader or flush() wants the buffered events written now."""
        self._inline = synchronous == "normal"
        """Whether writes may be committed on the event loop's thread (not with a sync per commit)."""
        self._ops: list[_Op] = []
        """Checkpoints and ledger rows waiting for the loop's next group commit."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._retries = 0
        self._closing = False

        def opener() -> sqlite3.Connection:
            return open_database(self.path, SCHEMA, key=key, busy_timeout=busy_timeout, synchronous=synchronous)

        self._worker = Worker(
            what=WHAT,
            path=self.path,
            name="taskloom-sqlite-store",
            opener=opener,
            collect=self._collect_events,
            collect_every=_EVENTS_EVERY_S,
            busy_timeout=busy_timeout,
            shared=self._inline,
            synchronous=synchronous,
        )
        if not in_event_loop():
            error = self._worker.opened.exception()  # waits: no loop to keep responsive
            if error is not None:
                self._worker.close()
                raise error

    async def ready(self) -> None:
        """Wait until the file is open (without blocking the loop); raise why it cannot be."""
        await self._worker.ready()

    # ------------------------------------------------------------------ group commit on the loop

    def _here(self) -> asyncio.AbstractEventLoop | None:
        """The running asyncio loop, when writes may be group-committed on it."""
        if not self._inline or self._closing or not self._worker.usable:
            return None
        loop = asyncio._get_running_loop()
        if loop is not self._loop and loop is not None:
            if self._ops:
                self._flush_ops()  # left by another loop (a store moved between loops)
            self._loop, self._scheduled = loop, False
        return loop

    def _add(self, sql: str, row: tuple[Any, ...], loop: asyncio.AbstractEventLoop, wait: bool) -> Any:
        future = loop.create_future() if wait else None
        self._ops.append((sql, row, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_soon)
        return future

    def _flush_soon(self) -> None:
        self._scheduled = False
        if self._ops:
            try:
                self._flush_ops(may_wait=True)
            except Exception as exc:  # never leave a save_task waiting for a commit that will not come
                ops, self._ops = self._ops, []
                for _, _, future in ops:
                    if future is not None:
                        _settle(future, None, exc)
                    else:
                        self._worker.failed_writes += 1
                self._worker._warn(f"flush:{type(exc).__name__}", f"{WHAT} {self.path}: writes failed: {exc!r}")

    def _drain(self) -> None:
        """Before a job goes to the writer thread: settle what waits for the loop's commit."""
        if self._ops:
            self._flush_ops()

    def _flush_ops(self, may_wait: bool = False) -> None:
        """Commit the waiting ops here, or hand them to the writer thread."""
        worker = self._worker
        ops = [op for op in self._ops if op[2] is None or not op[2].cancelled()]
        if worker.usable and worker.idle and not self._closing and ops:
            if worker.lock.acquire(blocking=False):
                try:
                    done = worker.idle and worker.usable and self._commit(ops)
                finally:
                    worker.lock.release()
                if done:
                    self._ops, self._retries = [], 0
                    worker.note_commit()
                    for _, _, future in ops:
                        if future is not None:
                            _settle(future, None)
                    return
            elif may_wait and self._retries < _LOCK_RETRIES and self._loop is not None:
                # The thread is using the connection (a read, say): it is done in a moment.
                # Queueing behind it would cost a GIL hand-off per statement while the
                # loop is busy.
                self._retries += 1
                self._scheduled = True
                self._loop.call_later(_LOCK_RETRY_S, self._flush_soon)
                return
        self._ops, self._retries = [], 0
        self._hand_over(ops)

    def _commit(self, ops: list[_Op]) -> bool:
        """One transaction for every op, and the buffered events once ``_EVENTS_RIDE``
        have gathered, on this thread (holding the worker's lock); False (rolled back) if
        it could not be done without waiting, or failed."""
        conn = self._worker.conn
        try:
            conn.execute("BEGIN IMMEDIATE")  # busy timeout zero: "locked" at once, never a wait
        except sqlite3.Error:
            return False
        events: list[Any] = []
        try:
            if len(self._events) >= _EVENTS_RIDE or self._unwritten:
                events = self._take_events()
                _insert_events(conn, events)
            i, n = 0, len(ops)
            while i < n:
                sql, j = ops[i][0], i + 1
                while j < n and ops[j][0] is sql:
                    j += 1
                if j == i + 1:
                    conn.execute(sql, ops[i][1])
                else:
                    conn.executemany(sql, [op[1] for op in ops[i:j]])
                i = j
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if events:
                self._unwritten = events  # the next writer takes them first
            if not isinstance(exc, Exception):
                raise
            return False
        return True

    def _hand_over(self, ops: list[_Op]) -> None:
        """The writer thread does these, in order: each awaited one as its own job (its
        caller gets its own result or error), consecutive posted rows as one."""
        worker = self._worker
        i, n = 0, len(ops)
        while i < n:
            sql, row, future = ops[i]
            if future is not None:
                try:
                    _settle(future, worker.submit(partial(_execute, sql, row)))
                except Exception as exc:
                    _settle(future, None, exc)
                i += 1
                continue
            j = i + 1
            while j < n and ops[j][2] is None and ops[j][0] is sql:
                j += 1
            try:
                worker.post(partial(_execute_many, sql, [op[1] for op in ops[i:j]]))
            except RuntimeError:
                worker.failed_writes += j - i  # closed meanwhile
            i = j

    async def _write(self, sql: str, row: tuple[Any, ...]) -> None:
        """Commit one row; return once it is durable."""
        loop = self._here()
        if loop is None:
            self._drain()
            await self._worker.call(partial(_execute, sql, row))
            return
        handoff = await self._add(sql, row, loop, True)
        if handoff is not None:  # the writer thread took it
            await wait_future(handoff)

    def _post(self, sql: str, row: tuple[Any, ...]) -> None:
        """Queue one row, committed with the next transaction."""
        loop = self._here()
        if loop is None:
            self._drain()
            self._worker.post(partial(_execute, sql, row))
        else:
            self._add(sql, row, loop, False)

    # ------------------------------------------------------------------ runs

    async def create_run(self, run: RunRecord) -> None:
        row = (run.id, *_run_row(run))

        def job(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(_INSERT_RUN, row)
            except sqlite3.IntegrityError:
                raise ValueError(f"run {run.id} already exists in {self.path}") from None

        self._drain()
        await self._worker.call(job)

    async def update_run(self, run: RunRecord) -> None:
        row = (*_run_row(run), run.id)

        def job(conn: sqlite3.Connection) -> None:
            if conn.execute(_UPDATE_RUN, row).rowcount == 0:
                raise KeyError(f"unknown run {run.id} in {self.path}")

        self._drain()
        await self._worker.call(job)

    async def get_run(self, run_id: str) -> RunRecord | None:
        def job(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT data FROM runs WHERE id = ?", (run_id,)).fetchone()
            return row[0] if row else None

        self._drain()
        data = await self._worker.call(job, write=False)
        return RunRecord.model_validate_json(data) if data is not None else None

    async def list_runs(self, limit: int = 50) -> list[RunRecord]:
        def job(conn: sqlite3.Connection) -> list[str]:
            sql = "SELECT data FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?"
            return [r[0] for r in conn.execute(sql, (limit,))]

        self._drain()
        return [RunRecord.model_validate_json(d) for d in await self._worker.call(job, write=False)]

    # ------------------------------------------------------------------ checkpoints

    async def save_task(self, task: TaskRecord) -> None:
        row = (
            task.run_id,
            task.task_id,
            task.state,
            task.attempts,
            task.agent,
            task.started_at,
            task.finished_at,
            task.usage.input_tokens,
            task.usage.output_tokens,
            str(task.cost.total),
            _TASK_JSON(task).decode(),
        )
        await self._write(_SAVE_TASK, row)

    async def get_tasks(self, run_id: str) -> list[TaskRecord]:
        def job(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT data FROM tasks WHERE run_id = ? ORDER BY seq", (run_id,))]

        self._drain()
        return [TaskRecord.model_validate_json(d) for d in await self._worker.call(job, write=False)]

    # ------------------------------------------------------------------ ledger

    async def record_call(self, call: CallRecord) -> None:
        self.post_call(call)

    def post_call(self, call: CallRecord) -> None:
        u = call.usage
        row = (
            call.run_id,
            call.task_id,
            call.agent,
            call.user,
            call.request_hash,
            call.alias,
            call.model,
            call.provider,
            u.input_tokens,
            u.output_tokens,
            str(call.cost.total),
            int(call.cost.priced),
            call.latency_s,
            int(call.cached),
            call.error,
            call.time,
            _CALL_JSON(call).decode(),
        )
        self._post(_INSERT_CALL, row)

    async def record_tool_call(self, call: ToolCallRecord) -> None:
        row = (
            call.run_id,
            call.task_id,
            call.agent,
            call.name,
            json.dumps(call.arguments, default=str),
            call.duration_s,
            str(call.cost),
            call.error,
            call.time,
            _TOOL_CALL_JSON(call).decode(),
        )
        self._post(_INSERT_TOOL_CALL, row)

    async def record_event(self, event: Event) -> None:
        self.post_event(event)

    def post_event(self, event: Event) -> None:
        """Keep an event without waiting (for the synchronous progress-sink hook).

        The event is serialised here (its row, data as JSON: a few microseconds, spread
        evenly over the run, and the event as it was when emitted) and buffered; nothing
        is queued per event. Buffered events ride along with the loop's next group commit
        once ``_EVENTS_RIDE`` have gathered, inserted by a few multi-row INSERTs on the
        same connection; the writer thread writes them when ``_EVENTS_BATCH`` have
        gathered (it is woken then) or the oldest is ``_EVENTS_EVERY_S`` old (it looks
        every ``_EVENTS_EVERY_S``) and nothing took them, and before ``flush()``,
        ``get_events()`` and close."""
        events = self._events
        events.append((event.time, event.kind, event.run_id, event.task_id, event.agent, _event_data(event.data)))
        n = len(events)
        if n == 1:
            self._events_since = time.monotonic()
        elif n == _EVENTS_BATCH or n % _EVENTS_MAX == 0:
            if self._worker.open_error is not None:
                events.clear()  # the file never opened: nothing will write them
            else:
                self._worker.wake()

    def _take_events(self) -> list[Any]:
        """For a writer holding the connection: the events to write, oldest first, flat
        (six values a row). If its transaction fails, it puts them back in ``_unwritten``."""
        events = self._events
        pop = events.popleft
        flat, self._unwritten = self._unwritten, []
        for _ in range(len(events)):
            flat += pop()
        return flat

    def _write_events(self, conn: sqlite3.Connection) -> None:
        """A writer-thread job (in its transaction, holding the connection)."""
        events = self._take_events()
        try:
            _insert_events(conn, events)
        except BaseException:
            self._unwritten = events
            raise

    def _collect_events(self, first: bool) -> Any:
        """On the writer thread, before each batch (``first``) when a reader or ``flush()``
        wants the events, or at close; after it when ``_EVENTS_BATCH`` have gathered or
        the oldest is ``_EVENTS_EVERY_S`` old: the job writing them (checkpoints queued
        for the thread do not wait behind them)."""
        n = len(self._events)
        if not n and not self._unwritten:
            return None
        wanted = self._events_wanted or self._worker.closed
        if first and not wanted:
            return None
        if not wanted and not (n >= _EVENTS_BATCH or time.monotonic() - self._events_since >= _EVENTS_EVERY_S):
            return None
        self._events_wanted = False
        return self._write_events

    async def get_calls(self, run_id: str) -> list[CallRecord]:
        def job(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT data FROM model_calls WHERE run_id = ? ORDER BY id", (run_id,))]

        self._drain()
        return [CallRecord.model_validate_json(d) for d in await self._worker.call(job, write=False)]

    async def get_tool_calls(self, run_id: str) -> list[ToolCallRecord]:
        def job(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT data FROM tool_calls WHERE run_id = ? ORDER BY id", (run_id,))]

        self._drain()
        return [ToolCallRecord.model_validate_json(d) for d in await self._worker.call(job, write=False)]

    async def get_events(self, run_id: str) -> list[Event]:
        def job(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            sql = "SELECT time, kind, run_id, task_id, agent, data FROM events WHERE run_id = ? ORDER BY id"
            return list(conn.execute(sql, (run_id,)))

        self._events_wanted = True
        self._drain()
        rows = await self._worker.call(job, write=False)
        return [Event(time=t, kind=k, run_id=r, task_id=ti, agent=a, data=json.loads(d)) for t, k, r, ti, a, d in rows]

    # ------------------------------------------------------------------ lifecycle

    async def flush(self) -> None:
        """Wait until every queued ledger row and event is committed."""
        self._events_wanted = True
        self._drain()
        await self._worker.call(lambda conn: None)

    @property
    def closed(self) -> bool:
        return self._worker.closed

    @property
    def failed_writes(self) -> int:
        """Ledger rows or events that could not be saved (each was warned about)."""
        return self._worker.failed_writes

    async def aclose(self) -> None:
        import anyio

        self._drain()
        self._closing = True
        await anyio.to_thread.run_sync(self._worker.close)

    def close(self) -> None:
        self._drain()
        self._closing = True
        self._worker.close()
