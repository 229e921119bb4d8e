"""The SQLite cache and store pass the conformance suites (as persistent backends)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from taskloom.testing.cache_conformance import CacheConformance, CacheFactory
from taskloom.testing.store_conformance import StoreConformance, StoreFactory
from taskloom_sqlite.cache import SqliteCache
from taskloom_sqlite.store import SqliteStore


class TestSqliteCache(CacheConformance):
    persistent = True
    ttl_slack = 0.05

    @pytest.fixture
    def make_cache(self, tmp_path: Path) -> CacheFactory:
        def make(max_entries: int | None = None, max_bytes: int | None = None, **_: Any) -> SqliteCache:
            return SqliteCache(
                tmp_path / "cache.sqlite", max_entries=max_entries or 10_000, max_bytes=max_bytes or 64 * 1024 * 1024
            )

        return make


class TestSqliteStore(StoreConformance):
    persistent = True

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> StoreFactory:
        return lambda: SqliteStore(tmp_path / "runs.sqlite")
