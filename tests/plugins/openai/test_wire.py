"""Pure functions of ``taskloom-openai``: the wire format and header parsing."""

from __future__ import annotations

from datetime import UTC, datetime

from taskloom.types import ImagePart, Message, TextPart, ToolCall
from taskloom_openai.failures import excerpt, parse_retry_after
from taskloom_openai.wire import embedding_vector, message_json, tool_calls_from


def test_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 01 Jan 2025 12:00:20 GMT"}, now=now) == 20.0
    assert parse_retry_after({"retry-after": "Wed, 01 Jan 2025 11:00:00 GMT"}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_messages_in_openai_form() -> None:
    call = ToolCall.parse("c1", "add", {"a": 1})
    assert message_json(Message.assistant("", [call])) == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}],
    }
    assert message_json(Message.tool("c1", "add", "2")) == {"role": "tool", "tool_call_id": "c1", "content": "2"}
    image = Message.user([TextPart(text="what is it?"), ImagePart(data="AAAA", media_type="image/jpeg")])
    assert message_json(image)["content"] == [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
    ]


def test_malformed_tool_arguments_are_kept_verbatim() -> None:
    [call] = tool_calls_from([{"id": "x", "function": {"name": "add", "arguments": '{"a": 1'}}])
    assert call.arguments is None and call.raw_arguments == '{"a": 1'


def test_per_token_embeddings_are_mean_pooled() -> None:
    assert embedding_vector([[1.0, 2.0], [3.0, 4.0]]) == [2.0, 3.0]
    assert embedding_vector([0.5, 1]) == [0.5, 1.0]


def test_excerpt_is_short_and_tagless() -> None:
    text = excerpt(b"<html>\n<h1>Oops</h1>" + b"x" * 500)
    assert text.startswith("Oops") and len(text) == 200 and text.endswith("...")
