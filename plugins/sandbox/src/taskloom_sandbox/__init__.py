"""taskloom-sandbox: ``python`` and ``bash`` tools that run code isolated with bubblewrap.

Enable it by installing the package; configure it in ``[plugins.sandbox]``
(see docs/sandbox.md). The :class:`Sandbox` class can also be used directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from taskloom import hookimpl
from taskloom.config import Settings

from .config import LimitOverrides, Limits, SandboxConfig
from .errors import InputFileError, LimitError, SandboxError, SandboxUnavailable, UnknownLanguage
from .result import FileInfo, SandboxResult
from .runner import Sandbox

NAME = "sandbox"

__all__ = [
    "FileInfo",
    "InputFileError",
    "LimitError",
    "LimitOverrides",
    "Limits",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxResult",
    "SandboxUnavailable",
    "UnknownLanguage",
]


@hookimpl
def taskloom_config_model() -> type[BaseModel]:
    return SandboxConfig


@hookimpl
def taskloom_register_tools(register: Callable[..., None], settings: Settings) -> None:
    from .tools import make_tools

    config: Any = settings.plugin_config(NAME) or SandboxConfig()
    for tool in make_tools(Sandbox(config)):
        register(tool)
