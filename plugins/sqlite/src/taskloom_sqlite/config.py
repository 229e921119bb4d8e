"""``[plugins.sqlite]``: where the files live, cache limits, durability, tool prices."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from taskloom.config import Settings

NAME = "sqlite"


class SqliteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_path: Path | None = Field(
        None, description="Run store file (default: the user data dir, e.g. ~/.local/share/taskloom/runs.sqlite)."
    )
    cache_path: Path | None = Field(
        None, description="Response cache file (default: the user cache dir, e.g. ~/.cache/taskloom/cache.sqlite)."
    )
    cache_ttl: float | None = Field(7 * 86400.0, gt=0, description="Seconds a cached response lives (None: forever).")
    cache_max_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Total size of cached values kept.")
    cache_max_entries: int = Field(100_000, ge=1, description="Cached responses kept.")
    busy_timeout: float = Field(5.0, ge=0, description="Seconds to wait for another process's write lock.")
    synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="Run store durability: normal survives any process crash; full also survives power loss "
        "(one fsync per commit).",
    )
    record_events: bool = Field(
        True,
        description="Keep every event in the run store (when it is the sqlite one), written in batches; "
        "false saves a little CPU on very big runs.",
    )
    tool_prices: dict[str, Decimal] = Field(
        default_factory=dict, description='USD per call of a tool, e.g. { "web.search" = 0.005 }.'
    )

    @field_validator("tool_prices")
    @classmethod
    def _non_negative(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for name, price in value.items():
            if price < 0:
                raise ValueError(f"the price of tool {name!r} is negative ({price})")
        return value


def get_config(settings: Settings) -> SqliteConfig:
    cfg = settings.plugin_config(NAME)
    return cfg if isinstance(cfg, SqliteConfig) else SqliteConfig()


def resolve(path: Path, settings: Settings) -> Path:
    """A configured path; relative ones are relative to the config file's folder."""
    path = path.expanduser()
    if not path.is_absolute() and settings.source is not None:
        path = settings.source.parent / path
    return path


def store_location(settings: Settings) -> tuple[Path, bool]:
    """The run store path and whether its folder may be created (only the default's)."""
    cfg = get_config(settings)
    if cfg.store_path is not None:
        return resolve(cfg.store_path, settings), False
    import platformdirs

    return Path(platformdirs.user_data_dir("taskloom", appauthor=False)) / "runs.sqlite", True


def cache_location(settings: Settings) -> tuple[Path, bool]:
    cfg = get_config(settings)
    if cfg.cache_path is not None:
        return resolve(cfg.cache_path, settings), False
    import platformdirs

    return Path(platformdirs.user_cache_dir("taskloom", appauthor=False)) / "cache.sqlite", True
