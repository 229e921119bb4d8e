"""The ``ollama`` provider: one model deployment on an Ollama server, native API.

One pooled :class:`httpx.AsyncClient` per deployment. Streams are NDJSON, one JSON object
a line, the last with ``"done": true`` and the token counts; an ``{"error": ...}`` line can
arrive in the middle. The plugin never retries: the kernel does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from taskloom.config import ModelConfig
from taskloom.errors import ServerError
from taskloom.tokens import count_messages, count_text
from taskloom.types import Capabilities, Message, ModelRequest, ModelResponse, StreamDelta, ToolCall, Usage

from . import __version__
from .failures import bad_body, classify, error_from_response, error_from_transport
from .options import OllamaOptions
from .wire import chat_body, finish_reason, tool_call, usage_from

PROVIDER = "ollama"
DEFAULT_CONTEXT = 2048
_HTML_STREAM = "expected an NDJSON stream, got an HTML page (is base_url an Ollama server, not a proxy or web page?)"


class OllamaProvider:
    """A :class:`taskloom.types.Provider` for one ``[models.<alias>]`` table."""

    name = PROVIDER

    def __init__(
        self, config: ModelConfig, options: OllamaOptions, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.alias = config.alias or PROVIDER
        self.model = config.model
        self.options = options
        self._timeout = httpx.Timeout(
            connect=options.connect_timeout,
            read=options.read_timeout or config.timeout,
            write=options.read_timeout or config.timeout,
            pool=options.connect_timeout,
        )
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.in_flight = 0
        """Requests started and not yet finished (a cancelled stream must bring it back to 0)."""

    def __repr__(self) -> str:
        return f"OllamaProvider(alias={self.alias!r}, model={self.model!r}, base_url={self.options.base_url!r})"

    # ------------------------------------------------------------------ plumbing

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self.options.max_connections,
                max_keepalive_connections=self.options.max_connections,
            )
            self._client = httpx.AsyncClient(
                base_url=self.options.base_url + "/",
                headers={"User-Agent": f"taskloom-ollama/{__version__}", **self.options.headers},
                timeout=self._timeout,
                limits=limits,
                transport=self._transport,
            )
        return self._client

    def _where(self, path: str) -> str:
        return f"model {self.alias!r} ({self.options.base_url}/{path})"

    async def _request_json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        where = self._where(path)
        self.in_flight += 1
        try:
            response = await self._http().request(method, path, json=body)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, where=where, model=self.alias, started=False) from None
        finally:
            self.in_flight -= 1
        if response.status_code >= 400:
            raise error_from_response(response, where=where, model=self.alias)
        try:
            data = response.json()
        except ValueError:
            html = response.content.lstrip()[:1] == b"<"
            what = "expected a JSON answer, got an HTML page" if html else "expected a JSON answer, got"
            raise bad_body(where, what, response.content, model=self.alias) from None
        if not isinstance(data, dict):
            raise bad_body(where, "expected a JSON object, got", response.content, model=self.alias)
        if isinstance(data.get("error"), str):
            raise classify(200, data["error"], where=where, model=self.alias)
        return data

    # ------------------------------------------------------------------ provider

    def capabilities(self) -> Capabilities:
        window = self.options.context_window or self.options.options.get("num_ctx") or DEFAULT_CONTEXT
        return Capabilities(
            tools=True, streaming=True, embeddings=True, structured_output=True, context_window=int(window)
        )

    def count_tokens(self, messages: list[Message]) -> int:
        # Ollama's native API has no tokenize endpoint: tiktoken's count is the estimate.
        return count_messages(messages, self.model)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        path = "api/chat"
        data = await self._request_json("POST", path, chat_body(request, self.model, self.options, stream=False))
        raw = data.get("message")
        if not isinstance(raw, dict):
            raise bad_body(self._where(path), "the answer has no message", json.dumps(data), model=self.alias)
        prefix = f"call_{uuid.uuid4().hex[:12]}"
        calls = [tool_call(item, i, prefix)[1] for i, item in enumerate(raw.get("tool_calls") or [])]
        text = str(raw.get("content") or "")
        return ModelResponse(
            message=Message.assistant(text, calls),
            finish_reason=finish_reason(data, bool(calls)),
            usage=usage_from(data) or self._estimate(request, text, calls),
            model=str(data.get("model") or self.model),
            provider=PROVIDER,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamDelta]:
        path = "api/chat"
        where = self._where(path)
        body = chat_body(request, self.model, self.options, stream=True)
        prefix = f"call_{uuid.uuid4().hex[:12]}"
        started = False
        final: dict[str, Any] | None = None
        calls: list[ToolCall] = []
        text: list[str] = []
        self.in_flight += 1
        try:
            async with self._http().stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response, where=where, model=self.alias)
                if "html" in response.headers.get("content-type", ""):
                    # A proxy's login or error page, not Ollama.
                    await response.aread()
                    raise bad_body(where, _HTML_STREAM, response.content, model=self.alias)
                started = True
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                    except ValueError:
                        what = _HTML_STREAM if line.lstrip().startswith("<") else "a stream line that is not JSON"
                        raise bad_body(where, what, line, model=self.alias) from None
                    if not isinstance(data, dict):
                        raise bad_body(where, "a stream line that is not a JSON object", line, model=self.alias)
                    if "error" in data:
                        raise classify(200, str(data["error"]), where=where, model=self.alias)
                    message = data.get("message") or {}
                    if message.get("content"):
                        text.append(message["content"])
                        yield StreamDelta(text=message["content"])
                    for item in message.get("tool_calls") or []:
                        # Ollama sends whole calls; number them across the stream.
                        _, call = tool_call(item, len(calls), prefix)
                        index = len(calls)
                        calls.append(call)
                        yield StreamDelta(
                            tool_index=index, tool_id=call.id, tool_name=call.name, arguments=call.raw_arguments
                        )
                    if data.get("done"):
                        final = data
                        break
        except httpx.TransportError as exc:
            raise error_from_transport(exc, where=where, model=self.alias, started=started) from None
        finally:
            self.in_flight -= 1
        if final is None:
            raise ServerError(
                f'{where}: the stream ended before its "done": true line; the answer is incomplete',
                provider=PROVIDER,
                model=self.alias,
            )
        yield StreamDelta(
            usage=usage_from(final) or self._estimate(request, "".join(text), calls),
            finish_reason=finish_reason(final, bool(calls)),
            model=str(final.get("model") or self.model),
        )

    async def embed(self, texts: list[str]) -> list[list[float]]:
        path = "api/embed"
        body: dict[str, Any] = {"model": self.options.embedding_model or self.model, "input": texts}
        if self.options.keep_alive is not None:
            body["keep_alive"] = self.options.keep_alive
        if self.options.options:
            body["options"] = dict(self.options.options)
        data = await self._request_json("POST", path, body)
        vectors = data.get("embeddings")
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise bad_body(
                self._where(path), f"expected {len(texts)} embeddings, got", json.dumps(data), model=self.alias
            )
        try:
            return [[float(x) for x in vector] for vector in vectors]
        except (TypeError, ValueError):
            raise bad_body(self._where(path), "malformed embeddings", json.dumps(data), model=self.alias) from None

    async def list_models(self) -> list[str]:
        """The models pulled on the server (GET /api/tags), for ``taskloom models --list``."""
        data = await self._request_json("GET", "api/tags")
        return sorted(str(m["name"]) for m in data.get("models") or [] if isinstance(m, dict) and "name" in m)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _estimate(self, request: ModelRequest, text: str, calls: list[ToolCall]) -> Usage:
        out = text + "".join(c.raw_arguments for c in calls)
        return Usage(input_tokens=self.count_tokens(request.messages), output_tokens=count_text(out, self.model))
