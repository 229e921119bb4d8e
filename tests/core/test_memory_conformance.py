"""The built-in memory cache and memory store pass the conformance suites."""

from __future__ import annotations

from typing import Any

import pytest
from taskloom.builtin.memory_cache import MemoryCache
from taskloom.builtin.memory_store import MemoryStore
from taskloom.testing.cache_conformance import CacheConformance, CacheFactory
from taskloom.testing.store_conformance import StoreConformance, StoreFactory


class TestMemoryCache(CacheConformance):
    ttl_slack = 0.05

    @pytest.fixture
    def make_cache(self) -> CacheFactory:
        def make(max_entries: int | None = None, max_bytes: int | None = None, **_: Any) -> MemoryCache:
            return MemoryCache(max_entries=max_entries or 10_000, max_bytes=max_bytes or 64 * 1024 * 1024)

        return make


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def make_store(self) -> StoreFactory:
        return MemoryStore
