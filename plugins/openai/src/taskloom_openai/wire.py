"""taskloom's requests and responses in the OpenAI chat completions wire format."""

from __future__ import annotations

import json
from typing import Any

from taskloom.types import (
    FinishReason,
    ImagePart,
    Message,
    ModelRequest,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
)

from .options import OpenAIOptions

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def finish_reason(value: Any) -> FinishReason | None:
    if not value:
        return None
    return _FINISH.get(str(value), "stop")


def _content(content: str | list[TextPart | ImagePart]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        else:
            url = part.url or f"data:{part.media_type or 'image/png'};base64,{part.data or ''}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def message_json(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.text}
    out: dict[str, Any] = {"role": message.role, "content": _content(message.content)}
    if message.role == "assistant" and message.tool_calls:
        # Empty content, not null: OpenAI takes either, llama.cpp's server refuses null.
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.raw_arguments or json.dumps(call.arguments or {}),
                },
            }
            for call in message.tool_calls
        ]
    if message.name and message.role in ("user", "system"):
        out["name"] = message.name
    return out


def tool_json(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def tool_choice_json(choice: str) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def response_format_json(schema: dict[str, Any], style: str) -> dict[str, Any]:
    if style == "json_object":
        return {"type": "json_object", "schema": schema}
    name = str(schema.get("title") or "result")
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64] or "result"
    return {"type": "json_schema", "json_schema": {"name": safe, "schema": schema}}


def chat_body(request: ModelRequest, model: str, options: OpenAIOptions, *, stream: bool) -> dict[str, Any]:
    """The JSON body of POST /chat/completions."""
    body: dict[str, Any] = {"model": model, "messages": [message_json(m) for m in request.messages]}
    if request.tools:
        body["tools"] = [tool_json(t) for t in request.tools]
        body["tool_choice"] = tool_choice_json(request.tool_choice)
    for key in ("temperature", "top_p", "stop", "seed"):
        value = getattr(request, key)
        if value is not None:
            body[key] = value
    if request.max_tokens is not None:
        body[options.max_tokens_param] = request.max_tokens
    if request.output_schema is not None:
        body["response_format"] = response_format_json(request.output_schema, options.response_format)
    if request.metadata.user and "user" not in options.extra_body:
        body["user"] = request.metadata.user
    body.update(options.extra_body)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def usage_from(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt_details = data.get("prompt_tokens_details") or {}
    output_details = data.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(data.get("prompt_tokens") or 0),
        output_tokens=int(data.get("completion_tokens") or 0),
        cached_input_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(output_details.get("reasoning_tokens") or 0),
    )


def tool_calls_from(raw: Any) -> list[ToolCall]:
    calls = []
    for i, item in enumerate(raw or []):
        function = item.get("function") or {}
        calls.append(
            ToolCall.parse(item.get("id") or f"call_{i}", function.get("name") or "", function.get("arguments"))
        )
    return calls


def embedding_vector(value: Any) -> list[float]:
    """One embedding. llama.cpp's server answers a list of per-token vectors for models
    without a pooling layer; those are mean-pooled into one vector."""
    if value and isinstance(value[0], list):
        width = len(value[0])
        rows = [row for row in value if len(row) == width]
        return [sum(col) / len(rows) for col in zip(*rows, strict=True)]
    return [float(x) for x in value]
