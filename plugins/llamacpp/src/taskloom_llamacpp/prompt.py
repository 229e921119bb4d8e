"""From taskloom messages to the model's prompt text, and back from generated text to
tool calls.

Chat turns are rendered with the model's own chat template (stored in the GGUF file) or a
named llama-cpp-python chat format. Tools are described in the system message, and a call
is written the way Hermes-style models write them::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Tool results go back as a user turn wrapped in ``<tool_response>`` tags, which every chat
template accepts (many reject a ``tool`` role or two turns of the same role in a row).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskloom.errors import BadRequest, ConfigError
from taskloom.types import ImagePart, Message, ToolSpec

if TYPE_CHECKING:
    from llama_cpp import Llama

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
CALL_NAME_PREFIX = TOOL_CALL_OPEN + '\n{"name": "'
CALL_ARGUMENTS_PREFIX = '", "arguments": '

TOOLS_INTRO = (
    "You can call tools. Their JSON Schemas are listed in <tools></tools>:\n<tools>\n{tools}\n</tools>\n"
    "To call a tool, answer with only this, and nothing else:\n"
    '<tool_call>\n{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}\n</tool_call>'
)


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    added_special: bool
    """The template wrote the special tokens (BOS) itself."""


Formatter = Callable[[list[dict[str, str]]], RenderedPrompt]


def make_formatter(llama: Llama, chat_format: str | None) -> Formatter:
    """The chat formatter: the GGUF's template, or the named llama-cpp-python format."""
    from llama_cpp import llama_chat_format

    formatter: Any
    if chat_format is None:
        template = llama.metadata.get("tokenizer.chat_template")
        if template:
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template,
                eos_token=_token_text(llama, llama.token_eos()),
                bos_token=_token_text(llama, llama.token_bos()),
            )
        else:  # a model without a template: ChatML is the most common format
            formatter = _named_formatter("chatml")
    else:
        formatter = _named_formatter(chat_format)

    def render(messages: list[dict[str, str]]) -> RenderedPrompt:
        result = formatter(messages=messages)
        return RenderedPrompt(result.prompt, bool(result.added_special))

    return render


def _token_text(llama: Llama, token: int) -> str:
    return llama.detokenize([token], special=True).decode("utf-8", errors="replace") if token != -1 else ""


def _named_formatter(name: str) -> Any:
    """The prompt formatter behind a registered chat format name."""
    from llama_cpp import llama_chat_format

    registry = llama_chat_format.LlamaChatCompletionHandlerRegistry()  # type: ignore[no-untyped-call]
    handlers: dict[str, Any] = dict(registry._chat_handlers)
    usable = sorted(n for n, h in handlers.items() if _closure(h, "chat_formatter") is not None)
    handler = handlers.get(name)
    if handler is None:
        raise ConfigError(
            f"chat_format {name!r} is not a llama-cpp-python chat format; use one of: {', '.join(usable)}"
        )
    formatter = _closure(handler, "chat_formatter")
    if formatter is None:
        raise ConfigError(
            f"chat_format {name!r} is a complete generation handler, not a prompt format; taskloom renders tools and "
            f"constrains generation itself, so choose a prompt format: {', '.join(usable)} (or leave chat_format unset "
            "to use the template stored in the model file)"
        )
    return formatter


def _closure(function: Any, variable: str) -> Any:
    code = getattr(function, "__code__", None)
    cells = getattr(function, "__closure__", None)
    if code is None or not cells or variable not in code.co_freevars:
        return None
    return cells[code.co_freevars.index(variable)].cell_contents


# ---------------------------------------------------------------------------- messages


def template_messages(messages: list[Message], tools: list[ToolSpec] | None = None) -> list[dict[str, str]]:
    """Plain ``{role, content}`` turns for a chat template; tools described in the system turn."""
    out: list[dict[str, str]] = []
    for message in messages:
        text = _text(message)
        if message.role == "tool":
            block = f'<tool_response name="{message.name or ""}">\n{text}\n</tool_response>'
            if out and out[-1]["role"] == "user" and out[-1]["content"].endswith("</tool_response>"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
        elif message.role == "assistant" and message.tool_calls:
            calls = "\n".join(
                render_call(c.name, c.arguments if c.arguments is not None else c.raw_arguments)
                for c in message.tool_calls
            )
            out.append({"role": "assistant", "content": f"{text}\n{calls}" if text else calls})
        else:
            out.append({"role": message.role, "content": text})
    if tools:
        described = "\n".join(json.dumps(t.model_dump(), ensure_ascii=False) for t in tools)
        intro = TOOLS_INTRO.format(tools=described)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{intro}"}
        else:
            out.insert(0, {"role": "system", "content": intro})
    return out


def render_call(name: str, arguments: dict[str, Any] | str) -> str:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return f'{TOOL_CALL_OPEN}\n{{"name": {json.dumps(name)}, "arguments": {args or "{}"}}}\n{TOOL_CALL_CLOSE}'


def _text(message: Message) -> str:
    if isinstance(message.content, list) and any(isinstance(p, ImagePart) for p in message.content):
        raise BadRequest("this llama.cpp model reads text only; remove the image parts from the messages")
    return message.text
