"""The provider options of a ``[models.<alias>]`` table with ``provider = "ollama"``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from taskloom.config import ModelConfig, Settings, format_validation_error
from taskloom.errors import ConfigError

OLLAMA_BASE_URL = "http://127.0.0.1:11434"


class OllamaOptions(BaseModel):
    """Validated keys of ``[models.<alias>]`` besides ``provider``, ``model``, ``timeout``..."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(OLLAMA_BASE_URL, description="The Ollama server (without /api).")
    keep_alive: str | int | None = Field(
        None, description='How long the model stays loaded after a call ("5m", seconds, -1 forever, 0 unload).'
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Ollama model options sent with every call (num_ctx, temperature, seed, top_k, num_gpu...); "
        "a request's own temperature, top_p, seed, max_tokens and stop win.",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers sent with every request.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection.")
    read_timeout: float | None = Field(
        None, gt=0, description="Seconds to wait for each piece of an answer (default: the alias's timeout)."
    )
    max_connections: int = Field(20, ge=1, description="Connections kept in the pool of this deployment.")
    context_window: int | None = Field(
        None, ge=1, description="The model's context window in tokens (default: options.num_ctx, else 2048)."
    )
    embedding_model: str | None = Field(None, description="Model used by embed() (default: the alias's model).")

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:11434")
        value = value.rstrip("/")
        return value[: -len("/api")] if value.endswith("/api") else value


def parse_options(config: ModelConfig, settings: Settings | None) -> OllamaOptions:
    """Validate the alias's options; a mistake is a ConfigError naming the table and key."""
    try:
        return OllamaOptions.model_validate(config.options)
    except ValidationError as exc:
        where = settings.where if settings is not None else "the configuration"
        raise ConfigError(format_validation_error(exc, where, f"models.{config.alias}", OllamaOptions)) from None
