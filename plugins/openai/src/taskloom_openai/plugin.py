"""``openai``: registers the provider. httpx is imported only when an alias is first used."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from taskloom import hookimpl
from taskloom.config import ModelConfig, Settings

if TYPE_CHECKING:
    from .provider import OpenAIProvider


def create(config: ModelConfig, settings: Settings | None = None) -> OpenAIProvider:
    """The provider factory: ``[models.<alias>] provider = "openai"``."""
    from .options import parse_options
    from .provider import OpenAIProvider

    return OpenAIProvider(config, parse_options(config, settings))


@hookimpl
def taskloom_register_providers(register: Callable[..., None], settings: Settings) -> None:
    register("openai", create)
