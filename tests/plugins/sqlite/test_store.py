"""The SQLite run store: schema and migrations, bad paths, locks, full disk, two processes,
SIGKILL mid-write, and the kernel wiring (default store, gateway ledger, agent tool costs)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from taskloom import Agent, hookimpl, load_kernel, run_agent
from taskloom.records import RunRecord, TaskRecord
from taskloom.testing import register_plugin
from taskloom.testing.store_conformance import make_call, make_run
from taskloom.types import Message, ModelRequest, RequestMeta
from taskloom_sqlite.db import DatabaseFull, DatabaseLocked, DatabasePathError, SchemaTooNew, StoreError
from taskloom_sqlite.store import SCHEMA, SqliteStore


def _pragma(path: Path, name: str) -> Any:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


# ---------------------------------------------------------------- opening


def test_new_file_is_wal_with_schema_version(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "runs.sqlite")
    store.close()
    assert _pragma(tmp_path / "runs.sqlite", "journal_mode") == "wal"
    assert _pragma(tmp_path / "runs.sqlite", "user_version") == SCHEMA.version
    assert _pragma(tmp_path / "runs.sqlite", "application_id") == SCHEMA.application_id


def test_newer_schema_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA.version + 7}")
    with pytest.raises(SchemaTooNew) as info:
        SqliteStore(path)
    message = str(info.value)
    assert str(path) in message
    assert f"schema version {SCHEMA.version + 7}" in message and f"up to version {SCHEMA.version}" in message
    assert "upgrade taskloom-sqlite" in message


def test_another_applications_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE x (y)")
        conn.execute("PRAGMA user_version=3")
    with pytest.raises(StoreError, match="not a taskloom run store"):
        SqliteStore(path)


def test_cache_file_is_not_a_store(tmp_path: Path) -> None:
    from taskloom_sqlite.cache import SqliteCache

    SqliteCache(tmp_path / "c.sqlite").close()
    with pytest.raises(StoreError, match="not a taskloom run store"):
        SqliteStore(tmp_path / "c.sqlite")


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "deeper" / "runs.sqlite"
    with pytest.raises(DatabasePathError) as info:
        SqliteStore(path)
    assert str(path) in str(info.value)
    assert "does not exist" in str(info.value) and "store_path" in str(info.value)
    assert not path.parent.exists(), "a configured path's directory is not created behind the user's back"


def test_unwritable_location_is_a_clear_error() -> None:
    path = Path("/proc/taskloom-runs.sqlite")  # not writable even by root
    with pytest.raises(DatabasePathError) as info:
        SqliteStore(path)
    assert str(path) in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions (see the two tests below)")
def test_read_only_directory_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(DatabasePathError, match="read-only"):
            SqliteStore(folder / "runs.sqlite")
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_directory_that_refuses_new_files_is_a_clear_error_even_for_root() -> None:
    # sysfs refuses to create regular files for every user, root included (EACCES), while
    # os.access says root may write there: only trying to create a file finds out.
    path = Path("/sys/kernel/taskloom-runs.sqlite")
    with pytest.raises(DatabasePathError) as info:
        SqliteStore(path)
    message = str(info.value)
    assert str(path) in message and "/sys/kernel is read-only" in message and "store_path" in message
    assert not path.exists()


_READ_ONLY_MOUNT = textwrap.dedent(
    """
    set -e
    mount --bind "$1" "$1"
    mount -o remount,bind,ro "$1"
    exec "$2" -c '
    import sys
    from taskloom_sqlite.db import DatabasePathError
    from taskloom_sqlite.store import SqliteStore
    try:
        SqliteStore(sys.argv[1] + "/runs.sqlite")
    except DatabasePathError as exc:
        print(exc)
    else:
        print("OPENED")
    ' "$1"
    """
)


def test_read_only_mount_is_a_clear_error(tmp_path: Path) -> None:
    """A real read-only filesystem (a read-only bind mount in a private mount namespace, so
    nothing outside this test sees it): root cannot write there either."""
    import shutil

    folder = tmp_path / "ro"
    folder.mkdir()
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to make a read-only mount")
    probe = subprocess.run([unshare, "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    result = subprocess.run(
        [unshare, "-m", "--propagation", "private", "sh", "-c", _READ_ONLY_MOUNT, "sh", str(folder), sys.executable],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    assert message != "OPENED", "a store must not open in a read-only directory"
    assert f"{folder}/runs.sqlite" in message and "read-only" in message, message
    assert not (folder / "runs.sqlite").exists()


def test_kernel_error_names_the_configured_path(tmp_path: Path, config: dict[str, Any]) -> None:
    config["plugins"]["sqlite"]["store_path"] = str(tmp_path / "missing" / "runs.sqlite")
    kernel = load_kernel(config)
    with pytest.raises(DatabasePathError, match="missing"):
        _ = kernel.store


@pytest.mark.anyio
async def test_default_store_is_sqlite_in_the_user_data_dir() -> None:
    kernel = load_kernel({"taskloom": {"cache": "none"}})
    store = kernel.store
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == Path(os.environ["XDG_DATA_HOME"]) / "taskloom" / "runs.sqlite"
        await store.ready()  # made inside the event loop: opened on the writer thread
        assert store.path.exists()
    finally:
        await kernel.aclose()


# ---------------------------------------------------------------- failures during a run


@pytest.mark.anyio
async def test_locked_database_is_reported_and_nothing_finished_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    store = SqliteStore(path, busy_timeout=0.1)
    try:
        await store.create_run(make_run())
        await store.save_task(TaskRecord(run_id="run-1", task_id="done", state="succeeded", output="kept"))
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            await store.record_call(make_call(n=1))  # queued: it must survive the lock
            with pytest.raises(DatabaseLocked) as info:
                await store.save_task(TaskRecord(run_id="run-1", task_id="next", state="succeeded"))
            assert str(path) in str(info.value) and "locked" in str(info.value)
            assert "busy_timeout" in str(info.value)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await store.save_task(TaskRecord(run_id="run-1", task_id="next", state="succeeded"))
        tasks = {t.task_id: t for t in await store.get_tasks("run-1")}
        assert tasks["done"].output == "kept" and tasks["next"].state == "succeeded"
        assert [c.request_hash for c in await store.get_calls("run-1")] == ["h1"], "the queued call was retried"
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_full_disk_is_reported_and_nothing_finished_is_lost(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "runs.sqlite")
    try:
        await store.create_run(make_run())
        await store.save_task(TaskRecord(run_id="run-1", task_id="done", state="succeeded", output="kept"))
        # A real SQLITE_FULL: cap the file at its current size for the store's connection.
        conn = store._worker.conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        await store._worker.call(lambda c: None)  # the worker is idle between jobs
        conn.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(DatabaseFull) as info:
            await store.save_task(TaskRecord(run_id="run-1", task_id="big", state="succeeded", output="x" * 200_000))
        assert "disk is full" in str(info.value) and str(store.path) in str(info.value)
        tasks = await store.get_tasks("run-1")
        assert [t.task_id for t in tasks] == ["done"] and tasks[0].output == "kept"
        conn.execute("PRAGMA max_page_count=1073741823")
        await store.save_task(TaskRecord(run_id="run-1", task_id="big", state="succeeded", output="x" * 200_000))
        assert [t.task_id for t in await store.get_tasks("run-1")] == ["done", "big"]
    finally:
        await store.aclose()
    with sqlite3.connect(store.path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ---------------------------------------------------------------- processes

_WRITER = textwrap.dedent(
    """
    import sys, time, anyio
    from taskloom.records import RunRecord, TaskRecord
    from taskloom.testing.store_conformance import make_call
    from taskloom_sqlite.store import SqliteStore

    path, name, runs, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    async def main():
        store = SqliteStore(path, busy_timeout=30)
        i = 0
        while runs == 0 or i < runs:
            run_id = f"{name}-{i}"
            await store.create_run(RunRecord(id=run_id, workflow=name, started_at=time.time()))
            for t in range(tasks):
                await store.save_task(TaskRecord(run_id=run_id, task_id=f"t{t}", state="running", attempts=1))
                await store.record_call(make_call(run_id=run_id, task_id=f"t{t}", n=t))
                await store.save_task(TaskRecord(run_id=run_id, task_id=f"t{t}", state="succeeded", attempts=1,
                                                 output={"i": i, "t": t, "pad": "x" * 500}))
            run = await store.get_run(run_id)
            run.status = "succeeded"
            await store.update_run(run)
            i += 1
        await store.aclose()

    anyio.run(main)
    """
)


def _writer(path: Path, name: str, runs: int, tasks: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), name, str(runs), str(tasks)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.anyio
async def test_two_processes_write_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    SqliteStore(path).close()
    procs = [_writer(path, name, 15, 10) for name in ("alpha", "beta")]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    store = SqliteStore(path)
    try:
        runs = await store.list_runs(limit=1000)
        assert len(runs) == 30 and all(r.status == "succeeded" for r in runs)
        for run in runs:
            tasks = await store.get_tasks(run.id)
            assert len(tasks) == 10 and all(t.state == "succeeded" for t in tasks)
            assert len(await store.get_calls(run.id)) == 10
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_sigkill_mid_write_leaves_a_consistent_database(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    SqliteStore(path).close()
    proc = _writer(path, "victim", 0, 20)
    deadline = time.monotonic() + 60
    with sqlite3.connect(path) as conn:
        while conn.execute("SELECT count(*) FROM tasks").fetchone()[0] < 300:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # Every row is whole: its JSON parses and agrees with its columns.
        for run_id, task_id, state, data in conn.execute("SELECT run_id, task_id, state, data FROM tasks"):
            record = TaskRecord.model_validate_json(data)
            assert (record.run_id, record.task_id, record.state) == (run_id, task_id, state)
            if state == "succeeded":
                assert record.output["pad"] == "x" * 500
        for (data,) in conn.execute("SELECT data FROM runs"):
            RunRecord.model_validate_json(data)
        # A task that succeeded was checkpointed after its call was queued: the call is there.
        missing = conn.execute(
            """SELECT count(*) FROM tasks t WHERE t.state = 'succeeded' AND NOT EXISTS
               (SELECT 1 FROM model_calls c WHERE c.run_id = t.run_id AND c.task_id = t.task_id)"""
        ).fetchone()[0]
        assert missing == 0
    store = SqliteStore(path)  # opens (and would recover the WAL) without complaint
    try:
        assert len(await store.list_runs(limit=10_000)) >= 15
    finally:
        await store.aclose()


# ---------------------------------------------------------------- kernel wiring


@pytest.mark.anyio
async def test_gateway_records_calls_and_events(config: dict[str, Any]) -> None:
    config["plugins"]["sqlite"]["record_events"] = True
    kernel = load_kernel(config)
    try:
        store = kernel.store
        assert isinstance(store, SqliteStore)
        request = ModelRequest(model="fake", messages=[Message.user("hi")])
        request.metadata.run_id, request.metadata.task_id = "r1", "t1"
        response = await kernel.gateway.complete(request)
        assert response.text == "echo: hi"
        again = await kernel.gateway.complete(request.model_copy(deep=True))
        assert again.cached
        await store.flush()
        calls = await store.get_calls("r1")
        assert [c.cached for c in calls] == [False, True]
        assert (
            calls[0].cost.total
            == Decimal(calls[0].usage.input_tokens) / 1_000_000 + Decimal(calls[0].usage.output_tokens * 2) / 1_000_000
        )
        assert calls[0].request_hash and calls[0].request_hash == calls[1].request_hash
        events = await store.get_events("r1")
        assert [e.kind for e in events].count("model.call") == 2
    finally:
        await kernel.aclose()


@pytest.mark.anyio
async def test_events_are_recorded_by_default(config: dict[str, Any]) -> None:
    assert "record_events" not in config["plugins"]["sqlite"]
    kernel = load_kernel(config)
    try:
        store = kernel.store
        request = ModelRequest(model="fake", messages=[Message.user("hi")])
        request.metadata.run_id = "r2"
        await kernel.gateway.complete(request)
        await store.flush()
        events = await store.get_events("r2")
        assert [e.kind for e in events].count("model.call") == 1, [e.kind for e in events]
    finally:
        await kernel.aclose()


@pytest.mark.anyio
async def test_record_events_false_keeps_none(config: dict[str, Any]) -> None:
    config["plugins"]["sqlite"]["record_events"] = False
    kernel = load_kernel(config)
    try:
        request = ModelRequest(model="fake", messages=[Message.user("hi")])
        request.metadata.run_id = "r3"
        await kernel.gateway.complete(request)
        await kernel.store.flush()
        assert await kernel.store.get_events("r3") == []
        assert len(await kernel.store.get_calls("r3")) == 1
    finally:
        await kernel.aclose()


@pytest.mark.anyio
async def test_events_are_written_in_batches_in_order(tmp_path: Path) -> None:
    from taskloom.types import Event

    store = SqliteStore(tmp_path / "runs.sqlite")
    posts = 0
    real_post = store._worker.post

    def counting_post(fn: Any) -> None:  # a spy on the real worker, which still does the work
        nonlocal posts
        posts += 1
        real_post(fn)

    store._worker.post = counting_post  # type: ignore[method-assign]
    try:
        await store.create_run(make_run())
        for i in range(2000):
            store.post_event(Event(kind="task.progress", run_id="run-1", task_id=f"t{i}", data={"i": i}))
        await store.save_task(TaskRecord(run_id="run-1", task_id="t", state="succeeded"))
        # 2,000 events fill several batches: the writer thread commits them by itself (no
        # flush, no read), in order, soon after (within ~0.1 s; 10 s allowed for a loaded box).
        deadline = time.monotonic() + 10
        with sqlite3.connect(store.path) as conn:
            while True:
                rows = conn.execute("SELECT task_id, data FROM events WHERE run_id = 'run-1' ORDER BY id").fetchall()
                if len(rows) >= 2000 or time.monotonic() > deadline:
                    break
                await anyio.sleep(0.01)
        assert [r[0] for r in rows] == [f"t{i}" for i in range(2000)]
        assert json.loads(rows[-1][1]) == {"i": 1999}
        assert posts <= 20, f"{posts} writer jobs for 2,000 events: they should be batched"
        store.post_event(Event(kind="late", run_id="run-1"))
        assert [e.kind for e in await store.get_events("run-1")][-1] == "late", "reads see buffered events"
    finally:
        await store.aclose()


class _Tools:
    @hookimpl
    def taskloom_register_tools(self, register: Any, settings: Any) -> None:
        def add(a: int, b: int, api_key: str = "") -> int:
            """Add two integers."""
            return a + b

        register(add)


@pytest.mark.anyio
async def test_agent_tool_calls_are_priced_and_redacted(config: dict[str, Any]) -> None:
    with register_plugin(_Tools(), "test-tools"):
        kernel = load_kernel(config)
    try:
        provider = kernel.provider("fake")
        provider.add_tool_call("add", {"a": 2, "b": 3, "api_key": "sk-secret"}).add_text("5")
        agent = Agent(name="calc", model="fake", tools=["add"])
        result = await run_agent(kernel, agent, "2+3?", meta=RequestMeta(run_id="r9"))
        assert result.text == "5"
        store = kernel.store
        await store.flush()
        (tool_call,) = await store.get_tool_calls("r9")
        assert tool_call.name == "add" and tool_call.cost == Decimal("0.005")
        assert tool_call.arguments["api_key"] == "**********"
        with sqlite3.connect(store.path) as conn:
            raw = "".join(str(r) for r in conn.execute("SELECT * FROM tool_calls"))
        assert "sk-secret" not in raw
        assert result.cost.tools == Decimal("0.005")
    finally:
        await kernel.aclose()


def test_tool_prices_are_validated(config: dict[str, Any]) -> None:
    config["plugins"]["sqlite"]["tool_prices"] = {"add": -1}
    kernel = load_kernel(config)
    (failed,) = [i for i in kernel.plugins.failed if i.name == "sqlite"]
    assert "tool_prices" in (failed.reason or "") and "negative" in (failed.reason or "")


def test_every_row_keeps_exact_decimal_text(tmp_path: Path) -> None:
    import anyio

    async def main() -> None:
        store = SqliteStore(tmp_path / "runs.sqlite")
        await store.create_run(make_run())
        await store.record_call(make_call(n=0))
        await store.aclose()

    anyio.run(main)
    with sqlite3.connect(tmp_path / "runs.sqlite") as conn:
        cost, data = conn.execute("SELECT cost, data FROM model_calls").fetchone()
    assert cost == "0.000027" and json.loads(data)["cost"]["total"] == "0.000027"
