"""Tool-call arguments Ollama sends as a JSON *string* (some models do, instead of the
documented object), malformed ones reaching the agent as a tool error, and a stream that
answers an HTML page.

No Ollama server can run on the machines this suite runs on, so, as in ``test_ollama.py``,
the plugin's real httpx client talks to :class:`httpx.MockTransport` serving bodies in
Ollama's documented ``/api/chat`` wire format (``recorded.py``); only the socket is replaced.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from taskloom import hookimpl, load_kernel
from taskloom.agent import Agent, AgentLimits, run_agent
from taskloom.errors import BadRequest, ServerError
from taskloom.kernel import Kernel
from taskloom.testing import register_plugin
from taskloom.types import Message, ModelRequest
from taskloom_ollama.provider import OllamaProvider

from . import recorded

pytestmark = pytest.mark.anyio

BROKEN = '{"city": "Par'


def call_answer(arguments: Any) -> dict[str, Any]:
    """A recorded tool-call answer whose arguments are replaced by ``arguments``."""
    message = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": arguments}}],
    }
    return {**recorded.TOOL_CALL, "message": message}


def as_stream(answer: dict[str, Any]) -> str:
    """The same answer as Ollama streams it: the call in a ``done: false`` line, then the
    ``done: true`` line with the counts."""
    return recorded.line({**answer, "done": False}) + recorded.line(
        {**answer, "message": {"role": "assistant", "content": ""}, "done": True}
    )


class Script:
    """Answers /api/chat with the given bodies in order (the last one repeated), as a
    stream or not as the request asks; keeps the request bodies."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if body["stream"]:
            return httpx.Response(200, content=as_stream(answer).encode())
        return httpx.Response(200, json=answer)


class WeatherTool:
    def __init__(self) -> None:
        self.cities: list[str] = []

    @hookimpl
    def taskloom_register_tools(self, register: Any, settings: Any) -> None:
        async def get_weather(city: str) -> str:
            """Get the current weather in a city.

            Args:
                city: The city.
            """
            self.cities.append(city)
            return f"Sunny in {city}."

        register(get_weather)


def kernel_on(script: Script, tool: WeatherTool, name: str) -> Kernel:
    with register_plugin(tool, name):
        kernel = load_kernel(
            {
                "models": {"local-llama": {"provider": "ollama", "model": recorded.MODEL}},
                "taskloom": {"store": "memory", "cache": "none", "default_model": "local-llama"},
            }
        )
    provider = kernel.provider("local-llama")
    assert isinstance(provider, OllamaProvider)
    provider._transport = httpx.MockTransport(script)  # the socket only; set before first use
    return kernel


def ask_weather() -> ModelRequest:
    from taskloom.types import ToolSpec

    spec = ToolSpec(name="get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    return ModelRequest(model="local-llama", messages=[Message.user("Weather in Paris?")], tools=[spec])


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_string_arguments_are_parsed(streaming: bool) -> None:
    script = Script(call_answer('{"city": "Paris"}'))
    tool = WeatherTool()
    async with kernel_on(script, tool, f"weather-str-{streaming}") as kernel:
        if streaming:
            stream = kernel.gateway.stream(ask_weather())
            async for _ in stream:
                pass
            assert stream.response is not None
            response = stream.response
        else:
            response = await kernel.gateway.complete(ask_weather())
        [call] = response.tool_calls
        assert (call.name, call.arguments, call.raw_arguments) == (
            "get_weather",
            {"city": "Paris"},
            '{"city": "Paris"}',
        )
        assert response.finish_reason == "tool_calls"
        result = await kernel.tools.call(call, allowed={"get_weather"})
    assert not result.is_error and result.content == "Sunny in Paris."


async def test_malformed_string_arguments_reach_the_agent_as_a_tool_error() -> None:
    """Through the agent loop (which calls ``complete``): the model gets the error back
    as a tool message and can answer; nothing crashes, the tool never runs."""
    script = Script(call_answer(BROKEN), recorded.CHAT)
    tool = WeatherTool()
    async with kernel_on(script, tool, "weather-broken-agent") as kernel:
        agent = Agent(name="w", model="local-llama", tools=["get_weather"], limits=AgentLimits(max_turns=3))
        result = await run_agent(kernel, agent, "Weather in Paris?")
    assert result.ok and result.text == recorded.CHAT["message"]["content"]
    [logged] = result.tool_calls
    assert logged.is_error and logged.arguments is None and "not a JSON object" in logged.result
    assert tool.cities == []
    # The second request told the model what went wrong.
    tool_turn = script.bodies[1]["messages"][-1]
    assert tool_turn["role"] == "tool" and tool_turn["tool_name"] == "get_weather"
    assert "not a JSON object" in tool_turn["content"]


async def test_malformed_string_arguments_from_a_stream_become_a_tool_error() -> None:
    script = Script(call_answer(BROKEN))
    tool = WeatherTool()
    async with kernel_on(script, tool, "weather-broken-stream") as kernel:
        stream = kernel.gateway.stream(ask_weather())
        deltas = [d async for d in stream]
        assert [d.arguments for d in deltas if d.tool_name] == [BROKEN], "the arguments are passed on verbatim"
        assert stream.response is not None
        [call] = stream.response.tool_calls
        assert call.arguments is None and call.raw_arguments == BROKEN
        result = await kernel.tools.call(call, allowed={"get_weather"})
    assert result.is_error and "not a JSON object" in result.content
    assert tool.cities == []


@pytest.mark.parametrize("arguments", [["Paris"], 42], ids=["list", "number"])
async def test_arguments_that_are_not_an_object_are_a_tool_error(arguments: Any) -> None:
    script = Script(call_answer(arguments))
    async with kernel_on(script, WeatherTool(), f"weather-odd-{type(arguments).__name__}") as kernel:
        response = await kernel.gateway.complete(ask_weather())
        [call] = response.tool_calls
        assert call.arguments is None and json.loads(call.raw_arguments) == arguments
        result = await kernel.tools.call(call, allowed={"get_weather"})
    assert result.is_error and "not a JSON object" in result.content


# --------------------------------------------------------------------------- HTML instead of NDJSON


def page(status: int, content_type: str | None = "text/html") -> httpx.MockTransport:
    headers = {"content-type": content_type} if content_type else {}
    html = b"<!DOCTYPE html>\n<html><body><h1>Sign in to the proxy</h1></body></html>"
    return httpx.MockTransport(lambda request: httpx.Response(status, content=html, headers=headers))


def provider_on(transport: httpx.MockTransport) -> OllamaProvider:
    from taskloom.config import ModelConfig
    from taskloom_ollama.plugin import create

    return create(ModelConfig(alias="local-llama", provider="ollama", model=recorded.MODEL), transport=transport)


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", None], ids=["html-type", "no-type"])
async def test_a_stream_answering_html_is_a_clear_bad_request(content_type: str | None) -> None:
    provider = provider_on(page(200, content_type))
    received = []
    try:
        with pytest.raises(BadRequest) as info:
            async for delta in provider.stream(ModelRequest(model="local-llama", messages=[Message.user("Hi")])):
                received.append(delta)
    finally:
        await provider.aclose()
    message = str(info.value)
    assert "HTML page" in message and "NDJSON" in message, message
    assert "local-llama" in message and "/api/chat" in message
    assert received == [] and not info.value.transient
    assert provider.in_flight == 0


async def test_a_stream_answering_an_html_error_page_is_a_server_error() -> None:
    provider = provider_on(page(502))
    try:
        with pytest.raises(ServerError, match="HTML page") as info:
            async for _ in provider.stream(ModelRequest(model="local-llama", messages=[Message.user("Hi")])):
                pass
    finally:
        await provider.aclose()
    assert info.value.transient and info.value.status == 502


async def test_complete_answering_html_says_so() -> None:
    provider = provider_on(page(200))
    try:
        with pytest.raises(BadRequest, match=r"HTML page.*Sign in to the proxy"):
            await provider.complete(ModelRequest(model="local-llama", messages=[Message.user("Hi")]))
    finally:
        await provider.aclose()
