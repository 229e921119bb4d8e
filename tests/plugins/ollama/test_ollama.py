"""``taskloom-ollama`` against recorded response bodies of Ollama's documented wire format.

No Ollama server can run on the machines this suite runs on (no Ollama binary or model
download is possible here), so every test serves the recorded bodies in ``recorded.py``
through :class:`httpx.MockTransport`: the plugin's real httpx client, request building,
NDJSON parsing and error mapping all run; only the socket is replaced. The requests the
plugin sends are checked against the documented format too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from taskloom import load_kernel
from taskloom.config import ModelConfig
from taskloom.errors import BadRequest, ConfigError, ConnectionFailed, ContextWindowExceeded, ServerError
from taskloom.gateway import StreamAssembler
from taskloom.types import ImagePart, Message, ModelRequest, StreamDelta, TextPart, ToolCall, ToolSpec
from taskloom_ollama.plugin import create
from taskloom_ollama.provider import OllamaProvider

from . import recorded

pytestmark = pytest.mark.anyio

Handler = Callable[[httpx.Request], httpx.Response]
WEATHER = ToolSpec(name="get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
TIME = ToolSpec(name="get_time")


class Server:
    """Answers by path; keeps every request the plugin sent."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get(request.url.path)
        if handler is None:
            return httpx.Response(404, json={"error": f"no route {request.url.path}"})
        return handler(request)

    @property
    def last_json(self) -> dict[str, Any]:
        return dict(json.loads(self.requests[-1].content))


def answer(body: dict[str, Any] | str, status: int = 200, **headers: str) -> Handler:
    if isinstance(body, str):
        return lambda r: httpx.Response(status, content=body.encode(), headers={"content-type": "application/x-ndjson"})
    return lambda r: httpx.Response(status, json=body, headers=headers)


def make(server: Server, **options: Any) -> OllamaProvider:
    config = ModelConfig(alias="local-llama", provider="ollama", model=recorded.MODEL, **options)
    return create(config, transport=httpx.MockTransport(server))


def ask(**kw: Any) -> ModelRequest:
    kw.setdefault("messages", [Message.user("Hi")])
    return ModelRequest(model="local-llama", **kw)


async def collect(stream: AsyncIterator[StreamDelta]) -> list[StreamDelta]:
    return [d async for d in stream]


def assemble(deltas: list[StreamDelta]) -> Any:
    assembler = StreamAssembler()
    for d in deltas:
        assembler.add(d)
    return assembler.response()


async def test_chat() -> None:
    server = Server({"/api/chat": answer(recorded.CHAT)})
    provider = make(server, keep_alive="10m", options={"num_ctx": 8192, "temperature": 0.2})
    response = await provider.complete(ask(temperature=0, seed=42, max_tokens=64, stop=["\n\n"]))
    await provider.aclose()
    assert response.text == "Hello! How can I help you today?"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (26, 10)
    assert response.finish_reason == "stop" and response.provider == "ollama" and response.model == recorded.MODEL
    sent = server.last_json
    assert sent["stream"] is False and sent["keep_alive"] == "10m"
    assert sent["messages"] == [{"role": "user", "content": "Hi"}]
    assert sent["options"] == {"num_ctx": 8192, "temperature": 0, "seed": 42, "num_predict": 64, "stop": ["\n\n"]}
    assert provider.capabilities().context_window == 8192


async def test_stream_equals_complete() -> None:
    server = Server(
        {"/api/chat": lambda r: answer(recorded.CHAT_STREAM if json.loads(r.content)["stream"] else recorded.CHAT)(r)}
    )
    provider = make(server)
    deltas = await collect(provider.stream(ask()))
    whole = await provider.complete(ask())
    await provider.aclose()
    assert len([d for d in deltas if d.text]) == 9
    streamed = assemble(deltas)
    assert streamed.text == whole.text
    assert streamed.usage == whole.usage
    assert streamed.finish_reason == "stop"


async def test_tool_calls_arrive_as_objects() -> None:
    server = Server(
        {
            "/api/chat": lambda r: answer(
                recorded.TOOL_CALL_STREAM if json.loads(r.content)["stream"] else recorded.TOOL_CALL
            )(r)
        }
    )
    provider = make(server)
    response = await provider.complete(ask(tools=[WEATHER, TIME]))
    assert response.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("get_weather", {"city": "Paris", "unit": "celsius"}),
        ("get_time", {"zone": "Europe/Paris"}),
    ]
    assert len({c.id for c in response.tool_calls}) == 2
    sent = server.last_json
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "get_time"]
    assert sent["tools"][0]["type"] == "function"

    deltas = await collect(provider.stream(ask(tools=[WEATHER, TIME])))
    await provider.aclose()
    assert [d.tool_index for d in deltas if d.tool_name] == [0, 1]
    streamed = assemble(deltas)
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [(c.name, c.arguments) for c in response.tool_calls]
    assert streamed.finish_reason == "tool_calls"


async def test_forced_and_refused_tools() -> None:
    server = Server({"/api/chat": answer(recorded.CHAT)})
    provider = make(server)
    await provider.complete(ask(tools=[WEATHER, TIME], tool_choice="get_time"))
    assert [t["function"]["name"] for t in server.last_json["tools"]] == ["get_time"]
    await provider.complete(ask(tools=[WEATHER, TIME], tool_choice="none"))
    assert "tools" not in server.last_json
    await provider.aclose()


async def test_conversation_with_tool_results_and_images() -> None:
    server = Server({"/api/chat": answer(recorded.CHAT)})
    provider = make(server)
    call = ToolCall.parse("call_1", "get_weather", {"city": "Paris"})
    messages = [
        Message.system("Be brief."),
        Message.user([TextPart(text="What is this?"), ImagePart(data="iVBORw0KGgo=", media_type="image/png")]),
        Message.assistant("", [call]),
        Message.tool("call_1", "get_weather", "Sunny"),
    ]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    await provider.complete(ModelRequest(model="local-llama", messages=messages, output_schema=schema))
    sent = server.last_json
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is this?", "images": ["iVBORw0KGgo="]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "Sunny", "tool_name": "get_weather"},
    ]
    assert sent["format"] == schema
    with pytest.raises(BadRequest, match="base64 data, not URLs"):
        await provider.complete(ask(messages=[Message.user([ImagePart(url="https://example.com/cat.png")])]))
    await provider.aclose()


async def test_error_line_mid_stream_is_classified() -> None:
    provider = make(Server({"/api/chat": answer(recorded.ERROR_MID_STREAM)}))
    received: list[str] = []
    with pytest.raises(ServerError, match="unexpected EOF") as info:
        async for delta in provider.stream(ask()):
            received.append(delta.text)
    await provider.aclose()
    assert received == ["Once", " upon"]
    assert info.value.transient and info.value.provider == "ollama"


async def test_stream_without_done_line_is_transient() -> None:
    provider = make(Server({"/api/chat": answer(recorded.CUT_STREAM)}))
    with pytest.raises(ServerError, match='"done": true') as info:
        await collect(provider.stream(ask()))
    await provider.aclose()
    assert info.value.transient


@pytest.mark.parametrize(
    ("status", "body", "error", "words"),
    [
        (404, recorded.MODEL_NOT_FOUND, BadRequest, "ollama pull"),
        (400, recorded.CONTEXT_TOO_LONG, ContextWindowExceeded, "num_ctx"),
        (500, {"error": "llama runner process has terminated: signal: killed"}, ServerError, "terminated"),
        (503, {"error": "server busy, please try again.  maximum pending requests exceeded"}, ServerError, "busy"),
        (400, {"error": "invalid options: num_foo"}, BadRequest, "invalid options"),
    ],
)
async def test_http_errors(status: int, body: dict[str, Any], error: type, words: str) -> None:
    provider = make(Server({"/api/chat": answer(body, status)}))
    with pytest.raises(error, match=words) as info:
        await provider.complete(ask())
    with pytest.raises(error):
        await collect(provider.stream(ask()))
    await provider.aclose()
    assert info.value.status == status and "local-llama" in str(info.value)


async def test_html_answer_is_a_bad_request() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html><h1>Proxy login</h1></html>", headers={"content-type": "text/html"})

    provider = make(Server({"/api/chat": page}))
    with pytest.raises(BadRequest, match="Proxy login"):
        await provider.complete(ask())
    await provider.aclose()


async def test_connection_refused() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    provider = make(Server({"/api/chat": refuse}))
    with pytest.raises(ConnectionFailed, match="ollama serve") as info:
        await provider.complete(ask())
    await provider.aclose()
    assert info.value.transient


async def test_embed_and_tags() -> None:
    server = Server({"/api/embed": answer(recorded.EMBED), "/api/tags": answer(recorded.TAGS)})
    provider = make(server, embedding_model="all-minilm", keep_alive=0)
    vectors = await provider.embed(["Why is the sky blue?", "Why is the grass green?"])
    assert vectors == recorded.EMBED["embeddings"]
    assert server.last_json == {
        "model": "all-minilm",
        "input": ["Why is the sky blue?", "Why is the grass green?"],
        "keep_alive": 0,
    }
    assert await provider.list_models() == ["deepseek-r1:latest", "llama3.2:latest"]
    await provider.aclose()


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'keepalive' \(did you mean 'keep_alive'\?\)"):
        create(ModelConfig(alias="o", provider="ollama", model="m", keepalive="5m"))
    with pytest.raises(ConfigError, match="base_url"):
        create(ModelConfig(alias="o", provider="ollama", model="m", base_url="localhost:11434"))
    provider = create(ModelConfig(alias="o", provider="ollama", model="m", base_url="http://10.0.0.2:11434/api/"))
    assert provider.options.base_url == "http://10.0.0.2:11434"


async def test_through_the_kernel() -> None:
    kernel = load_kernel(
        {"models": {"local-llama": {"provider": "ollama", "model": recorded.MODEL}}, "taskloom": {"store": "memory"}}
    )
    async with kernel:
        provider = kernel.provider("local-llama")
        assert isinstance(provider, OllamaProvider) and provider.options.base_url == "http://127.0.0.1:11434"
        server = Server({"/api/chat": answer(recorded.CHAT)})
        provider._transport = httpx.MockTransport(server)  # the socket only; set before first use
        response = await kernel.gateway.complete(ask())
        assert response.text.startswith("Hello") and response.alias == "local-llama"
        assert str(server.requests[0].url) == "http://127.0.0.1:11434/api/chat"
