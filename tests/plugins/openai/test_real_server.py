"""``taskloom-openai`` against a real OpenAI-compatible server: ``python -m llama_cpp.server``
serving SmolLM2-135M on 127.0.0.1 (fixtures in conftest.py). Generations are short."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from taskloom import hookimpl, load_kernel
from taskloom.agent import Agent, AgentLimits, run_agent
from taskloom.config import ModelConfig
from taskloom.errors import ConnectionFailed, ContextWindowExceeded, ServerError
from taskloom.gateway import StreamAssembler
from taskloom.testing import register_plugin
from taskloom.types import Message, ModelRequest, StreamDelta, ToolSpec
from taskloom_openai.plugin import create
from taskloom_openai.provider import OpenAIProvider

from .conftest import LlamaServer, free_port

pytestmark = pytest.mark.anyio

WEATHER = ToolSpec(
    name="get_weather",
    description="Get the current weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def make(base_url: str, **options: Any) -> OpenAIProvider:
    return create(ModelConfig(alias="srv", provider="openai", model="smollm2", base_url=base_url, **options))


@pytest.fixture
async def provider(llama_server: LlamaServer) -> AsyncIterator[OpenAIProvider]:
    p = make(llama_server.base_url, context_window=2048, response_format="json_object", embed_batch_size=1)
    yield p
    await p.aclose()


def hello(max_tokens: int = 12, **kw: Any) -> ModelRequest:
    return ModelRequest(
        model="srv", messages=[Message.user("Say hello.")], max_tokens=max_tokens, temperature=0, seed=7, **kw
    )


async def collect(stream: AsyncIterator[StreamDelta]) -> list[StreamDelta]:
    return [d async for d in stream]


async def test_chat_completion(provider: OpenAIProvider) -> None:
    response = await provider.complete(hello())
    assert response.text.strip()
    assert response.provider == "openai"
    assert response.finish_reason in ("stop", "length")
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 12


async def test_streamed_text_equals_the_complete_answer(provider: OpenAIProvider) -> None:
    whole = await provider.complete(hello())
    deltas = await collect(provider.stream(hello()))
    assembler = StreamAssembler()
    for d in deltas:
        assembler.add(d)
    streamed = assembler.response()
    assert len([d for d in deltas if d.text]) > 1, "the answer should arrive in several pieces"
    assert streamed.text == whole.text
    assert streamed.finish_reason == whole.finish_reason
    final = deltas[-1]
    assert final.usage is not None and final.usage.output_tokens > 0 and final.finish_reason


async def test_forced_tool_call(provider: OpenAIProvider) -> None:
    request = ModelRequest(
        model="srv",
        messages=[Message.user("What is the weather in Paris?")],
        tools=[WEATHER],
        tool_choice="get_weather",
        max_tokens=32,
        temperature=0,
    )
    response = await provider.complete(request)
    assert response.finish_reason == "tool_calls"
    [call] = response.tool_calls
    assert call.name == "get_weather" and call.id
    assert isinstance(call.arguments, dict) and isinstance(call.arguments.get("city"), str)

    deltas = await collect(provider.stream(request))
    fragments = [d for d in deltas if d.tool_index is not None]
    assert len(fragments) > 1 and all(d.tool_index == 0 for d in fragments)
    assert [d.tool_name for d in fragments if d.tool_name] == ["get_weather"], "the name is sent once"
    assembler = StreamAssembler()
    for d in deltas:
        assembler.add(d)
    [streamed] = assembler.response().tool_calls
    assert (streamed.name, streamed.arguments) == (call.name, call.arguments)


async def test_structured_output(provider: OpenAIProvider) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    response = await provider.complete(
        ModelRequest(
            model="srv", messages=[Message.user("Name a colour.")], output_schema=schema, max_tokens=24, temperature=0
        )
    )
    import json

    assert isinstance(json.loads(response.text)["colour"], str)


async def test_embeddings_and_model_list(provider: OpenAIProvider) -> None:
    vectors = await provider.embed(["the cat sat", "a dog ran", "the cat sat"])
    assert len(vectors) == 3 and len(vectors[0]) == len(vectors[1]) > 10
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    models = await provider.list_models()
    assert len(models) == 1 and models[0].endswith(".gguf")


async def test_prompt_too_long_is_context_window_exceeded(provider: OpenAIProvider) -> None:
    request = ModelRequest(model="srv", messages=[Message.user("word " * 3000)], max_tokens=4)
    with pytest.raises(ContextWindowExceeded, match="context") as info:
        await provider.complete(request)
    assert info.value.transient is False and info.value.status == 400


async def test_server_killed_mid_stream_is_a_transient_server_error(doomed_server: LlamaServer) -> None:
    p = make(doomed_server.base_url)
    request = ModelRequest(
        model="srv", messages=[Message.user("Tell me a very long story about a dragon.")], max_tokens=400
    )
    received: list[str] = []
    try:
        with pytest.raises(ServerError) as info:
            async for delta in p.stream(request):
                if delta.text:
                    received.append(delta.text)
                    if len(received) == 2:
                        doomed_server.kill()
    finally:
        await p.aclose()
    assert len(received) >= 2
    assert info.value.transient is True
    assert "lost" in str(info.value) or "[DONE]" in str(info.value)


async def test_server_down_is_connection_failed() -> None:
    p = make(f"http://127.0.0.1:{free_port()}/v1", connect_timeout=2)
    try:
        with pytest.raises(ConnectionFailed, match="cannot reach the server") as info:
            await p.complete(hello())
        assert info.value.transient is True
        with pytest.raises(ConnectionFailed):
            await collect(p.stream(hello()))
    finally:
        await p.aclose()


# --------------------------------------------------------------------------- through the kernel


class WeatherTool:
    @hookimpl
    def taskloom_register_tools(self, register: Any, settings: Any) -> None:
        async def get_weather(city: str) -> str:
            """Get the current weather in a city.

            Args:
                city: The city.
            """
            return f"Sunny and 21 °C in {city}."

        register(get_weather)


async def test_gateway_and_agent_end_to_end(llama_server: LlamaServer) -> None:
    config = {
        "models": {"srv": {"provider": "openai", "base_url": llama_server.base_url, "model": "x"}},
        "taskloom": {"store": "memory", "default_model": "srv"},
    }
    with register_plugin(WeatherTool(), "weather-tool"):
        kernel = load_kernel(config)
    async with kernel:
        response = await kernel.gateway.complete(hello())
        assert response.text and response.alias == "srv" and response.provider == "openai"
        assert response.attempts == 1 and not response.cached
        again = await kernel.gateway.complete(hello())
        assert again.cached and again.text == response.text

        stream = kernel.gateway.stream(hello(max_tokens=6, cache=False))
        text = "".join([d.text async for d in stream])
        assert stream.response is not None and stream.response.text == text

        agent = Agent(
            name="weather",
            model="srv",
            tools=["get_weather"],
            tool_choice="get_weather",
            max_tokens=32,
            temperature=0,
            limits=AgentLimits(max_turns=2),
        )
        result = await run_agent(kernel, agent, "What is the weather in Paris?")
        assert result.tool_calls, result
        first = result.tool_calls[0]
        assert first.name == "get_weather" and not first.is_error
        assert first.result.startswith("Sunny")
        assert result.models[0] == "srv" and result.usage.input_tokens > 0
