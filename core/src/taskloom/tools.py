"""Tools: a registry of callables with JSON Schemas made from their signatures, argument
validation, and dispatch with a timeout.

Every way a tool call can go wrong (unknown name, arguments that are not a JSON object or
fail validation, a timeout, an exception) becomes a :class:`ToolResult` with
``is_error=True`` whose text tells the model what went wrong, never an exception that
ends the run.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_type_hints

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import to_jsonable_python

from .config import did_you_mean
from .resilience import within
from .timeouts import deadline
from .types import ToolCall, ToolSpec

DEFAULT_TIMEOUT = 60.0


@dataclass
class ToolResult:
    content: str
    is_error: bool = False
    value: Any = None
    duration_s: float = 0.0


@dataclass
class Tool:
    name: str
    description: str
    function: Callable[..., Any]
    arguments_model: type[BaseModel]
    timeout: float = DEFAULT_TIMEOUT
    plugin: str = ""
    is_async: bool = False
    passthrough: bool = False
    """Arguments go to the function as given (the schema came from elsewhere)."""
    _spec: ToolSpec | None = field(default=None, repr=False)

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        plugin: str = "",
    ) -> Tool:
        tool_name = name or function.__name__
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", tool_name):
            raise ValueError(f"tool name {tool_name!r} must be 1-64 letters, digits, '_', '-' or '.'")
        summary, params = _parse_docstring(inspect.getdoc(function) or "")
        return cls(
            name=tool_name,
            description=description if description is not None else summary,
            function=function,
            arguments_model=_arguments_model(function, tool_name, params),
            timeout=timeout,
            plugin=plugin,
            is_async=inspect.iscoroutinefunction(function),
        )

    @classmethod
    def from_schema(
        cls,
        name: str,
        description: str,
        parameters: dict[str, Any],
        function: Callable[..., Any],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        plugin: str = "",
    ) -> Tool:
        """A tool whose schema is given (e.g. from an MCP server); arguments pass through
        as a dict and ``function(**arguments)`` does its own validation."""
        model = create_model(f"{name}_args", __config__=ConfigDict(extra="allow"))
        tool = cls(name, description, function, model, timeout, plugin, inspect.iscoroutinefunction(function), True)
        tool._spec = ToolSpec(name=name, description=description, parameters=parameters)
        return tool

    @property
    def spec(self) -> ToolSpec:
        if self._spec is None:
            schema = self.arguments_model.model_json_schema()
            schema.pop("title", None)
            self._spec = ToolSpec(name=self.name, description=self.description, parameters=schema)
        return self._spec

    async def run(self, arguments: dict[str, Any] | None, timeout: float | None = None) -> ToolResult:
        """Validate the arguments and call the function within ``timeout`` (the tool's own
        by default); every failure is an error result. ``duration_s`` is how long it took."""
        start = time.perf_counter()
        if arguments is None:
            return self._failed(
                start,
                f"error: the arguments for {self.name} are not a JSON object; send a JSON object matching its schema",
            )
        try:
            validated = self.arguments_model.__pydantic_validator__.validate_python(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            return self._failed(start, f"error: invalid arguments for {self.name}: {problems}")
        extra = validated.__pydantic_extra__
        if self.passthrough:
            kwargs = {**(extra or {})}
        else:  # the same as dict(validated), which first asks pydantic for a ``keys`` attribute (slowly)
            kwargs = {**validated.__dict__, **extra} if extra else validated.__dict__.copy()
        limit = timeout if timeout is not None else self.timeout
        try:
            if self.is_async:
                # The timer is armed only if the tool waits (a quick tool pays nothing for it).
                value = await within(limit, self.function(**kwargs))
            else:
                async with deadline(limit):
                    value = await anyio.to_thread.run_sync(lambda: self.function(**kwargs), abandon_on_cancel=True)
        except TimeoutError:
            return self._failed(start, f"error: {self.name} timed out after {limit:g} s")
        except Exception as exc:
            return self._failed(start, f"error: {self.name} failed: {type(exc).__name__}: {exc}")
        if isinstance(value, ToolResult):
            if not isinstance(value.content, str):  # the model is sent text
                value.content = _to_text(value.content)
            result = value
        else:
            result = ToolResult(_to_text(value), False, value)
        result.duration_s = time.perf_counter() - start
        return result

    @staticmethod
    def _failed(start: float, message: str) -> ToolResult:
        return ToolResult(message, True, None, time.perf_counter() - start)


_JSON = json.JSONEncoder(ensure_ascii=False)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if type(value) is int:  # the same text as JSON's
        return str(value)
    try:
        return _JSON.encode(to_jsonable_python(value))
    except Exception:
        return str(value)


_PARAM_LINE = re.compile(r"^\s*(?::param\s+)?(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary, and per-parameter descriptions from a Google ``Args:`` section or
    Sphinx ``:param x:`` lines."""
    summary_lines: list[str] = []
    params: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.lower() in ("args:", "arguments:", "parameters:"):
            in_args = True
            continue
        if stripped.startswith(":param"):
            m = _PARAM_LINE.match(stripped)
            if m:
                params[m.group(1)] = m.group(2).strip()
            continue
        if in_args:
            if not stripped:
                current = None
                continue
            if stripped.endswith(":") and not line.startswith((" ", "\t")):
                in_args = False
                continue
            m = _PARAM_LINE.match(line)
            if m and (line.startswith((" ", "\t")) or current is None):
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif current:
                params[current] += " " + stripped
            continue
        if not stripped.startswith(":") and not params:
            summary_lines.append(stripped)
    return " ".join(s for s in summary_lines if s).strip(), params


def _arguments_model(function: Callable[..., Any], name: str, docs: dict[str, str]) -> type[BaseModel]:
    signature = inspect.signature(function)
    try:
        hints = get_type_hints(function)
    except Exception:
        hints = {}
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, Field(default, description=docs.get(param.name)))
    return create_model(f"{name}_args", __config__=ConfigDict(extra="forbid"), **fields)


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(
        self,
        tool: Tool | Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        plugin: str = "",
    ) -> Tool:
        if not isinstance(tool, Tool):
            tool = Tool.from_function(tool, name=name, description=description, timeout=timeout, plugin=plugin)
        elif plugin and not tool.plugin:
            tool.plugin = plugin
        if tool.name in self._tools:
            other = self._tools[tool.name].plugin or "another plugin"
            raise ValueError(f"tool {tool.name!r} is already registered by {other}")
        self._tools[tool.name] = tool
        return tool

    def unregister_plugin(self, plugin: str) -> None:
        for name in [n for n, t in self._tools.items() if t.plugin == plugin]:
            del self._tools[name]

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise KeyError(f"unknown tool {name!r}{did_you_mean(name, self._tools)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return sorted(self._tools)

    async def call(self, call: ToolCall, allowed: set[str] | None = None, timeout: float | None = None) -> ToolResult:
        """Run one call; unknown or disallowed names become an error result."""
        available = allowed if allowed is not None else set(self._tools)
        tool = self._tools.get(call.name) if call.name in available else None
        if tool is None:
            hint = did_you_mean(call.name, available)
            names = ", ".join(sorted(available)) or "none"
            return ToolResult(f"error: there is no tool named {call.name!r}{hint}; available tools: {names}", True)
        return await tool.run(call.arguments, timeout)
