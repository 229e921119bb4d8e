"""The real SQLite run store failing in the middle of a workflow run: a full disk
(``PRAGMA max_page_count`` on the store's own connection, which is how SQLite reports
SQLITE_FULL) and a database locked by another connection for longer than the busy
timeout. The run ends ``failed`` with the store's message, the running task is cancelled,
finished checkpoints survive, and the run resumes once the store works again."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from taskloom import hookimpl, load_kernel
from taskloom.testing import register_plugin
from taskloom.types import Event
from taskloom.workflow import Workflow, resume_workflow, run_workflow

pytestmark = pytest.mark.anyio

BIG = "x" * 40_000  # an answer that needs new database pages


class Trigger:
    """Runs ``action`` when task ``big`` has started (its 'running' checkpoint is saved)."""

    def __init__(self) -> None:
        self.action: Callable[[], None] | None = None

    @hookimpl
    def taskloom_event(self, event: Event) -> None:
        if event.kind == "task.start" and event.task_id == "big" and self.action is not None:
            action, self.action = self.action, None
            action()


@pytest.fixture
def trigger() -> Iterator[Trigger]:
    plugin = Trigger()
    with register_plugin(plugin, "store-fault-trigger"):
        yield plugin


def _kernel(db: Path, slow_delay: float, busy_timeout: float = 5.0) -> Any:
    return load_kernel(
        {
            "taskloom": {
                "store": "sqlite",
                "cache": "none",
                "plugins": ["scripted", "sqlite", "local-executor", "prices", "store-fault-trigger"],
            },
            "models": {
                "quick": {"provider": "scripted", "default": "q({prompt})"},
                "bigm": {"provider": "scripted", "responses": [{"text": BIG, "delay": 0.2}]},
                "slow": {"provider": "scripted", "responses": [{"text": "slow done", "delay": slow_delay}]},
            },
            "plugins": {"sqlite": {"store_path": str(db), "busy_timeout": busy_timeout}},
        }
    )


def _workflow() -> Any:
    return (
        Workflow("faults")
        .agent("quick", model="quick")
        .agent("bigm", model="bigm")
        .agent("slow", model="slow")
        .task("first", agent="quick", prompt="first")
        .task("big", agent="bigm", prompt="big", needs=["first"])
        .task("after", agent="quick", prompt="after {{ outputs.first }}", needs=["big", "first"])
        .task("slow", agent="slow", prompt="slow")
        .build()
    )


def _read(db: Path, run_id: str) -> tuple[str, dict[str, str]]:
    con = sqlite3.connect(db, timeout=10)
    try:
        status = con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        tasks = dict(con.execute("SELECT task_id, state FROM tasks WHERE run_id = ?", (run_id,)).fetchall())
    finally:
        con.close()
    return status, tasks


async def _resume_and_check(db: Path, run_id: str) -> None:
    kernel = _kernel(db, slow_delay=0.01)
    try:
        result = await resume_workflow(kernel, run_id)
        assert result.status == "succeeded", result.run.error
        assert result.output("big") == BIG and result.output("after") == "q(after q(first))"
        assert result.tasks["first"].attempts == 1  # not run again
        calls = await kernel.store.get_calls(run_id)
        assert sorted(c.task_id for c in calls if c.task_id == "first") == ["first"]
    finally:
        await kernel.aclose()
    assert _read(db, run_id) == (
        "succeeded", {"first": "succeeded", "big": "succeeded", "after": "succeeded", "slow": "succeeded"},
    )  # fmt: skip


async def test_disk_full_mid_run(tmp_path: Path, trigger: Trigger) -> None:
    db = tmp_path / "runs.sqlite"
    kernel = _kernel(db, slow_delay=30)
    store = kernel.store

    def fill_the_disk() -> None:
        def limit(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        store._worker.control(limit)  # on the store's own connection, between its transactions

    trigger.action = fill_the_disk
    t0 = time.monotonic()
    try:
        with anyio.fail_after(20):
            result = await run_workflow(kernel, _workflow(), run_id="full-1")
    finally:
        await kernel.aclose()
    assert time.monotonic() - t0 < 15, "the slow task was not cancelled"
    assert result.status == "failed"
    error = result.run.error or ""
    assert error.startswith("the run store (sqlite) failed while saving task 'big' (succeeded): DatabaseFull: "), error
    assert f"{db}: the disk is full" in error and "Free space and resume" in error
    states = {k: v.state for k, v in result.tasks.items()}
    assert states == {"first": "succeeded", "big": "succeeded", "after": "pending", "slow": "interrupted"}

    # Another connection has no page limit: the file is consistent, first's checkpoint is there.
    status, tasks = _read(db, "full-1")
    assert tasks["first"] == "succeeded" and tasks["big"] == "running"
    assert status in ("failed", "running")  # "failed" if the small final write still fitted
    await _resume_and_check(db, "full-1")


async def test_database_locked_mid_run(tmp_path: Path, trigger: Trigger) -> None:
    db = tmp_path / "runs.sqlite"
    kernel = _kernel(db, slow_delay=30, busy_timeout=0.2)
    locker = sqlite3.connect(db, timeout=10, isolation_level=None)

    def lock() -> None:
        locker.execute("BEGIN EXCLUSIVE")  # held until the run has ended

    trigger.action = lock
    t0 = time.monotonic()
    try:
        with anyio.fail_after(20):
            result = await run_workflow(kernel, _workflow(), run_id="lock-1")
        assert time.monotonic() - t0 < 15, "the slow task was not cancelled"
        assert result.status == "failed"
        error = result.run.error or ""
        assert error.startswith("the run store (sqlite) failed while saving task 'big' (succeeded): DatabaseLocked: ")
        assert f"{db} is locked by another connection" in error
        assert "could not save the run's final status: DatabaseLocked" in error
        assert {k: v.state for k, v in result.tasks.items()} == {
            "first": "succeeded", "big": "succeeded", "after": "pending", "slow": "interrupted",
        }  # fmt: skip
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        await kernel.aclose()
    status, tasks = _read(db, "lock-1")
    assert status == "running" and tasks["first"] == "succeeded" and tasks["big"] == "running"
    await _resume_and_check(db, "lock-1")
