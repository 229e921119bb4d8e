"""How ``taskloom-openai`` classifies failures and keeps its API key secret, against a tiny
real HTTP server on 127.0.0.1 (``fake_server`` in conftest.py) that answers each case."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from taskloom import hookimpl, load_kernel
from taskloom.cli import main
from taskloom.config import ModelConfig
from taskloom.errors import (
    AuthenticationError,
    BadRequest,
    ConfigError,
    ContextWindowExceeded,
    ProviderError,
    RateLimitError,
    ServerError,
)
from taskloom.gateway import StreamAssembler
from taskloom.testing import register_plugin
from taskloom.types import Event, Message, ModelRequest, ToolSpec
from taskloom_openai.plugin import create
from taskloom_openai.provider import OpenAIProvider

from .conftest import FakeServer, Reply

pytestmark = pytest.mark.anyio

FAKE_KEY = "sk-test-0123456789abcdefSECRET"
JSON = {"content-type": "application/json"}


def jbody(data: Any) -> bytes:
    return json.dumps(data).encode()


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    return json.dumps({"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})


def make(fake: FakeServer, case: str, **options: Any) -> OpenAIProvider:
    return create(ModelConfig(alias="fake", provider="openai", model="m", base_url=fake.url(case), **options))


def ask(**kw: Any) -> ModelRequest:
    return ModelRequest(model="fake", messages=[Message.user("hi")], max_tokens=5, **kw)


@pytest.fixture
def with_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TASKLOOM_TEST_OPENAI_KEY", FAKE_KEY)
    return FAKE_KEY


async def fail(fake: FakeServer, case: str, reply: Reply, *, stream: bool = False, **options: Any) -> ProviderError:
    fake.replies[case] = reply
    provider = make(fake, case, **options)
    try:
        with pytest.raises(ProviderError) as info:
            if stream:
                async for _ in provider.stream(ask()):
                    pass
            else:
                await provider.complete(ask())
    finally:
        await provider.aclose()
    return info.value


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "transient", "words"),
    [
        (
            200,
            {"content-type": "text/html"},
            b"<html><body><h1>Welcome to nginx!</h1></body></html>",
            BadRequest,
            False,
            "HTML page: 'Welcome to nginx!'",
        ),
        (
            502,
            {"content-type": "text/html"},
            b"<html><h1>502 Bad Gateway</h1></html>",
            ServerError,
            True,
            "502 Bad Gateway",
        ),
        (200, JSON, b"not json at all", BadRequest, False, "a body that is not JSON"),
        (200, JSON, jbody({"object": "list"}), BadRequest, False, "no choices"),
        (
            401,
            JSON,
            jbody({"error": {"message": "Invalid token", "code": "invalid_api_key"}}),
            AuthenticationError,
            False,
            "credentials refused",
        ),
        (403, JSON, jbody({"error": "forbidden"}), AuthenticationError, False, "HTTP 403"),
        (
            400,
            JSON,
            jbody({"error": {"message": "too long", "code": "context_length_exceeded"}}),
            ContextWindowExceeded,
            False,
            "context window",
        ),
        (
            400,
            JSON,
            jbody({"error": {"message": "This model's maximum context length is 8192 tokens"}}),
            ContextWindowExceeded,
            False,
            "maximum context length",
        ),
        (400, JSON, jbody({"error": {"message": "unknown parameter foo"}}), BadRequest, False, "unknown parameter foo"),
        (404, JSON, jbody({"error": {"message": "model m does not exist"}}), BadRequest, False, "HTTP 404"),
        (500, JSON, jbody({"error": {"message": "boom"}}), ServerError, True, "boom"),
        (503, {}, b"", ServerError, True, "empty body"),
        (408, JSON, jbody({"error": "timeout"}), ServerError, True, "HTTP 408"),
        (409, JSON, jbody({"error": "conflict"}), ServerError, True, "HTTP 409"),
    ],
)
async def test_http_answers_are_classified(
    fake_server: FakeServer, status: int, headers: dict[str, str], body: bytes, error: type, transient: bool, words: str
) -> None:
    exc = await fail(fake_server, f"s{status}-{len(body)}", Reply(status, headers, body))
    assert type(exc) is error
    assert exc.transient is transient
    assert words in str(exc)
    assert exc.provider == "openai" and exc.model == "fake"
    assert "fake" in str(exc) and "/chat/completions" in str(exc), "the message names the alias and the URL"
    if status >= 400:
        assert exc.status == status


async def test_rate_limit_with_retry_after_seconds(fake_server: FakeServer) -> None:
    exc = await fail(
        fake_server, "rl", Reply(429, {"retry-after": "7", **JSON}, jbody({"error": {"message": "slow down"}}))
    )
    assert isinstance(exc, RateLimitError) and exc.transient
    assert exc.retry_after == 7.0
    assert "wait 7 s" in str(exc) and "slow down" in str(exc)


async def test_rate_limit_with_retry_after_http_date(fake_server: FakeServer) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    exc = await fail(fake_server, "rl-date", Reply(429, {"retry-after": when}, b""))
    assert isinstance(exc, RateLimitError)
    assert exc.retry_after is not None and 25 <= exc.retry_after <= 30


async def test_stream_error_answers_are_classified(fake_server: FakeServer) -> None:
    exc = await fail(fake_server, "rl-stream", Reply(429, {"retry-after": "2"}, b"{}"), stream=True)
    assert isinstance(exc, RateLimitError) and exc.retry_after == 2.0
    exc = await fail(
        fake_server, "html-stream", Reply(200, {"content-type": "text/html"}, b"<html>hi</html>"), stream=True
    )
    assert isinstance(exc, BadRequest) and "server-sent events" in str(exc)


async def test_stream_closed_before_done_is_transient(fake_server: FakeServer) -> None:
    events = [chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo"})]
    exc = await fail(fake_server, "cut", Reply(events=events), stream=True)
    assert isinstance(exc, ServerError) and exc.transient
    assert "[DONE]" in str(exc)


async def test_error_event_mid_stream(fake_server: FakeServer) -> None:
    events = [chunk({"content": "Hel"}), json.dumps({"error": {"message": "overloaded", "type": "server_error"}})]
    exc = await fail(fake_server, "err-event", Reply(events=events), stream=True)
    assert isinstance(exc, ServerError) and "overloaded" in str(exc)


async def test_openai_style_tool_call_fragments_and_usage(fake_server: FakeServer) -> None:
    """OpenAI sends the id and name once, then argument fragments, interleaving calls by index."""
    events = [
        chunk({"role": "assistant", "content": None}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "add", "arguments": ""}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1,'}}]}),
        chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "type": "function", "function": {"name": "neg", "arguments": '{"x"'}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "b": 2}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": ": 3}"}}]}),
        chunk({}, "tool_calls"),
        json.dumps(
            {
                "model": "m",
                "choices": [],
                "usage": {"prompt_tokens": 20, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 4}},
            }
        ),
        "[DONE]",
    ]
    fake_server.replies["tools"] = Reply(events=events)
    provider = make(fake_server, "tools")
    tools = [ToolSpec(name="add"), ToolSpec(name="neg")]
    deltas = [d async for d in provider.stream(ask(tools=tools, tool_choice="required"))]
    await provider.aclose()
    assembler = StreamAssembler()
    for d in deltas:
        assembler.add(d)
    response = assembler.response()
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_a", "add", {"a": 1, "b": 2}),
        ("call_b", "neg", {"x": 3}),
    ]
    assert response.finish_reason == "tool_calls"
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.cached_input_tokens) == (20, 9, 4)
    sent = fake_server.requests[-1]["json"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["tool_choice"] == "required"


async def test_request_body(fake_server: FakeServer, with_key: str) -> None:
    answer = {
        "model": "m-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}],
    }
    fake_server.replies["body"] = Reply(200, JSON, jbody(answer))
    provider = make(
        fake_server,
        "body",
        api_key={"env": "TASKLOOM_TEST_OPENAI_KEY"},
        organization="org-1",
        headers={"X-Team": "blue"},
        extra_body={"top_k": 3},
    )
    schema = {"title": "Answer", "type": "object", "properties": {}}
    request = ask(
        tools=[ToolSpec(name="add")], tool_choice="add", temperature=0.5, seed=3, stop=["\n"], output_schema=schema
    )
    response = await provider.complete(request)
    await provider.aclose()
    assert response.model == "m-2024" and response.usage.input_tokens > 0, (
        "usage is estimated when the server sends none"
    )
    sent = fake_server.requests[-1]
    body = sent["json"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert body["tools"][0]["function"]["name"] == "add"
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "Answer", "schema": schema}}
    assert (body["temperature"], body["seed"], body["stop"], body["max_tokens"], body["top_k"]) == (
        0.5,
        3,
        ["\n"],
        5,
        3,
    )
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["authorization"] == f"Bearer {with_key}"
    assert headers["openai-organization"] == "org-1" and headers["x-team"] == "blue"


async def test_no_authorization_header_without_a_key(fake_server: FakeServer) -> None:
    fake_server.replies["nokey"] = Reply(200, JSON, jbody({"object": "list", "data": [{"id": "b"}, {"id": "a"}]}))
    provider = make(fake_server, "nokey")
    assert await provider.list_models() == ["a", "b"]
    await provider.aclose()
    assert "authorization" not in {k.lower() for k in fake_server.requests[-1]["headers"]}


# --------------------------------------------------------------------------- secrets


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        create(ModelConfig(alias="gpt", provider="openai", model="gpt-4o"))  # api.openai.com needs a key
    monkeypatch.delenv("MY_GATEWAY_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_GATEWAY_KEY"):
        create(
            ModelConfig(
                alias="gw",
                provider="openai",
                model="m",
                base_url="http://127.0.0.1:1/v1",
                api_key={"env": "MY_GATEWAY_KEY"},
            )
        )


async def test_missing_key_through_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_GATEWAY_KEY", raising=False)
    kernel = load_kernel(
        {
            "models": {"gw": {"provider": "openai", "model": "m", "api_key": {"env": "MY_GATEWAY_KEY"}}},
            "taskloom": {"store": "memory"},
        }
    )
    async with kernel:
        with pytest.raises(ConfigError, match="environment variable MY_GATEWAY_KEY is not set"):
            await kernel.gateway.complete(ModelRequest(model="gw", messages=[Message.user("hi")]))


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"\[models.x\] unknown key 'base_ulr' \(did you mean 'base_url'\?\)"):
        create(ModelConfig(alias="x", provider="openai", base_ulr="http://127.0.0.1/v1"))
    with pytest.raises(ConfigError, match="base_url"):
        create(ModelConfig(alias="x", provider="openai", base_url="127.0.0.1:8000"))


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def taskloom_event(self, event: Event) -> None:
        self.events.append(event)


async def test_the_key_never_leaks(fake_server: FakeServer, with_key: str, caplog: pytest.LogCaptureFixture) -> None:
    """A server that echoes the key back: it is redacted from every message, repr, event and log."""
    caplog.set_level(logging.DEBUG)
    echo = jbody({"error": {"message": f"Incorrect API key provided: {with_key}", "code": "invalid_api_key"}})
    fake_server.replies["leak"] = Reply(401, JSON, echo)
    fake_server.replies["leak-500"] = Reply(500, {"content-type": "text/html"}, f"<p>bad key {with_key}</p>".encode())
    sink = Sink()
    config = {
        "models": {
            case: {
                "provider": "openai",
                "model": "m",
                "base_url": fake_server.url(case),
                "api_key": {"env": "TASKLOOM_TEST_OPENAI_KEY"},
                "retry": {"attempts": 2, "base_delay": 0.01},
            }
            for case in ("leak", "leak-500")
        },
        "taskloom": {"store": "memory", "cache": "none"},
    }
    with register_plugin(sink, "leak-sink"):
        kernel = load_kernel(config)
    errors: list[BaseException] = []
    async with kernel:
        for case in ("leak", "leak-500"):
            with pytest.raises(ProviderError) as info:
                await kernel.gateway.complete(ModelRequest(model=case, messages=[Message.user("hi")]))
            errors.append(info.value)
        with pytest.raises(ProviderError) as info:
            async for _ in kernel.gateway.stream(ModelRequest(model="leak", messages=[Message.user("hi")])):
                pass
        errors.append(info.value)
        provider = kernel.provider("leak")
        texts = [repr(provider), str(provider), repr(provider.__dict__.get("options")), repr(kernel.settings.to_dict())]
    assert isinstance(errors[0], AuthenticationError) and "**********" in str(errors[0])
    assert isinstance(errors[1], ServerError)
    texts += [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [e.model_dump_json() for e in sink.events]
    texts.append(caplog.text)
    assert sink.events, "the sink saw the failures"
    for text in texts:
        assert with_key not in text


def test_models_list_command(fake_server: FakeServer, tmp_path: Path) -> None:
    """``taskloom models --list --json`` asks GET /models through the plugin."""
    fake_server.replies["cli"] = Reply(
        200, JSON, jbody({"object": "list", "data": [{"id": "m-small"}, {"id": "m-big"}]})
    )
    config = tmp_path / "taskloom.toml"
    config.write_text(
        f'[taskloom]\nstore = "memory"\n\n[models.srv]\nprovider = "openai"\nmodel = "m"\n'
        f'base_url = "{fake_server.url("cli")}"\ncontext_window = 4096\n'
    )
    result = CliRunner().invoke(main, ["--config", str(config), "models", "--list", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [row] = [r for r in json.loads(result.stdout) if r["alias"] == "srv"]
    assert row["provider"] == "openai" and row["available"] == ["m-big", "m-small"]
    assert row["capabilities"]["context_window"] == 4096 and row["capabilities"]["embeddings"] is True
