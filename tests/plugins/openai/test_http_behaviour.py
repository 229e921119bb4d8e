"""What ``taskloom-openai`` does on the wire, seen from a tiny real HTTP server on 127.0.0.1
(``fake_server`` in conftest.py): one request per call (retries belong to the kernel),
pooled connections, a cancelled stream closing its HTTP response, malformed tool-call
arguments reaching the agent as a tool error, and the API key kept out of the ledger."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from taskloom import hookimpl, load_kernel
from taskloom.agent import Agent, AgentLimits, run_agent
from taskloom.builtin.memory_store import MemoryStore
from taskloom.config import ModelConfig
from taskloom.errors import ProviderError, RateLimitError, ServerError
from taskloom.testing import register_plugin
from taskloom.types import Event, Message, ModelRequest, StreamDelta, ToolSpec
from taskloom_openai.plugin import create
from taskloom_openai.provider import OpenAIProvider

from .conftest import FakeServer, Reply

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}
FAKE_KEY = "sk-test-ledger-0123456789SECRET"
BROKEN_ARGUMENTS = '{"city": "Par'


def jbody(data: Any) -> bytes:
    return json.dumps(data).encode()


def chunk(delta: dict[str, Any], finish: str | None = None, model: str = "m") -> str:
    return json.dumps({"model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def text_answer(text: str = "Hello.", model: str = "m") -> Reply:
    answer = {
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    return Reply(200, JSON, jbody(answer))


def broken_call_answer() -> Reply:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": BROKEN_ARGUMENTS}}
    answer = {
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7},
    }
    return Reply(200, JSON, jbody(answer))


def make(fake: FakeServer, case: str, **options: Any) -> OpenAIProvider:
    return create(ModelConfig(alias="fake", provider="openai", model="m", base_url=fake.url(case), **options))


def ask(**kw: Any) -> ModelRequest:
    kw.setdefault("max_tokens", 5)
    return ModelRequest(model="fake", messages=[Message.user("hi")], **kw)


def kernel_config(fake: FakeServer, *cases: str, **model: Any) -> dict[str, Any]:
    return {
        "models": {case: {"provider": "openai", "model": "m", "base_url": fake.url(case), **model} for case in cases},
        "taskloom": {"store": "memory", "cache": "none", "default_model": cases[0]},
    }


# --------------------------------------------------------------------------- one request per call


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (500, JSON, ServerError),
        (503, {}, ServerError),
        (429, {"retry-after": "0", **JSON}, RateLimitError),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_a_failed_call_sends_exactly_one_request(
    fake_server: FakeServer, status: int, headers: dict[str, str], error: type, streaming: bool
) -> None:
    case = f"once-{status}-{'stream' if streaming else 'complete'}"
    fake_server.replies[case] = Reply(status, headers, jbody({"error": {"message": "try later"}}))
    provider = make(fake_server, case)
    try:
        with pytest.raises(error) as info:
            if streaming:
                async for _ in provider.stream(ask()):
                    pass
            else:
                await provider.complete(ask())
    finally:
        await provider.aclose()
    assert info.value.transient, "the kernel must be told it may retry"
    assert len(fake_server.sent(case)) == 1, "the plugin retried on its own: retries belong to the kernel"


async def test_the_kernel_retries_and_the_plugin_adds_none(fake_server: FakeServer) -> None:
    fake_server.replies["kernel-500"] = Reply(500, JSON, jbody({"error": {"message": "boom"}}))
    fake_server.replies["kernel-429"] = Reply(429, {"retry-after": "0", **JSON}, b"{}")
    config = kernel_config(fake_server, "kernel-500", "kernel-429", retry={"attempts": 3, "base_delay": 0.01})
    async with load_kernel(config) as kernel:
        for case in ("kernel-500", "kernel-429"):
            with pytest.raises(ProviderError):
                await kernel.gateway.complete(ModelRequest(model=case, messages=[Message.user("hi")]))
            assert len(fake_server.sent(case)) == 3, "3 attempts configured: exactly 3 requests"


# --------------------------------------------------------------------------- pooled connections


async def test_sequential_calls_share_one_pooled_connection(fake_server: FakeServer) -> None:
    fake_server.replies["pool"] = text_answer()
    provider = make(fake_server, "pool")
    try:
        for _ in range(5):
            assert (await provider.complete(ask())).text == "Hello."
    finally:
        await provider.aclose()
    clients = {r["client"] for r in fake_server.sent("pool")}
    assert len(fake_server.sent("pool")) == 5
    assert len(clients) == 1, f"5 sequential calls opened {len(clients)} TCP connections: the pool was not reused"


async def test_without_the_pool_each_call_opens_a_connection(fake_server: FakeServer) -> None:
    """The measure above can tell: a new provider (a new client) per call means new connections."""
    fake_server.replies["nopool"] = text_answer()
    for _ in range(3):
        provider = make(fake_server, "nopool")
        await provider.complete(ask())
        await provider.aclose()
    assert len({r["client"] for r in fake_server.sent("nopool")}) == 3


async def test_the_gateway_reuses_the_connection_too(fake_server: FakeServer) -> None:
    fake_server.replies["pool-gw"] = text_answer()
    async with load_kernel(kernel_config(fake_server, "pool-gw")) as kernel:
        for _ in range(4):
            await kernel.gateway.complete(ModelRequest(model="pool-gw", messages=[Message.user("hi")]))
    assert len({r["client"] for r in fake_server.sent("pool-gw")}) == 1


# --------------------------------------------------------------------------- cancellation closes the response


def endless(case: str, fake: FakeServer) -> None:
    fake.disconnected.pop(case, None)
    fake.replies[case] = Reply(
        events=[chunk({"role": "assistant", "content": "Once"})], interval=0.05, endless=chunk({"content": " more"})
    )


async def wait_disconnected(fake: FakeServer, case: str, since: float) -> float:
    with anyio.move_on_after(10):
        while case not in fake.disconnected:
            await anyio.sleep(0.02)
    assert case in fake.disconnected, "the server still streams to a client that cancelled: the response was not closed"
    return fake.disconnected[case] - since


async def test_the_server_tells_an_open_response_from_a_closed_one(fake_server: FakeServer) -> None:
    """The measure used below can fail: a response left open is not reported as closed."""
    endless("control", fake_server)
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", fake_server.url("control") + "/chat/completions", json={}) as response:
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data:")
            await anyio.sleep(0.5)  # left open, not read: the server keeps streaming into the buffers
            assert "control" not in fake_server.disconnected
        closed = time.monotonic()
    assert await wait_disconnected(fake_server, "control", closed) < 5


async def test_cancelling_mid_stream_closes_the_http_response(fake_server: FakeServer) -> None:
    endless("cancel", fake_server)
    provider = make(fake_server, "cancel")
    received = 0
    try:
        with anyio.CancelScope() as scope:
            stream = provider.stream(ask(max_tokens=1000))
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for delta in stream:
                    received += bool(delta.text)
                    if received == 3:
                        cancelled_at = time.monotonic()
                        scope.cancel()
                        await anyio.sleep(0)
        assert scope.cancelled_caught
        assert provider.in_flight == 0
        delay = await wait_disconnected(fake_server, "cancel", cancelled_at)
        assert delay < 5, f"the server saw the client go away {delay:.1f} s after the cancellation"
        # The pool still works after the cancelled stream.
        fake_server.replies["cancel"] = text_answer("after")
        assert (await provider.complete(ask())).text == "after"
    finally:
        await provider.aclose()


async def test_a_consumer_that_stops_reading_closes_the_http_response(fake_server: FakeServer) -> None:
    endless("stop-reading", fake_server)
    provider = make(fake_server, "stop-reading")
    try:
        stream = provider.stream(ask(max_tokens=1000))
        async for delta in stream:
            if delta.text == " more":
                break
        stopped = time.monotonic()
        await stream.aclose()  # type: ignore[attr-defined]
        assert provider.in_flight == 0
        assert await wait_disconnected(fake_server, "stop-reading", stopped) < 5
    finally:
        await provider.aclose()


async def test_a_cancelled_gateway_stream_closes_the_http_response(fake_server: FakeServer) -> None:
    endless("cancel-gw", fake_server)
    async with load_kernel(kernel_config(fake_server, "cancel-gw")) as kernel:
        with anyio.move_on_after(0.4) as scope:
            async for _ in kernel.gateway.stream(ModelRequest(model="cancel-gw", messages=[Message.user("hi")])):
                pass
        assert scope.cancelled_caught
        assert await wait_disconnected(fake_server, "cancel-gw", time.monotonic()) < 5
        assert kernel.provider("cancel-gw").in_flight == 0


# --------------------------------------------------------------------------- malformed tool-call JSON


class WeatherTool:
    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def taskloom_register_tools(self, register: Any, settings: Any) -> None:
        async def get_weather(city: str) -> str:
            """Get the current weather in a city.

            Args:
                city: The city.
            """
            self.calls.append(city)
            return f"Sunny in {city}."

        register(get_weather)


async def test_malformed_arguments_from_complete_reach_the_agent_as_a_tool_error(fake_server: FakeServer) -> None:
    fake_server.replies["broken-args"] = [broken_call_answer(), text_answer("I could not check the weather.")]
    tool = WeatherTool()
    with register_plugin(tool, "weather-broken-args"):
        kernel = load_kernel(kernel_config(fake_server, "broken-args"))
    async with kernel:
        agent = Agent(name="w", model="broken-args", tools=["get_weather"], limits=AgentLimits(max_turns=3))
        result = await run_agent(kernel, agent, "Weather in Paris?")
    assert result.ok and result.text == "I could not check the weather."
    [logged] = result.tool_calls
    assert logged.name == "get_weather" and logged.is_error and logged.arguments is None
    assert "not a JSON object" in logged.result
    assert tool.calls == [], "the tool ran with arguments that do not parse"
    # The model was told: the second request carries the tool error and the verbatim arguments.
    _first, second = fake_server.sent("broken-args")
    sent_messages = second["json"]["messages"]
    assert sent_messages[1]["tool_calls"][0]["function"]["arguments"] == BROKEN_ARGUMENTS
    assert sent_messages[2]["role"] == "tool" and "not a JSON object" in sent_messages[2]["content"]


async def collect(stream: AsyncIterator[StreamDelta]) -> list[StreamDelta]:
    return [d async for d in stream]


async def test_malformed_arguments_from_a_stream_become_a_tool_error(fake_server: FakeServer) -> None:
    events = [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 0, "id": "call_s", "type": "function", "function": {"name": "get_weather"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Par'}}]}),
        chunk({}, "tool_calls"),
        "[DONE]",
    ]
    fake_server.replies["broken-stream"] = Reply(events=events)
    tool = WeatherTool()
    with register_plugin(tool, "weather-broken-stream"):
        kernel = load_kernel(kernel_config(fake_server, "broken-stream"))
    async with kernel:
        request = ModelRequest(
            model="broken-stream",
            messages=[Message.user("Weather in Paris?")],
            tools=[ToolSpec(name="get_weather", parameters={"type": "object"})],
        )
        stream = kernel.gateway.stream(request)
        await collect(stream)
        assert stream.response is not None
        [call] = stream.response.tool_calls
        assert (call.id, call.name, call.arguments, call.raw_arguments) == (
            "call_s",
            "get_weather",
            None,
            '{"city": "Par',
        )
        assert stream.response.finish_reason == "tool_calls"
        result = await kernel.tools.call(call, allowed={"get_weather"})
    assert result.is_error and "not a JSON object" in result.content
    assert tool.calls == []


# --------------------------------------------------------------------------- the key and the ledger


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def taskloom_event(self, event: Event) -> None:
        self.events.append(event)


def store_dump(store: MemoryStore) -> list[str]:
    rows: list[Any] = [*store.calls, *store.tool_calls, *store.events, *store.runs.values()]
    rows += [task for tasks in store.tasks.values() for task in tasks.values()]
    return [row.model_dump_json() for row in rows]


async def test_the_key_never_reaches_the_ledger(fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy that echoes the bearer token into the answers it lets through and into its
    errors: the ledger rows (memory store records) and every event stay free of it."""
    monkeypatch.setenv("TASKLOOM_TEST_LEDGER_KEY", FAKE_KEY)
    echoed = f"m-for-{FAKE_KEY}"
    fake_server.replies["ledger-ok"] = text_answer("fine", model=echoed)
    fake_server.replies["ledger-stream"] = Reply(
        events=[chunk({"content": "fi"}, model=echoed), chunk({"content": "ne"}, "stop", model=echoed), "[DONE]"]
    )
    fake_server.replies["ledger-401"] = Reply(401, JSON, jbody({"error": {"message": f"bad key {FAKE_KEY}"}}))
    fake_server.replies["ledger-500"] = Reply(500, {"content-type": "text/html"}, f"<p>{FAKE_KEY}</p>".encode())
    config = kernel_config(
        fake_server,
        "ledger-ok",
        "ledger-stream",
        "ledger-401",
        "ledger-500",
        api_key={"env": "TASKLOOM_TEST_LEDGER_KEY"},
        retry={"attempts": 2, "base_delay": 0.01},
    )
    sink = Sink()
    with register_plugin(sink, "ledger-sink"):
        kernel = load_kernel(config)
    async with kernel:
        ok = await kernel.gateway.complete(ModelRequest(model="ledger-ok", messages=[Message.user("hi")]))
        assert ok.text == "fine"
        stream = kernel.gateway.stream(ModelRequest(model="ledger-stream", messages=[Message.user("hi")]))
        assert "".join([d.text async for d in stream]) == "fine"
        for case in ("ledger-401", "ledger-500"):
            with pytest.raises(ProviderError):
                await kernel.gateway.complete(ModelRequest(model=case, messages=[Message.user("hi")]))
        result = await run_agent(kernel, Agent(name="a", model="ledger-ok"), "hi")
        assert result.ok
        store = kernel.store
        assert isinstance(store, MemoryStore)
        rows = store_dump(store)
    headers = {k.lower(): v for k, v in fake_server.sent("ledger-ok")[0]["headers"].items()}
    assert headers["authorization"] == f"Bearer {FAKE_KEY}", "the key was sent to the server"
    succeeded = [c for c in store.calls if c.error is None]
    failed = [c for c in store.calls if c.error is not None]
    assert {c.alias for c in succeeded} == {"ledger-ok", "ledger-stream"}, "the successful calls are in the ledger"
    assert all(c.model == "m-for-**********" for c in succeeded), [c.model for c in succeeded]
    assert {c.alias for c in failed} == {"ledger-401", "ledger-500"}, "the failed calls are in the ledger"
    assert all("**********" in (c.error or "") for c in failed), [c.error for c in failed]
    events = [e.model_dump_json() for e in sink.events]
    assert any('"model.error"' in e for e in events), "the failures were sent to the sinks"
    for text in rows + events + [str(ok.model)]:
        assert FAKE_KEY not in text
