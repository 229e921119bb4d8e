"""``store = "sqlite"``: the run store in one SQLite file.

Runs, task checkpoints, model calls, tool calls and events. Every record keeps its full
JSON (exact round trip: decimals stay decimal text) next to the columns reports query.
Checkpoints (``save_task``, ``create_run``, ``update_run``) are committed before they
return; ledger rows and events are queued and committed with the next transaction, at the
latest with the next checkpoint or ``flush()`` (see :mod:`taskloom_sqlite.worker`); events
are buffered and written in batches.

Durability: WAL with ``synchronous=NORMAL`` by default. A commit is then safe from the
process dying at any moment (SIGKILL, OOM, Ctrl-C): the WAL frames are in the OS before
``COMMIT`` returns. A power cut may lose the last commits but never leaves a damaged file;
resume then reruns those tasks. ``synchronous = "full"`` also syncs every commit to disk.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pydantic_core import to_json
from taskloom.records import CallRecord, RunRecord, TaskRecord, ToolCallRecord
from taskloom.types import Event

from .db import Schema, Synchronous, check_path, open_database
from .worker import Worker, in_event_loop

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
_INSERT_EVENTS = """INSERT INTO events (time, kind, run_id, task_id, agent, data)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]')
    FROM json_each(?) ORDER BY key"""


_EVENTS_EVERY_S = 0.05
"""Longest an event waits in the buffer while the writer thread is awake."""
_EVENTS_BATCH = 500
_EVENTS_MAX = 10_000
"""Buffered events that make the writer thread write them at once."""


class _EventBatch:
    """A posted job writing a batch of events (kept whole if it must be retried).

    The batch goes to SQLite as one JSON array unpacked by ``json_each`` in a single
    statement: one serialisation call and one step, so the writer thread holds the GIL
    (which the event loop needs) for a few microseconds per event, not one bind per row."""

    __slots__ = ("events", "rows")

    def __init__(self, events: list[Event]) -> None:
        self.events: list[Event] | None = events
        self.rows = ""

    def __call__(self, conn: sqlite3.Connection) -> None:
        if self.events is not None:
            # Serialised on the writer thread: an event is not changed after it is emitted.
            self.rows = to_json(
                [(e.time, e.kind, e.run_id, e.task_id, e.agent, e.data) for e in self.events], fallback=str
            ).decode()
            self.events = None
        conn.execute(_INSERT_EVENTS, (self.rows,))


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
        self._events: list[Event] = []
        self._events_lock = threading.Lock()
        self._events_since = 0.0
        self._events_wanted = False
        """A reader or flush() wants the buffered events written now."""

        def opener() -> sqlite3.Connection:
            return open_database(self.path, SCHEMA, key=key, busy_timeout=busy_timeout, synchronous=synchronous)

        self._worker = Worker(
            what=WHAT,
            path=self.path,
            name="taskloom-sqlite-store",
            opener=opener,
            collect=self._collect_events,
            collect_every=_EVENTS_EVERY_S,
        )
        if not in_event_loop():
            error = self._worker.opened.exception()  # waits: no loop to keep responsive
            if error is not None:
                self._worker.close()
                raise error

    async def ready(self) -> None:
        """Wait until the file is open (without blocking the loop); raise why it cannot be."""
        await self._worker.ready()

    # ------------------------------------------------------------------ runs

    async def create_run(self, run: RunRecord) -> None:
        row = (run.id, *_run_row(run))

        def job(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(_INSERT_RUN, row)
            except sqlite3.IntegrityError:
                raise ValueError(f"run {run.id} already exists in {self.path}") from None

        await self._worker.call(job)

    async def update_run(self, run: RunRecord) -> None:
        row = (*_run_row(run), run.id)

        def job(conn: sqlite3.Connection) -> None:
            if conn.execute(_UPDATE_RUN, row).rowcount == 0:
                raise KeyError(f"unknown run {run.id} in {self.path}")

        await self._worker.call(job)

    async def get_run(self, run_id: str) -> RunRecord | None:
        def job(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT data FROM runs WHERE id = ?", (run_id,)).fetchone()
            return row[0] if row else None

        data = await self._worker.call(job, write=False)
        return RunRecord.model_validate_json(data) if data is not None else None

    async def list_runs(self, limit: int = 50) -> list[RunRecord]:
        def job(conn: sqlite3.Connection) -> list[str]:
            sql = "SELECT data FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?"
            return [r[0] for r in conn.execute(sql, (limit,))]

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
            task.model_dump_json(),
        )
        await self._worker.call(lambda conn: conn.execute(_SAVE_TASK, row))

    async def get_tasks(self, run_id: str) -> list[TaskRecord]:
        def job(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT data FROM tasks WHERE run_id = ? ORDER BY seq", (run_id,))]

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
            call.model_dump_json(),
        )
        self._worker.post(lambda conn: conn.execute(_INSERT_CALL, row))

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
            call.model_dump_json(),
        )
        self._worker.post(lambda conn: conn.execute(_INSERT_TOOL_CALL, row))

    async def record_event(self, event: Event) -> None:
        self.post_event(event)

    def post_event(self, event: Event) -> None:
        """Keep an event without waiting (for the synchronous progress-sink hook).

        Events are buffered and written together by the writer thread, a few hundred at a
        time: once ``_EVENTS_BATCH`` have gathered or the oldest is ``_EVENTS_EVERY_S`` old
        (checked before each of its transactions and every ``_EVENTS_EVERY_S`` when idle,
        so within about 0.1 s), and at ``flush()``, ``get_events()`` and close. Nothing
        is queued per event."""
        with self._events_lock:
            self._events.append(event)
            n = len(self._events)
        if n == 1:
            self._events_since = time.monotonic()
        elif n >= _EVENTS_MAX and not self._worker.closed:
            if self._worker.open_error is not None:
                self._take_events()  # the file never opened: nothing will write them
            else:
                self._worker.post(_EventBatch(self._take_events()))

    def _take_events(self) -> list[Event]:
        with self._events_lock:
            events, self._events = self._events, []
        return events

    def _collect_events(self) -> _EventBatch | None:
        """On the writer thread, before each batch: the buffered events as one job, when
        enough have gathered, the oldest is ``_EVENTS_EVERY_S`` old, or someone waits.

        Taking them with every transaction would add a statement (and GIL hand-offs, which
        cost most when the loop is busy) to each checkpoint; this way a busy run writes
        events a few hundred at a time."""
        n = len(self._events)
        if not n:
            return None
        if not (
            self._events_wanted
            or n >= _EVENTS_BATCH
            or time.monotonic() - self._events_since >= _EVENTS_EVERY_S
            or self._worker.closed
        ):
            return None
        self._events_wanted = False
        return _EventBatch(self._take_events())

    async def get_calls(self, run_id: str) -> list[CallRecord]:
        def job(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT data FROM model_calls WHERE run_id = ? ORDER BY id", (run_id,))]

        return [CallRecord.model_validate_json(d) for d in await self._worker.call(job, write=False)]

    async def get_tool_calls(self, run_id: str) -> list[ToolCallRecord]:
        def job(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT data FROM tool_calls WHERE run_id = ? ORDER BY id", (run_id,))]

        return [ToolCallRecord.model_validate_json(d) for d in await self._worker.call(job, write=False)]

    async def get_events(self, run_id: str) -> list[Event]:
        def job(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            sql = "SELECT time, kind, run_id, task_id, agent, data FROM events WHERE run_id = ? ORDER BY id"
            return list(conn.execute(sql, (run_id,)))

        self._events_wanted = True
        rows = await self._worker.call(job, write=False)
        return [Event(time=t, kind=k, run_id=r, task_id=ti, agent=a, data=json.loads(d)) for t, k, r, ti, a, d in rows]

    # ------------------------------------------------------------------ lifecycle

    async def flush(self) -> None:
        """Wait until every queued ledger row and event is committed."""
        self._events_wanted = True
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

        await anyio.to_thread.run_sync(self._worker.close)

    def close(self) -> None:
        self._worker.close()
