"""taskloom-sqlite: the response cache, run store and cost reports on SQLite.

Heavy parts are imported on use, so loading the plugin costs next to nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import SqliteCache
    from .store import SqliteStore

__all__ = ["SqliteCache", "SqliteStore"]


def __getattr__(name: str) -> Any:
    if name == "SqliteCache":
        from .cache import SqliteCache

        return SqliteCache
    if name == "SqliteStore":
        from .store import SqliteStore

        return SqliteStore
    raise AttributeError(name)
