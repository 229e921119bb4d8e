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
        cache = SqliteCache(path)
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
