"""The event loop never waits for SQLite: while another connection holds a lock on the file,
an asyncio ticker keeps ticking through opening, cache gets, puts and stats, and store work.

A ticker task sleeps 5 ms at a time and records when it woke; the largest gap between two
wakes is how long the loop was blocked. The locks are held for 0.6 s or more, so a blocked
loop shows a gap at least that long; the bound asserted (0.3 s) leaves room for a loaded
machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from taskloom.records import TaskRecord
from taskloom.testing.store_conformance import make_run
from taskloom_sqlite.cache import SqliteCache
from taskloom_sqlite.store import SqliteStore

pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio"])

HOLD_S = 0.6
MAX_GAP_S = 0.3


class Ticker:
    def __init__(self) -> None:
        self.wakes: list[float] = []

    async def run(self) -> None:
        while True:
            self.wakes.append(time.monotonic())
            await asyncio.sleep(0.005)

    def max_gap(self) -> float:
        return max((b - a for a, b in zip(self.wakes, self.wakes[1:], strict=False)), default=0.0)


@asynccontextmanager
async def ticking() -> AsyncIterator[Ticker]:
    ticker = Ticker()
    task = asyncio.ensure_future(ticker.run())
    await asyncio.sleep(0.02)
    try:
        yield ticker
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def _hold_exclusive(path: Path) -> sqlite3.Connection:
    """Another connection holding the write lock on a file that is still new (no schema, not
    yet WAL): opening it for use must wait until the lock is released."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


async def _release_later(conn: sqlite3.Connection, delay: float) -> None:
    await asyncio.sleep(delay)
    conn.execute("ROLLBACK")
    conn.close()


@pytest.mark.anyio
async def test_opening_a_locked_cache_file_does_not_block_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    blocker = _hold_exclusive(path)
    async with ticking() as ticker:
        release = asyncio.ensure_future(_release_later(blocker, HOLD_S))
        start = time.monotonic()
        cache = SqliteCache(path, busy_timeout=10)  # what kernel.cache does on first use
        made = time.monotonic() - start
        try:
            await cache.set("k", b"v")  # waits (off the loop) for the file to open
            assert await cache.get("k") == b"v"
            waited = time.monotonic() - start
        finally:
            await release
            await cache.aclose()
    assert made < MAX_GAP_S, f"making the cache took {made:.2f} s on the loop"
    assert waited >= HOLD_S * 0.9, "the cache really waited for the other connection's lock"
    assert ticker.max_gap() < MAX_GAP_S, f"the loop was blocked for {ticker.max_gap():.2f} s"


@pytest.mark.anyio
async def test_opening_a_locked_store_file_does_not_block_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    blocker = _hold_exclusive(path)
    async with ticking() as ticker:
        release = asyncio.ensure_future(_release_later(blocker, HOLD_S))
        start = time.monotonic()
        store = SqliteStore(path, busy_timeout=10)  # what kernel.store does on first use
        made = time.monotonic() - start
        try:
            await store.create_run(make_run())
            waited = time.monotonic() - start
            assert (await store.get_run("run-1")) is not None
        finally:
            await release
            await store.aclose()
    assert made < MAX_GAP_S, f"making the store took {made:.2f} s on the loop"
    assert waited >= HOLD_S * 0.9, "the store really waited for the other connection's lock"
    assert ticker.max_gap() < MAX_GAP_S, f"the loop was blocked for {ticker.max_gap():.2f} s"


@pytest.mark.anyio
async def test_cache_get_put_and_stats_under_a_held_write_lock_do_not_block_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = SqliteCache(path, busy_timeout=10)
    try:
        await cache.set("old", b"kept")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock; WAL readers go on
        blocker.execute("UPDATE counters SET value = value WHERE name = 'hits'")
        async with ticking() as ticker:
            release = asyncio.ensure_future(_release_later(blocker, HOLD_S))
            start = time.monotonic()
            assert await cache.get("old") == b"kept"
            assert cache.stats()["entries"] == 1
            got_at = time.monotonic() - start
            await cache.set("new", b"written")  # the lock is taken: waits off the loop
            set_at = time.monotonic() - start
            await release
        assert got_at < MAX_GAP_S, "a read does not wait for a writer in WAL mode"
        assert set_at >= HOLD_S * 0.9, "the put really waited for the lock"
        assert ticker.max_gap() < MAX_GAP_S, f"the loop was blocked for {ticker.max_gap():.2f} s"
        assert await cache.get("new") == b"written"
        assert cache.stats()["entries"] == 2
    finally:
        await cache.aclose()


@pytest.mark.anyio
async def test_store_checkpoint_under_a_held_write_lock_does_not_block_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    store = SqliteStore(path, busy_timeout=10)
    try:
        await store.create_run(make_run())
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        blocker.execute("UPDATE runs SET status = status")
        async with ticking() as ticker:
            release = asyncio.ensure_future(_release_later(blocker, HOLD_S))
            start = time.monotonic()
            await store.save_task(TaskRecord(run_id="run-1", task_id="t", state="succeeded"))
            waited = time.monotonic() - start
            await release
        assert waited >= HOLD_S * 0.9
        assert ticker.max_gap() < MAX_GAP_S, f"the loop was blocked for {ticker.max_gap():.2f} s"
        assert [t.task_id for t in await store.get_tasks("run-1")] == ["t"]
    finally:
        await store.aclose()
