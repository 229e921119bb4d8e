"""The ``mcp`` plugin: one instance per kernel (the entry point names the class)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from taskloom import hookimpl
from taskloom.config import Settings

from .config import McpConfig


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("taskloom")) / "mcp"


class McpPlugin:
    def __init__(self) -> None:
        self.bridge: Any = None  # McpBridge once servers are configured

    @hookimpl
    def taskloom_config_model(self) -> type[BaseModel]:
        return McpConfig

    @hookimpl
    def taskloom_configure(self, settings: Settings) -> None:
        config: McpConfig | None = settings.plugin_config("mcp")
        if config is None or not any(s.enabled for s in config.servers.values()):
            return  # nothing to start: no thread, no SDK import
        from .bridge import McpBridge

        self.bridge = McpBridge(config, cache_dir=cache_dir())

    @hookimpl
    def taskloom_register_tools(self, register: Callable[..., None], settings: Settings) -> None:
        if self.bridge is not None:
            self.bridge.register_tools(register)

    @hookimpl
    def taskloom_register_commands(self, register: Callable[..., None]) -> None:
        from .cli import mcp

        register(mcp)
