"""The ``openai`` provider: one model deployment on an OpenAI-compatible server.

One pooled :class:`httpx.AsyncClient` per deployment (created on first use, closed by
``aclose``). Server-sent events are read with ``httpx-sse``. The plugin never retries:
failures are classified (see :mod:`taskloom_openai.failures`) and the kernel retries.
The API key lives only in the client's default headers; every message that leaves the
provider passes through :meth:`OpenAIProvider._redact`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse
from taskloom.config import ModelConfig
from taskloom.errors import BadRequest, ProviderError, ServerError
from taskloom.tokens import count_messages, count_text
from taskloom.types import Capabilities, Message, ModelRequest, ModelResponse, StreamDelta, Usage

from . import __version__
from .failures import bad_body, error_from_response, error_from_transport
from .options import OpenAIOptions
from .wire import chat_body, embedding_vector, finish_reason, tool_calls_from, usage_from

PROVIDER = "openai"


class OpenAIProvider:
    """A :class:`taskloom.types.Provider` for one ``[models.<alias>]`` table."""

    name = PROVIDER

    def __init__(
        self,
        config: ModelConfig,
        options: OpenAIOptions,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.alias = config.alias or PROVIDER
        self.model = config.model
        self.options = options
        secret = options.key_secret()
        # Read now, so a missing variable is reported when the alias is first used
        # (ConfigError naming the variable, never a value).
        self._key = secret.get_secret_value() if secret is not None else None
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
        return f"OpenAIProvider(alias={self.alias!r}, model={self.model!r}, base_url={self.options.base_url!r})"

    # ------------------------------------------------------------------ plumbing

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"User-Agent": f"taskloom-openai/{__version__}", **self.options.headers}
            if self._key:
                headers["Authorization"] = f"Bearer {self._key}"
            if self.options.organization:
                headers["OpenAI-Organization"] = self.options.organization
            limits = httpx.Limits(
                max_connections=self.options.max_connections,
                max_keepalive_connections=self.options.max_connections,
            )
            self._client = httpx.AsyncClient(
                base_url=self.options.base_url + "/",
                headers=headers,
                timeout=self._timeout,
                limits=limits,
                transport=self._transport,
            )
        return self._client

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "**********") if self._key else text

    def _where(self, path: str) -> str:
        return f"model {self.alias!r} ({self.options.base_url}/{path})"

    def _kw(self) -> dict[str, Any]:
        return {"provider": PROVIDER, "model": self.alias, "redact": self._redact}

    async def _request_json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        where = self._where(path)
        self.in_flight += 1
        try:
            response = await self._http().request(method, path, json=body)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, where=where, started=False, **self._kw()) from None
        finally:
            self.in_flight -= 1
        if response.status_code >= 400:
            raise error_from_response(
                response.status_code, response.headers, response.content, where=where, **self._kw()
            )
        try:
            data = response.json()
        except ValueError:
            raise bad_body(where, "expected a JSON answer", response.content, **self._kw()) from None
        if not isinstance(data, dict):
            raise bad_body(where, "the answer is not a JSON object", response.content, **self._kw())
        return data

    # ------------------------------------------------------------------ provider

    def capabilities(self) -> Capabilities:
        return Capabilities(
            tools=True,
            streaming=True,
            embeddings=True,
            structured_output=True,
            context_window=self.options.context_window,
        )

    def count_tokens(self, messages: list[Message]) -> int:
        return count_messages(messages, self.model)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        path = "chat/completions"
        data = await self._request_json("POST", path, chat_body(request, self.model, self.options, stream=False))
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise bad_body(self._where(path), "the answer has no choices", json.dumps(data), **self._kw())
        choice = choices[0]
        raw = choice.get("message") or {}
        calls = tool_calls_from(raw.get("tool_calls"))
        content = raw.get("content") or ""
        if isinstance(content, list):  # some servers answer content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        finish = finish_reason(choice.get("finish_reason")) or "stop"
        if calls and finish == "stop":
            finish = "tool_calls"  # OpenAI says "stop" when a named tool was forced
        usage = usage_from(data.get("usage")) or self._estimate(request, str(content), calls)
        return ModelResponse(
            message=Message.assistant(str(content), calls),
            finish_reason=finish,
            usage=usage,
            # Redacted too: a proxy that echoes the key there would put it in the ledger.
            model=self._redact(str(data.get("model") or self.model)),
            provider=PROVIDER,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamDelta]:
        path = "chat/completions"
        where = self._where(path)
        body = chat_body(request, self.model, self.options, stream=True)
        started = done = False
        usage: Usage | None = None
        finish = None
        model: str | None = None
        named: set[int] = set()
        ids: dict[int, str] = {}
        pieces = 0  # chunks carrying output: the token count when the server sends no usage
        self.in_flight += 1
        try:
            async with aconnect_sse(self._http(), "POST", path, json=body) as source:
                response = source.response
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(
                        response.status_code, response.headers, response.content, where=where, **self._kw()
                    )
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    await response.aread()
                    raise bad_body(
                        where,
                        f"asked for a stream of server-sent events, got {content_type or 'no content type'}",
                        response.content,
                        **self._kw(),
                    )
                started = True
                async for event in source.aiter_sse():
                    data = event.data.strip()
                    if data == "[DONE]":
                        done = True
                        break
                    if not data:
                        continue
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise bad_body(where, "a stream event that is not JSON", data, **self._kw()) from None
                    if not isinstance(chunk, dict):
                        raise bad_body(where, "a stream event that is not a JSON object", data, **self._kw())
                    if chunk.get("error") and not chunk.get("choices"):
                        raise self._stream_error(where, chunk)
                    usage = usage_from(chunk.get("usage")) or usage
                    model = chunk.get("model") or model
                    for choice in chunk.get("choices") or []:
                        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                            continue
                        delta = choice.get("delta") or {}
                        text = delta.get("content")
                        if text:
                            pieces += 1
                            yield StreamDelta(text=text)
                        for call in delta.get("tool_calls") or []:
                            index = int(call.get("index", 0))
                            function = call.get("function") or {}
                            # Some servers (llama.cpp) repeat the id and name in every fragment.
                            name = function.get("name") if index not in named else None
                            if name:
                                named.add(index)
                            call_id = call.get("id")
                            if call_id and ids.get(index) != call_id:
                                ids[index] = call_id
                            else:
                                call_id = None
                            arguments = function.get("arguments") or ""
                            pieces += 1 if arguments else 0
                            if call_id or name or arguments:
                                yield StreamDelta(
                                    tool_index=index, tool_id=call_id, tool_name=name, arguments=arguments
                                )
                        finish = finish_reason(choice.get("finish_reason")) or finish
        except SSEError as exc:
            raise BadRequest(
                f"{where}: asked for a stream of server-sent events, got something else ({exc})",
                provider=PROVIDER,
                model=self.alias,
            ) from None
        except httpx.TransportError as exc:
            raise error_from_transport(exc, where=where, started=started, **self._kw()) from None
        finally:
            self.in_flight -= 1
        if not done:
            raise ServerError(
                f"{where}: the stream ended before 'data: [DONE]'; the answer is incomplete",
                provider=PROVIDER,
                model=self.alias,
            )
        if finish in (None, "stop") and named:
            finish = "tool_calls"
        if usage is None:
            # The server ignored stream_options.include_usage (llama.cpp's does): servers
            # that do stream one token per chunk, so the chunks are the output count.
            usage = Usage(input_tokens=self.count_tokens(request.messages), output_tokens=pieces)
        yield StreamDelta(usage=usage, finish_reason=finish or "stop", model=self._redact(str(model or self.model)))

    def _stream_error(self, where: str, chunk: dict[str, Any]) -> ProviderError:
        """An error event inside a 200 stream: classified by its status or code when given."""
        status = chunk["error"].get("status") if isinstance(chunk["error"], dict) else None
        body = json.dumps(chunk).encode()
        if isinstance(status, int) and status >= 400:
            return error_from_response(status, {}, body, where=where, **self._kw())
        return error_from_response(500, {}, body, where=where + " mid-stream", **self._kw())

    async def embed(self, texts: list[str]) -> list[list[float]]:
        size = self.options.embed_batch_size
        vectors: list[list[float]] = []
        for start in range(0, len(texts), size):
            vectors.extend(await self._embed_batch(texts[start : start + size]))
        return vectors

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        path = "embeddings"
        body = {"model": self.options.embedding_model or self.model, "input": texts}
        data = await self._request_json("POST", path, body)
        items = data.get("data")
        if not isinstance(items, list) or len(items) != len(texts):
            raise bad_body(self._where(path), f"expected {len(texts)} embeddings", json.dumps(data), **self._kw())
        try:
            ordered = sorted(items, key=lambda item: int(item.get("index", 0)))
            return [embedding_vector(item["embedding"]) for item in ordered]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise bad_body(self._where(path), "malformed embeddings", json.dumps(data), **self._kw()) from None

    async def list_models(self) -> list[str]:
        """The model ids the server offers (GET /models), for ``taskloom models --list``."""
        data = await self._request_json("GET", "models")
        return sorted(str(m["id"]) for m in data.get("data") or [] if isinstance(m, dict) and "id" in m)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # ------------------------------------------------------------------ helpers

    def _estimate(self, request: ModelRequest, text: str, calls: list[Any]) -> Usage:
        out = text + "".join(c.raw_arguments for c in calls)
        return Usage(input_tokens=self.count_tokens(request.messages), output_tokens=count_text(out, self.model))
