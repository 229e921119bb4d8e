"""Entry point ``llamacpp``: registers the ``llamacpp`` provider. Imports nothing heavy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskloom import hookimpl
from taskloom.config import ModelConfig, Settings


def make_provider(config: ModelConfig, settings: Settings) -> Any:
    from .provider import LlamaCppProvider

    return LlamaCppProvider.from_config(config, settings)


@hookimpl
def taskloom_register_providers(register: Callable[..., None], settings: Settings) -> None:
    register("llamacpp", make_provider)
