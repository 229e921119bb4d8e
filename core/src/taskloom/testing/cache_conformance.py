"""The conformance suite for response cache backends (:class:`taskloom.types.Cache`).

Subclass :class:`CacheConformance` in a test module and provide the ``make_cache``
fixture: a callable taking optional size limits that returns a new cache. Class
attributes say what the backend supports::

    class TestMyCache(CacheConformance):
        persistent = True            # a second cache made on the same storage sees the data

        @pytest.fixture
        def make_cache(self, tmp_path):
            def make(max_entries=None, max_bytes=None):
                return MyCache(tmp_path / "c", max_entries=max_entries or 10_000, ...)
            return make

Every test is an anyio test; the suite closes the caches it makes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from taskloom.types import Cache

CacheFactory = Callable[..., Cache]


class CacheConformance:
    """Behaviour every cache backend must have. Override the class attributes to declare
    what a backend does not support; never weaken a test by overriding it."""

    supports_eviction: bool = True
    """The backend honours ``max_entries`` / ``max_bytes`` by evicting the least recently used."""
    persistent: bool = False
    """Two caches made by the factory share their data (a file, a server)."""
    ttl_slack: float = 0.3
    """Seconds past an entry's TTL after which it must be gone."""

    @pytest.fixture
    def make_cache(self) -> CacheFactory:
        raise NotImplementedError("provide a make_cache fixture returning a callable (max_entries=, max_bytes=)")

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def caches(self, make_cache: CacheFactory) -> AsyncIterator[Callable[..., Cache]]:
        made: list[Cache] = []

        def make(**limits: Any) -> Cache:
            cache = make_cache(**limits)
            made.append(cache)
            return cache

        yield make
        for cache in made:
            await cache.aclose()

    @pytest.fixture
    async def cache(self, caches: Callable[..., Cache]) -> Cache:
        return caches()

    # ------------------------------------------------------------------ basics

    @pytest.mark.anyio
    async def test_is_a_cache(self, cache: Cache) -> None:
        assert isinstance(cache, Cache)

    @pytest.mark.anyio
    async def test_miss_returns_none_and_counts(self, cache: Cache) -> None:
        before = cache.stats()
        assert await cache.get("absent") is None
        after = cache.stats()
        assert after["misses"] == before["misses"] + 1
        assert after["hits"] == before["hits"]

    @pytest.mark.anyio
    async def test_round_trip_is_byte_exact(self, cache: Cache) -> None:
        values = {
            "a": b"hello",
            "binary": bytes(range(256)) * 4,
            "empty": b"",
            "unicode-ké✓": "héllo ✓ 日本".encode(),
        }
        for key, value in values.items():
            await cache.set(key, value)
        for key, value in values.items():
            got = await cache.get(key)
            assert got == value, key
            assert isinstance(got, bytes)

    @pytest.mark.anyio
    async def test_hit_counts(self, cache: Cache) -> None:
        await cache.set("k", b"v")
        before = cache.stats()
        assert await cache.get("k") == b"v"
        assert await cache.get("k") == b"v"
        after = cache.stats()
        assert after["hits"] == before["hits"] + 2
        assert after["misses"] == before["misses"]

    @pytest.mark.anyio
    async def test_stats_are_ints_with_the_required_keys(self, cache: Cache) -> None:
        stats = cache.stats()
        for key in ("hits", "misses", "evictions"):
            assert isinstance(stats[key], int), key

    @pytest.mark.anyio
    async def test_set_replaces(self, cache: Cache) -> None:
        await cache.set("k", b"one")
        await cache.set("k", b"two, longer")
        assert await cache.get("k") == b"two, longer"

    @pytest.mark.anyio
    async def test_large_value(self, cache: Cache) -> None:
        value = bytes(range(256)) * 4096  # 1 MiB
        await cache.set("big", value)
        assert await cache.get("big") == value

    # ------------------------------------------------------------------ TTL

    @pytest.mark.anyio
    async def test_ttl_expires(self, cache: Cache) -> None:
        await cache.set("short", b"x", ttl=0.05)
        await cache.set("long", b"y", ttl=60)
        await anyio.sleep(0.05 + self.ttl_slack)
        assert await cache.get("short") is None
        assert await cache.get("long") == b"y"

    @pytest.mark.anyio
    async def test_set_again_renews_ttl(self, cache: Cache) -> None:
        await cache.set("k", b"old", ttl=0.05)
        await cache.set("k", b"new", ttl=60)
        await anyio.sleep(0.05 + self.ttl_slack)
        assert await cache.get("k") == b"new"

    # ------------------------------------------------------------------ invalidation

    @pytest.mark.anyio
    async def test_invalidate_by_prefix(self, cache: Cache) -> None:
        for key in ("gpt:1", "gpt:2", "gpt-mini:1", "local:1", "gp"):
            await cache.set(key, key.encode())
        assert await cache.invalidate("gpt:") == 2
        assert await cache.get("gpt:1") is None
        assert await cache.get("gpt:2") is None
        assert await cache.get("gpt-mini:1") == b"gpt-mini:1"
        assert await cache.get("local:1") == b"local:1"
        assert await cache.get("gp") == b"gp"
        assert await cache.invalidate("nothing-here:") == 0

    @pytest.mark.anyio
    async def test_invalidate_unicode_prefix(self, cache: Cache) -> None:
        await cache.set("ké:1", b"1")
        await cache.set("kf:1", b"2")
        assert await cache.invalidate("ké") == 1
        assert await cache.get("kf:1") == b"2"

    @pytest.mark.anyio
    async def test_invalidate_everything(self, cache: Cache) -> None:
        for i in range(5):
            await cache.set(f"k{i}", b"v")
        assert await cache.invalidate() == 5
        for i in range(5):
            assert await cache.get(f"k{i}") is None

    # ------------------------------------------------------------------ eviction

    @pytest.mark.anyio
    async def test_lru_eviction_by_entries(self, caches: Callable[..., Cache]) -> None:
        if not self.supports_eviction:
            pytest.skip("backend has no size cap")
        cache = caches(max_entries=3)
        for key in ("a", "b", "c"):
            await cache.set(key, key.encode())
            await anyio.sleep(0.002)
        assert await cache.get("a") == b"a"  # a is now more recent than b
        await anyio.sleep(0.002)
        before = cache.stats()["evictions"]
        await cache.set("d", b"d")
        assert await cache.get("b") is None, "the least recently used entry should have been evicted"
        assert await cache.get("a") == b"a"
        assert await cache.get("c") == b"c"
        assert await cache.get("d") == b"d"
        assert cache.stats()["evictions"] == before + 1

    @pytest.mark.anyio
    async def test_eviction_by_bytes(self, caches: Callable[..., Cache]) -> None:
        if not self.supports_eviction:
            pytest.skip("backend has no size cap")
        cache = caches(max_bytes=100)
        for key in ("a", "b", "c"):
            await cache.set(key, b"x" * 40)
            await anyio.sleep(0.002)
        assert await cache.get("a") is None
        assert await cache.get("b") == b"x" * 40
        assert await cache.get("c") == b"x" * 40
        assert cache.stats()["evictions"] >= 1

    @pytest.mark.anyio
    async def test_value_larger_than_the_cap_is_not_kept(self, caches: Callable[..., Cache]) -> None:
        if not self.supports_eviction:
            pytest.skip("backend has no size cap")
        cache = caches(max_bytes=100)
        await cache.set("small", b"s")
        await cache.set("huge", b"x" * 500)
        assert await cache.get("huge") is None
        assert await cache.get("small") == b"s", "a value over the cap must not evict everything else"

    # ------------------------------------------------------------------ concurrency and life

    @pytest.mark.anyio
    async def test_concurrent_use(self, cache: Cache) -> None:
        async def worker(n: int) -> None:
            for i in range(10):
                key = f"w{n}:{i}"
                await cache.set(key, key.encode())
                assert await cache.get(key) == key.encode()

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(worker, n)
        for n in range(20):
            assert await cache.get(f"w{n}:9") == f"w{n}:9".encode()

    @pytest.mark.anyio
    async def test_persistence(self, make_cache: CacheFactory) -> None:
        if not self.persistent:
            pytest.skip("backend keeps nothing after it is closed")
        first = make_cache()
        await first.set("kept", b"value")
        assert await first.get("kept") == b"value"
        await first.aclose()
        second = make_cache()
        try:
            assert await second.get("kept") == b"value"
            assert second.stats()["hits"] >= 2, "counters must outlive the process"
        finally:
            await second.aclose()

    @pytest.mark.anyio
    async def test_two_instances_share_data(self, caches: Callable[..., Cache]) -> None:
        if not self.persistent:
            pytest.skip("backend instances are independent")
        one, two = caches(), caches()
        await one.set("shared", b"1")
        assert await two.get("shared") == b"1"
        assert await two.invalidate("sha") == 1
        assert await one.get("shared") is None


__all__ = ["CacheConformance", "CacheFactory"]
