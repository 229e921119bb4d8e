"""The provider options of a ``[models.<alias>]`` table with ``provider = "openai"``."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from taskloom.config import ModelConfig, Secret, Settings, format_validation_error
from taskloom.errors import ConfigError

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_KEY_ENV = "OPENAI_API_KEY"


class OpenAIOptions(BaseModel):
    """Validated keys of ``[models.<alias>]`` besides ``provider``, ``model``, ``timeout``..."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    base_url: str = Field(OPENAI_BASE_URL, description="The server's API root, up to and including /v1.")
    api_key: Secret | None = Field(
        None,
        description='Bearer token, usually { env = "OPENAI_API_KEY" }. Default: that variable for '
        "api.openai.com, none for other servers (local servers need none).",
    )
    organization: str | None = Field(None, description="Sent as the OpenAI-Organization header.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers sent with every request.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection.")
    read_timeout: float | None = Field(
        None, gt=0, description="Seconds to wait for each chunk of an answer (default: the alias's timeout)."
    )
    max_connections: int = Field(100, ge=1, description="Connections kept in the pool of this deployment.")
    context_window: int = Field(128_000, ge=1, description="The model's context window in tokens.")
    embedding_model: str | None = Field(None, description="Model used by embed() (default: the alias's model).")
    embed_batch_size: int = Field(
        2048,
        ge=1,
        description="Texts per embeddings request (1 for llama.cpp's server: its batched per-token vectors are wrong).",
    )
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens",
        description="The body key for the output token limit (o-series models need max_completion_tokens).",
    )
    response_format: Literal["json_schema", "json_object"] = Field(
        "json_schema",
        description='How output schemas are sent: OpenAI\'s {"type": "json_schema"} or '
        '{"type": "json_object", "schema": ...} (llama.cpp\'s llama_cpp.server).',
    )
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Keys added to every chat request body.")

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:8000/v1")
        return value.rstrip("/")

    def key_secret(self) -> Secret | None:
        """The configured key, or ``OPENAI_API_KEY`` when talking to api.openai.com."""
        if self.api_key is not None:
            return self.api_key
        if urlsplit(self.base_url).hostname == "api.openai.com":
            return Secret(env=OPENAI_KEY_ENV)
        return None


def parse_options(config: ModelConfig, settings: Settings | None) -> OpenAIOptions:
    """Validate the alias's options; a mistake is a ConfigError naming the table and key."""
    try:
        return OpenAIOptions.model_validate(config.options)
    except ValidationError as exc:
        where = settings.where if settings is not None else "the configuration"
        raise ConfigError(format_validation_error(exc, where, f"models.{config.alias}", OpenAIOptions)) from None
