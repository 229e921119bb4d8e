"""``ollama``: registers the provider. httpx is imported only when an alias is first used."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from taskloom import hookimpl
from taskloom.config import ModelConfig, Settings

if TYPE_CHECKING:
    import httpx

    from .provider import OllamaProvider


def create(
    config: ModelConfig, settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> OllamaProvider:
    """The provider factory: ``[models.<alias>] provider = "ollama"``."""
    from .options import parse_options
    from .provider import OllamaProvider

    return OllamaProvider(config, parse_options(config, settings), transport=transport)


@hookimpl
def taskloom_register_providers(register: Callable[..., None], settings: Settings) -> None:
    register("ollama", create)
