"""HTTP answers and transport failures mapped to the kernel's error classes.

The plugin never retries: it classifies, and the kernel's gateway decides (``transient``
errors are retried with backoff, ``retry_after`` is honoured).

| what happened                                   | error                   | transient |
|-------------------------------------------------|-------------------------|-----------|
| 429                                             | RateLimitError          | yes       |
| 408, 409, 5xx                                   | ServerError             | yes       |
| 400/413/422 about the context length            | ContextWindowExceeded   | no        |
| 401, 403                                        | AuthenticationError     | no        |
| other 4xx; a 2xx body that is not the JSON asked | BadRequest              | no        |
| connection refused or reset before an answer    | ConnectionFailed        | yes       |
| connect / read timeout                          | ProviderTimeout         | yes       |
| a stream cut before ``data: [DONE]``            | ServerError             | yes       |
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from taskloom.errors import (
    AuthenticationError,
    BadRequest,
    ConnectionFailed,
    ContextWindowExceeded,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    ServerError,
)

EXCERPT_CHARS = 200
_CONTEXT_CODES = {"context_length_exceeded", "context_window_exceeded", "string_above_max_length"}
_CONTEXT_TEXT = re.compile(
    r"context[ _-]?(length|window)|maximum context|exceeds? the context|too many tokens|prompt is too long",
    re.IGNORECASE,
)
_TAGS = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")

Redact = Callable[[str], str]


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI) or ``Retry-After`` given as
    seconds or as an HTTP date; None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def excerpt(body: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """A short one-line sample of a body, HTML tags removed."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = _SPACES.sub(" ", _TAGS.sub(" ", text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_body(body: bytes | str) -> str:
    """``an HTML page: '...'``, ``a body that is not JSON: '...'`` or ``an empty body``."""
    raw = body.encode() if isinstance(body, str) else body
    if not raw.strip():
        return "an empty body"
    kind = "an HTML page" if raw.lstrip()[:1] == b"<" else "a body that is not JSON"
    return f"{kind}: {excerpt(raw)!r}"


def error_details(payload: Any) -> tuple[str, str]:
    """(message, code) of an OpenAI-style error body ``{"error": {...}}`` or ``{"error": "..."}``."""
    if not isinstance(payload, dict):
        return "", ""
    err = payload.get("error", payload)
    if isinstance(err, str):
        return err, ""
    if isinstance(err, dict):
        message = err.get("message") or err.get("detail") or ""
        code = err.get("code") or err.get("type") or ""
        return str(message), str(code)
    detail = payload.get("detail")
    return (json.dumps(detail)[:EXCERPT_CHARS] if detail else ""), ""


def is_context_error(message: str, code: str) -> bool:
    return code in _CONTEXT_CODES or bool(_CONTEXT_TEXT.search(message))


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    where: str,
    provider: str,
    model: str,
    redact: Redact,
) -> ProviderError:
    """The error for a non-2xx answer. ``where`` names the deployment and URL."""
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    message, code = error_details(payload)
    if payload is None or not message:
        detail = describe_body(body)
    else:
        detail = f"{message}" + (f" (code {code})" if code else "")
    detail = redact(detail)
    kw: dict[str, Any] = {"provider": provider, "model": model, "status": status}
    if status == 429:
        retry_after = parse_retry_after(headers)
        wait = f"; the server asks to wait {retry_after:g} s" if retry_after is not None else ""
        return RateLimitError(f"{where}: rate limited (HTTP 429){wait}: {detail}", retry_after=retry_after, **kw)
    if status in (408, 409) or status >= 500:
        return ServerError(f"{where}: server error (HTTP {status}), may succeed if tried again: {detail}", **kw)
    if status in (400, 413, 422) and is_context_error(message, code):
        return ContextWindowExceeded(
            f"{where}: the prompt does not fit the model's context window (HTTP {status}): {detail}; "
            "shorten the conversation or use a model with a larger context",
            **kw,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"{where}: credentials refused (HTTP {status}): {detail}; check the api_key of this model alias", **kw
        )
    return BadRequest(f"{where}: request refused (HTTP {status}): {detail}", **kw)


def bad_body(where: str, what: str, body: bytes | str, *, provider: str, model: str, redact: Redact) -> BadRequest:
    """A 2xx answer whose body is not what the API promises."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        json.loads(text)
        found = f"{excerpt(text)!r}"
    except ValueError:
        found = describe_body(body) + "; is base_url the API root (such as http://host:port/v1)?"
    return BadRequest(f"{where}: {what}, got {redact(found)}", provider=provider, model=model)


def error_from_transport(
    exc: httpx.TransportError, *, where: str, provider: str, model: str, started: bool, redact: Redact
) -> ProviderError:
    """The error for a failure below HTTP. ``started`` is True once the answer's headers
    arrived: a connection lost after that is a stream cut short (ServerError)."""
    reason = redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    kw: dict[str, Any] = {"provider": provider, "model": model}
    if isinstance(exc, httpx.TimeoutException):
        phase = "connecting" if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)) else "waiting for the answer"
        return ProviderTimeout(f"{where}: timed out {phase} ({reason})", **kw)
    if started:
        return ServerError(f"{where}: the connection was lost before the answer was complete ({reason})", **kw)
    if isinstance(exc, (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        return ConnectionFailed(f"{where}: cannot reach the server ({reason}); is it running?", **kw)
    return ConnectionFailed(f"{where}: transport failure ({reason})", **kw)
