"""``memory-cache``: an in-process response cache with TTL, LRU eviction by entries and
by bytes, invalidation by key prefix, and hit / miss / eviction counters."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskloom import hookimpl
from taskloom.config import Settings

NAME = "memory-cache"


class MemoryCacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_entries: int = Field(10_000, ge=1, description="Entries kept before the least recently used is evicted.")
    max_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Total size of values kept.")
    ttl: float | None = Field(3600.0, gt=0, description="Seconds an entry lives (None: forever).")


class MemoryCache:
    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        ttl: float | None = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self._data: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = self.evictions = self.expirations = 0

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        value, expires = item
        if expires is not None and self.clock() >= expires:
            self._drop(key)
            self.expirations += 1
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        if len(value) > self.max_bytes:
            return  # larger than the whole cache: keeping it would evict everything
        if key in self._data:
            self._drop(key)
        life = ttl if ttl is not None else self.ttl
        self._data[key] = (value, self.clock() + life if life is not None else None)
        self._bytes += len(value)
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._data))
            self._drop(oldest)
            self.evictions += 1

    async def invalidate(self, prefix: str = "") -> int:
        keys = [k for k in self._data if k.startswith(prefix)]
        for k in keys:
            self._drop(k)
        return len(keys)

    def _drop(self, key: str) -> None:
        value, _ = self._data.pop(key)
        self._bytes -= len(value)

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._data),
            "bytes": self._bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "expirations": self.expirations,
        }

    async def aclose(self) -> None:
        return None


@hookimpl
def taskloom_config_model() -> type[BaseModel]:
    return MemoryCacheConfig


@hookimpl
def taskloom_register_caches(register: Callable[..., None], settings: Settings) -> None:
    def factory(settings: Settings) -> MemoryCache:
        cfg: Any = settings.plugin_config(NAME) or MemoryCacheConfig()
        return MemoryCache(cfg.max_entries, cfg.max_bytes, cfg.ttl)

    register("memory", factory)
