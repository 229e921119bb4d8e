"""The ``sqlite`` plugin: registers the cache backend, the run store and the CLI commands,
prices tool calls from ``tool_prices``, and keeps events in the run store.

One instance per kernel (the entry point names the class), so the store it created for
that kernel is the one its event sink writes to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from taskloom import hookimpl
from taskloom.config import Settings
from taskloom.types import Cost, Event

from .config import NAME, SqliteConfig, cache_location, get_config, store_location


class SqlitePlugin:
    def __init__(self) -> None:
        self.store: Any = None
        self.record_events = True

    @hookimpl
    def taskloom_config_model(self) -> type[BaseModel]:
        return SqliteConfig

    @hookimpl
    def taskloom_register_caches(self, register: Callable[..., None], settings: Settings) -> None:
        register("sqlite", make_cache)

    @hookimpl
    def taskloom_register_stores(self, register: Callable[..., None], settings: Settings) -> None:
        def factory(settings: Settings) -> Any:
            store = make_store(settings)
            self.store = store
            self.record_events = get_config(settings).record_events
            return store

        register("sqlite", factory)

    @hookimpl
    def taskloom_register_commands(self, register: Callable[..., None]) -> None:
        from .cli import COMMANDS

        for command in COMMANDS:
            register(command)

    @hookimpl
    def taskloom_tool_price(self, name: str, arguments: dict[str, Any], settings: Settings) -> Cost | None:
        price = get_config(settings).tool_prices.get(name)
        if price is None:
            return None
        return Cost(total=price, tools=price, source=NAME)

    @hookimpl
    def taskloom_event(self, event: Event) -> None:
        store = self.store
        if store is not None and self.record_events and not store.closed:
            store.post_event(event)


def make_store(settings: Settings) -> Any:
    from .store import SqliteStore

    cfg = get_config(settings)
    path, create_dir = store_location(settings)
    return SqliteStore(path, busy_timeout=cfg.busy_timeout, synchronous=cfg.synchronous, create_dir=create_dir)


def make_cache(settings: Settings) -> Any:
    from .cache import SqliteCache

    cfg = get_config(settings)
    path, create_dir = cache_location(settings)
    return SqliteCache(
        path,
        ttl=cfg.cache_ttl,
        max_bytes=cfg.cache_max_bytes,
        max_entries=cfg.cache_max_entries,
        busy_timeout=cfg.busy_timeout,
        create_dir=create_dir,
    )
