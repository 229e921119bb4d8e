"""Checkpoints and ledger rows committed on the asyncio loop's thread, several per
transaction (group commit), without overtaking work queued for the writer thread; and the
same results through the writer thread alone (``synchronous = "full"``)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from taskloom.records import TaskRecord
from taskloom.testing.store_conformance import make_call, make_run
from taskloom_sqlite.store import SqliteStore

pytestmark = pytest.mark.anyio


def _spy_on_thread_jobs(store: SqliteStore) -> list[str]:
    """Counts the jobs given to the writer thread (a spy on the real worker)."""
    jobs: list[str] = []
    worker = store._worker
    real_submit, real_post = worker.submit, worker.post

    def submit(fn: Any, **kw: Any) -> Any:
        jobs.append("submit")
        return real_submit(fn, **kw)

    def post(fn: Any) -> None:
        jobs.append("post")
        real_post(fn)

    worker.submit = submit  # type: ignore[method-assign]
    worker.post = post  # type: ignore[method-assign]
    return jobs


async def test_concurrent_checkpoints_share_one_commit_on_the_loop(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "runs.sqlite")
    try:
        await store.create_run(make_run())
        commits: list[int] = []
        store._worker.conn.set_trace_callback(
            lambda sql: commits.append(threading.get_ident()) if sql == "COMMIT" else None
        )
        jobs = _spy_on_thread_jobs(store)

        async def task(i: int) -> None:
            await store.record_call(make_call(task_id=f"t{i}", n=i))
            await store.save_task(TaskRecord(run_id="run-1", task_id=f"t{i}", state="succeeded", output=i))
            # Committed when save_task returns: another connection sees the row and its call.
            with sqlite3.connect(store.path) as other:
                assert other.execute("SELECT count(*) FROM tasks WHERE task_id = ?", (f"t{i}",)).fetchone() == (1,)
                assert other.execute("SELECT count(*) FROM model_calls WHERE task_id = ?", (f"t{i}",)).fetchone() == (
                    1,
                )

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(task, i)
        assert jobs == [], f"{len(jobs)} jobs went to the writer thread; the loop commits these itself"
        assert commits and set(commits) == {threading.get_ident()}, "committed on the loop's own thread"
        assert len(commits) <= 10, f"{len(commits)} transactions for 200 concurrent checkpoints: they are grouped"
        tasks = await store.get_tasks("run-1")
        assert sorted(t.output for t in tasks) == list(range(200))
        assert len(await store.get_calls("run-1")) == 200
    finally:
        await store.aclose()


async def test_a_checkpoint_never_overtakes_work_queued_for_the_writer_thread(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "runs.sqlite")
    try:
        await store.create_run(make_run())
        row = TaskRecord(run_id="run-1", task_id="t", state="running", attempts=1)
        from taskloom_sqlite.store import _SAVE_TASK, _TASK_JSON

        def slow_older_write(conn: sqlite3.Connection) -> None:
            time.sleep(0.3)  # the thread is busy: the newer checkpoint must wait its turn
            conn.execute(
                _SAVE_TASK, ("run-1", "t", "running", 1, None, None, None, 0, 0, "0", _TASK_JSON(row).decode())
            )

        older = store._worker.submit(slow_older_write)
        done = TaskRecord(run_id="run-1", task_id="t", state="succeeded", attempts=1, output="final")
        await store.save_task(done)
        assert older.done(), "save_task returned before the write queued ahead of it was committed"
        [task] = await store.get_tasks("run-1")
        assert (task.state, task.output) == ("succeeded", "final"), "the older write overwrote the newer one"
    finally:
        await store.aclose()


async def wait_until_the_thread_is_idle(store: SqliteStore) -> None:
    """The loop commits only while the writer thread is idle (else the thread takes the
    batch, which is right but not what these tests look at): let it finish opening the
    file and whatever was queued."""
    await store.flush()
    with anyio.fail_after(10):
        while not store._worker.idle:
            await anyio.sleep(0.01)


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_loop_and_thread_paths_keep_the_same_records(tmp_path: Path, synchronous: Any) -> None:
    store = SqliteStore(tmp_path / "runs.sqlite", synchronous=synchronous)
    try:
        jobs = _spy_on_thread_jobs(store)
        await store.create_run(make_run())
        await wait_until_the_thread_is_idle(store)
        jobs.clear()
        for i in range(5):
            await store.save_task(TaskRecord(run_id="run-1", task_id=f"t{i}", state="running", attempts=1))
            await store.record_call(make_call(task_id=f"t{i}", n=i))
            await store.save_task(TaskRecord(run_id="run-1", task_id=f"t{i}", state="succeeded", output={"i": i}))
        tasks = await store.get_tasks("run-1")
        assert [(t.task_id, t.state, t.output) for t in tasks] == [(f"t{i}", "succeeded", {"i": i}) for i in range(5)]
        assert [c.request_hash for c in await store.get_calls("run-1")] == [f"h{i}" for i in range(5)]
        thread_writes = [j for j in jobs if j == "post"] + [j for j in jobs if j == "submit"]
        if synchronous == "full":  # a sync per commit must not happen on the loop
            assert len(thread_writes) >= 15, "with synchronous = full every write goes to the writer thread"
        else:
            assert jobs.count("post") == 0, "ledger rows rode along with the loop's commits"
    finally:
        await store.aclose()


async def test_an_unexpected_error_in_the_group_commit_reaches_the_waiting_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "runs.sqlite")
    try:
        await store.create_run(make_run())

        def broken(ops: Any) -> bool:
            raise RuntimeError("a bug in the commit path")

        await wait_until_the_thread_is_idle(store)
        monkeypatch.setattr(store, "_commit", broken)
        await store.record_call(make_call())
        with anyio.fail_after(10), pytest.raises(RuntimeError, match="a bug in the commit path"):
            await store.save_task(TaskRecord(run_id="run-1", task_id="t", state="succeeded"))
        assert store.failed_writes == 1, "the queued call row that could not be written is counted"
        monkeypatch.undo()
        await store.save_task(TaskRecord(run_id="run-1", task_id="t", state="succeeded"))
        assert [t.task_id for t in await store.get_tasks("run-1")] == ["t"]
    finally:
        await store.aclose()
