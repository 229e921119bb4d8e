"""The SQLite response cache beyond the conformance suite: damaged files, bad paths,
several processes, counters across processes, and the gateway never failing because of it."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from taskloom import load_kernel
from taskloom.types import Message, ModelRequest
from taskloom_sqlite.cache import SCHEMA, SqliteCache


@pytest.mark.anyio
async def test_garbage_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database at all " * 200)
    with caplog.at_level(logging.WARNING, logger="taskloom.sqlite"):
        cache = SqliteCache(path)  # made inside the event loop: opened on the writer thread
        assert await cache.ready()
    try:
        assert cache.disabled is None
        moved = list(tmp_path.glob("cache.sqlite.corrupt-*"))
        assert len(moved) == 1 and moved[0].read_bytes().startswith(b"this is not")
        assert "moved it to cache.sqlite.corrupt-" in caplog.text and str(path) in caplog.text
        await cache.set("k", b"v")
        assert await cache.get("k") == b"v"
    finally:
        await cache.aclose()


@pytest.mark.anyio
async def test_damaged_pages_never_fail_and_the_file_is_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.sqlite"
    cache = SqliteCache(path)
    for i in range(200):
        await cache.set(f"k{i}", b"v" * 1000)
    await cache.aclose()
    with sqlite3.connect(path) as conn:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[page : len(data)] = b"\xff" * (len(data) - page)  # every page but the header page
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="taskloom.sqlite"):
        cache = SqliteCache(path)
        try:
            assert await cache.get("k1") is None  # a miss, not an exception
            await cache.set("new", b"value")  # no exception either
            await cache.flush()
            await cache.set("after", b"recovered")
            assert await cache.get("after") == b"recovered"
            assert cache.stats()["misses"] >= 1
        finally:
            await cache.aclose()
    assert list(tmp_path.glob("cache.sqlite.corrupt-*")), caplog.text
    assert "damaged" in caplog.text or "unreadable" in caplog.text


@pytest.mark.anyio
async def test_missing_directory_turns_the_cache_off_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "missing" / "cache.sqlite"
    with caplog.at_level(logging.WARNING, logger="taskloom.sqlite"):
        cache = SqliteCache(path)
    assert cache.disabled and str(path) in cache.disabled and "does not exist" in cache.disabled
    assert str(path) in caplog.text
    await cache.set("k", b"v")
    assert await cache.get("k") is None
    assert await cache.invalidate() == 0
    await cache.aclose()


@pytest.mark.anyio
async def test_newer_schema_turns_the_cache_off_and_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    SqliteCache(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA.version + 1}")
    cache = SqliteCache(path)
    assert not await cache.ready()
    assert cache.disabled and f"version {SCHEMA.version + 1}" in cache.disabled
    assert not list(tmp_path.glob("*.corrupt-*")), "a newer taskloom's cache is not ours to move"
    await cache.aclose()


@pytest.mark.anyio
async def test_gateway_works_when_the_cache_cannot_open(tmp_path: Path, config: dict[str, Any]) -> None:
    config["plugins"]["sqlite"]["cache_path"] = str(tmp_path / "nowhere" / "cache.sqlite")
    kernel = load_kernel(config)
    try:
        for _ in range(2):
            response = await kernel.gateway.complete(ModelRequest(model="fake", messages=[Message.user("hi")]))
            assert response.text == "echo: hi" and not response.cached
    finally:
        await kernel.aclose()


@pytest.mark.anyio
async def test_default_cache_lives_in_the_user_cache_dir(config: dict[str, Any]) -> None:
    import os

    del config["plugins"]["sqlite"]["cache_path"]
    kernel = load_kernel(config)
    try:
        cache = kernel.cache
        assert isinstance(cache, SqliteCache)
        assert cache.path == Path(os.environ["XDG_CACHE_HOME"]) / "taskloom" / "cache.sqlite"
        request = ModelRequest(model="fake", messages=[Message.user("hi")])
        await kernel.gateway.complete(request)
        assert (await kernel.gateway.complete(request.model_copy(deep=True))).cached
    finally:
        await kernel.aclose()


@pytest.mark.anyio
async def test_expired_entries_are_swept_and_counted(tmp_path: Path) -> None:
    cache = SqliteCache(tmp_path / "c.sqlite", max_entries=3)
    try:
        await cache.set("old", b"x", ttl=0.01)
        import anyio

        await anyio.sleep(0.05)
        for key in ("a", "b", "c"):
            await cache.set(key, b"y")
        stats = cache.stats()
        assert stats["entries"] == 3 and stats["expirations"] == 1 and stats["evictions"] == 0
    finally:
        await cache.aclose()


_USER = textwrap.dedent(
    """
    import sys, anyio
    from taskloom_sqlite.cache import SqliteCache

    path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

    async def main():
        cache = SqliteCache(path, busy_timeout=30)
        for i in range(n):
            await cache.set(f"{name}:{i}", f"{name}-{i}".encode())
            assert await cache.get(f"{name}:{i}") == f"{name}-{i}".encode()
            await cache.get(f"absent:{name}:{i}")
        await cache.aclose()

    anyio.run(main)
    """
)


@pytest.mark.anyio
async def test_several_processes_share_the_file_and_the_counters(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    SqliteCache(path).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", _USER, str(path), name, "300"], stderr=subprocess.PIPE)
        for name in ("p1", "p2", "p3")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    cache = SqliteCache(path)
    try:
        assert await cache.ready()
        stats = cache.stats()
        assert stats["entries"] == 900
        assert stats["hits"] == 900 and stats["misses"] == 900
        for name in ("p1", "p2", "p3"):
            assert await cache.get(f"{name}:299") == f"{name}-299".encode()
    finally:
        await cache.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*), sum(size) FROM entries").fetchone() == (
            stats["entries"],
            stats["bytes"],
        ), "the entries/bytes counters agree with the table"


_RACER = textwrap.dedent(
    """
    import json, sys, time, anyio
    from taskloom_sqlite.cache import SqliteCache

    path, me, other, n, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])

    async def main():
        cache = SqliteCache(path, busy_timeout=30, max_entries=500)
        assert await cache.ready(), cache.disabled
        while time.time() < start:  # both processes begin together
            await anyio.sleep(0.001)
        hits = misses = 0
        for i in range(n):
            await cache.set(f"{me}:{i}", f"{me}-{i}".encode() * 10)
            for key in (f"{me}:{i}", f"{other}:{i}", f"{other}:{max(i - 50, 0)}"):
                if await cache.get(key) is None:
                    misses += 1
                else:
                    hits += 1
        await cache.aclose()
        print(json.dumps({"hits": hits, "misses": misses}))

    anyio.run(main)
    """
)


@pytest.mark.anyio
async def test_two_processes_racing_puts_and_gets_keep_consistent_counts(tmp_path: Path) -> None:
    """Two real processes write and read the same keys' neighbourhood at the same time, past
    the entry cap: every lookup is counted once, every write is either kept or evicted, and
    the totals agree with the table."""
    import json
    import time

    path = tmp_path / "cache.sqlite"
    SqliteCache(path, max_entries=500).close()
    n, start = 400, time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(path), me, other, str(n), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for me, other in (("a", "b"), ("b", "a"))
    ]
    reported = {"hits": 0, "misses": 0}
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        for name, value in json.loads(out.decode().strip().splitlines()[-1]).items():
            reported[name] += value
    assert reported["hits"] + reported["misses"] == 2 * n * 3
    assert reported["hits"] >= 2 * n, "each process reads back its own fresh write"
    cache = SqliteCache(path, max_entries=500)
    try:
        assert await cache.ready()
        stats = cache.stats()
    finally:
        await cache.aclose()
    assert stats["hits"] == reported["hits"] and stats["misses"] == reported["misses"], (stats, reported)
    assert stats["entries"] == 500, "the cap holds across processes"
    assert stats["evictions"] == 2 * n - 500, "every write is kept or counted as evicted"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*), sum(size) FROM entries").fetchone() == (stats["entries"], stats["bytes"])
        for key, value in conn.execute("SELECT key, value FROM entries"):
            me, i = key.split(":")
            assert value == f"{me}-{i}".encode() * 10, key


@pytest.mark.anyio
async def test_set_is_committed_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = SqliteCache(path)
    try:
        await cache.set("k", b"visible")
        with sqlite3.connect(path) as other:  # another connection, as another process would
            assert other.execute("SELECT value FROM entries WHERE key = 'k'").fetchone() == (b"visible",)
    finally:
        await cache.aclose()


@pytest.mark.anyio
async def test_a_set_that_must_evict_many_rows_still_keeps_the_cap(tmp_path: Path) -> None:
    """Lowering the cap makes the next set evict far more rows than a set does on the loop:
    the writer thread does it, and the counters stay exact."""
    path = tmp_path / "cache.sqlite"
    cache = SqliteCache(path, max_entries=1000)
    for i in range(1000):
        await cache.set(f"k{i:04}", b"v" * 10)
    await cache.aclose()
    cache = SqliteCache(path, max_entries=10)
    try:
        assert await cache.ready()
        await cache.set("newest", b"n")
        stats = cache.stats()
        assert stats["entries"] == 10 and stats["evictions"] == 991 and stats["bytes"] == 9 * 10 + 1
        assert await cache.get("newest") == b"n"
        assert await cache.get("k0999") == b"v" * 10, "the most recent old entries are the ones kept"
        assert await cache.get("k0000") is None
    finally:
        await cache.aclose()
