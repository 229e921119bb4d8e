"""Fixtures for the llamacpp tests: the real SmolLM2 model, loaded once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from taskloom.config import ModelConfig
from taskloom.types import ToolSpec
from taskloom_llamacpp import models
from taskloom_llamacpp.provider import LlamaCppProvider

# Tools the model is offered in the tests.
WEATHER = ToolSpec(
    name="get_weather",
    description="Get the weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
)
ADD = ToolSpec(
    name="add",
    description="Add two integers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)


def make(alias: str = "local", **options: object) -> LlamaCppProvider:
    config = ModelConfig(alias=alias, provider="llamacpp", model="smollm2-135m-instruct", **options)
    return LlamaCppProvider.from_config(config)


@pytest.fixture(scope="session")
def llama_provider() -> Iterator[LlamaCppProvider]:
    provider = make()
    provider.loaded()  # the model file is read once for the whole session
    yield provider


@pytest.fixture(scope="session")
def loaded(llama_provider: LlamaCppProvider) -> models.LoadedModel:
    return llama_provider.loaded()
