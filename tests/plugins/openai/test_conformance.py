"""``taskloom-openai`` passes the provider conformance suite against a real
``python -m llama_cpp.server`` serving SmolLM2 (the ``llama_server`` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from taskloom.config import ModelConfig
from taskloom.testing.conformance import ProviderConformance
from taskloom_openai.plugin import create
from taskloom_openai.provider import OpenAIProvider

from .conftest import LlamaServer


class TestOpenAIConformance(ProviderConformance):
    model = "srv"

    @pytest.fixture
    async def provider(self, llama_server: LlamaServer, anyio_backend: str) -> AsyncIterator[OpenAIProvider]:
        made = create(
            ModelConfig(
                alias="srv",
                provider="openai",
                model="smollm2",
                base_url=llama_server.base_url,
                context_window=2048,
                response_format="json_object",
                embed_batch_size=1,
            )
        )
        try:
            yield made
        finally:
            await made.aclose()
