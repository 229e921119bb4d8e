"""Ollama answers and transport failures mapped to the kernel's error classes.

Ollama reports errors as ``{"error": "..."}`` with an HTTP status, or as such a line in
the middle of an NDJSON stream (the status then already said 200). The plugin never
retries: the kernel does, for ``transient`` errors.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from taskloom.errors import (
    BadRequest,
    ConnectionFailed,
    ContextWindowExceeded,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    ServerError,
)

_CONTEXT_TEXT = re.compile(r"context (length|window)|exceeds? .*context|too many tokens|input length", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def excerpt(body: bytes | str, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = _SPACES.sub(" ", re.sub(r"<[^>]+>", " ", text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def message_of(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return None


def classify(status: int, message: str, *, where: str, model: str, retry_after: float | None = None) -> ProviderError:
    """The error for an Ollama error message with its HTTP status (200 for a mid-stream line)."""
    kw: dict[str, Any] = {"provider": "ollama", "model": model, "status": status if status >= 400 else None}
    if _CONTEXT_TEXT.search(message):
        return ContextWindowExceeded(
            f"{where}: the prompt does not fit the context window: {message}; "
            "shorten the conversation or raise options.num_ctx",
            **kw,
        )
    if status == 429:
        return RateLimitError(f"{where}: rate limited (HTTP 429): {message}", retry_after=retry_after, **kw)
    if status == 404 and "not found" in message:
        return BadRequest(f"{where}: {message}; pull it first with `ollama pull <model>`", **kw)
    if status < 400 or status in (408, 409) or status >= 500:
        what = "failed mid-stream" if status < 400 else f"server error (HTTP {status})"
        return ServerError(f"{where}: {what}, may succeed if tried again: {message}", **kw)
    return BadRequest(f"{where}: request refused (HTTP {status}): {message}", **kw)


def error_from_response(response: httpx.Response, *, where: str, model: str) -> ProviderError:
    body = response.content
    message = message_of(body)
    if message is None:
        kind = "an HTML page" if body.lstrip()[:1] == b"<" else "a body that is not JSON"
        message = f"{kind}: {excerpt(body)!r}" if body.strip() else "an empty body"
    retry_after = None
    header = response.headers.get("retry-after")
    if header:
        try:
            retry_after = max(0.0, float(header))
        except ValueError:
            retry_after = None
    return classify(response.status_code, message, where=where, model=model, retry_after=retry_after)


def error_from_transport(exc: httpx.TransportError, *, where: str, model: str, started: bool) -> ProviderError:
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    kw: dict[str, Any] = {"provider": "ollama", "model": model}
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"{where}: timed out ({reason})", **kw)
    if started:
        return ServerError(f"{where}: the connection was lost before the answer was complete ({reason})", **kw)
    return ConnectionFailed(f"{where}: cannot reach Ollama ({reason}); is `ollama serve` running?", **kw)


def bad_body(where: str, what: str, body: bytes | str, *, model: str) -> BadRequest:
    return BadRequest(f"{where}: {what}: {excerpt(body)!r}", provider="ollama", model=model)
