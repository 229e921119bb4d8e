"""``taskloom-ollama`` passes the provider conformance suite.

No Ollama server can run here, so the provider's real httpx client talks to
:class:`httpx.MockTransport` answering with the recorded bodies of Ollama's documented
wire format (``recorded.py``): a text answer, a forced tool call (arguments as a JSON
object), a context-length refusal and embeddings. What the suite checks is the plugin:
request building, NDJSON parsing, usage, error mapping, cancellation."""

from __future__ import annotations

import hashlib
import json

import httpx
from taskloom.config import ModelConfig
from taskloom.testing.conformance import ProviderConformance
from taskloom_ollama.plugin import create
from taskloom_ollama.provider import OllamaProvider

from . import recorded

CONTEXT = 2048


def recorded_ollama(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content) if request.content else {}
    if request.url.path == "/api/embed":
        vectors = [[b / 255 for b in hashlib.sha256(text.encode()).digest()[:16]] for text in body["input"]]
        return httpx.Response(200, json={**recorded.EMBED, "embeddings": vectors})
    if request.url.path != "/api/chat":
        return httpx.Response(404, json={"error": "not found"})
    if sum(len(m["content"]) for m in body["messages"]) > CONTEXT * 4:
        return httpx.Response(400, json=recorded.CONTEXT_TOO_LONG)
    tools = body.get("tools") or []
    if tools:
        weather = recorded.TOOL_CALL["message"]["tool_calls"][0]
        answer = {**recorded.TOOL_CALL, "message": {"role": "assistant", "content": "", "tool_calls": [weather]}}
        if not body["stream"]:
            return httpx.Response(200, json=answer)
        lines = [{**answer, "done": False}, {**recorded.TOOL_CALL, "message": {"role": "assistant", "content": ""}}]
        return httpx.Response(200, content="".join(recorded.line(x) for x in lines).encode())
    if body["stream"]:
        return httpx.Response(200, content=recorded.CHAT_STREAM.encode())
    return httpx.Response(200, json=recorded.CHAT)


class TestOllamaConformance(ProviderConformance):
    model = "local-llama"

    def make_provider(self) -> OllamaProvider:
        config = ModelConfig(alias="local-llama", provider="ollama", model=recorded.MODEL, options={"num_ctx": CONTEXT})
        return create(config, transport=httpx.MockTransport(recorded_ollama))
