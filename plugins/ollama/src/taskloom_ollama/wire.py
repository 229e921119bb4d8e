"""taskloom's requests and responses in Ollama's native ``/api/chat`` format.

Differences from OpenAI's format: tool-call arguments are JSON *objects*, not strings;
images are base64 strings in ``images``; sampling settings live in ``options``
(``num_predict`` is the output token limit); a tool result names its tool
(``tool_name``); usage is ``prompt_eval_count`` and ``eval_count``.
"""

from __future__ import annotations

import json
from typing import Any

from taskloom.errors import BadRequest
from taskloom.types import FinishReason, ImagePart, Message, ModelRequest, ToolCall, Usage

from .options import OllamaOptions

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


def message_json(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.text}
    if not isinstance(message.content, str):
        images = []
        for part in message.content:
            if isinstance(part, ImagePart):
                if not part.data:
                    raise BadRequest(
                        "Ollama takes images as base64 data, not URLs; give ImagePart(data=..., media_type=...)",
                        provider="ollama",
                    )
                images.append(part.data)
        if images:
            out["images"] = images
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": c.arguments if c.arguments is not None else {}}}
            for c in message.tool_calls
        ]
    if message.role == "tool" and message.name:
        out["tool_name"] = message.name
    return out


def chat_body(request: ModelRequest, model: str, options: OllamaOptions, *, stream: bool) -> dict[str, Any]:
    """The JSON body of POST /api/chat."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [message_json(m) for m in request.messages],
        "stream": stream,
    }
    if request.tools and request.tool_choice != "none":
        tools = request.tools
        if request.tool_choice not in ("auto", "required"):
            # Ollama has no tool_choice: offering only the forced tool is the closest.
            tools = [t for t in tools if t.name == request.tool_choice] or tools
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in tools
        ]
    model_options = dict(options.options)
    for key, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("seed", request.seed),
        ("num_predict", request.max_tokens),
        ("stop", request.stop),
    ):
        if value is not None:
            model_options[key] = value
    if model_options:
        body["options"] = model_options
    if request.output_schema is not None:
        body["format"] = request.output_schema
    if options.keep_alive is not None:
        body["keep_alive"] = options.keep_alive
    return body


def usage_from(data: dict[str, Any]) -> Usage | None:
    if "prompt_eval_count" not in data and "eval_count" not in data:
        return None
    return Usage(input_tokens=int(data.get("prompt_eval_count") or 0), output_tokens=int(data.get("eval_count") or 0))


def finish_reason(data: dict[str, Any], has_calls: bool) -> FinishReason:
    if has_calls:
        return "tool_calls"
    return _FINISH.get(str(data.get("done_reason") or "stop"), "stop")


def tool_call(raw: dict[str, Any], position: int, prefix: str) -> tuple[int, ToolCall]:
    """(index, call) from one ``message.tool_calls`` item; arguments are an object (or, from
    some models, a JSON string)."""
    function = raw.get("function") or {}
    index = function.get("index")
    index = index if isinstance(index, int) else position
    call_id = raw.get("id") or f"{prefix}_{index}"
    arguments = function.get("arguments")
    if arguments is not None and not isinstance(arguments, (dict, str)):
        arguments = json.dumps(arguments)
    return index, ToolCall.parse(call_id, str(function.get("name") or ""), arguments)
