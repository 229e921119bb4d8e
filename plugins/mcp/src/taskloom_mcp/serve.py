"""``taskloom mcp serve``: taskloom's tools and workflows offered to MCP clients over stdio.

Built on the SDK's low-level ``Server`` because the tools come with JSON Schemas already
(taskloom's tool specs) and workflows get a schema made from their declared inputs.
Every call goes through the policy hook like an agent's tool call does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskloom.errors import ConfigError, PolicyDenied
from taskloom.tools import ToolResult
from taskloom.types import Action, RequestMeta

from .bridge import PLUGIN

if TYPE_CHECKING:
    from mcp.server import Server

_INVALID = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass
class Offered:
    name: str
    description: str
    schema: dict[str, Any]
    run: Callable[[dict[str, Any]], Awaitable[ToolResult]]


def offered_tools(kernel: Any, names: list[str] | None) -> list[Offered]:
    """The kernel's tools to offer: ``names``, or every tool not bridged from MCP."""
    if names is not None:
        chosen = [kernel.tools.get(n) for n in names]  # KeyError with "did you mean"
    else:
        chosen = [t for t in kernel.tools if t.plugin != PLUGIN]
    out = []
    for tool in sorted(chosen, key=lambda t: t.name):
        spec = tool.spec
        out.append(Offered(tool.name, spec.description, dict(spec.parameters), _tool_runner(tool)))
    return out


def _tool_runner(tool: Any) -> Callable[[dict[str, Any]], Awaitable[ToolResult]]:
    async def run(arguments: dict[str, Any]) -> ToolResult:
        result: ToolResult = await tool.run(arguments)
        return result

    return run


def workflow_schema(spec: Any) -> dict[str, Any]:
    """A JSON Schema whose properties are the workflow's declared inputs."""
    props: dict[str, Any] = {}
    required = []
    for name, item in spec.workflow.inputs.items():
        prop: dict[str, Any] = {}
        if item.description:
            prop["description"] = item.description
        if item.default is not None:
            prop["default"] = item.default
        props[name] = prop
        if item.required:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def offered_workflows(kernel: Any, folder: str | Path) -> list[Offered]:
    """Every ``*.toml`` / ``*.json`` workflow file in ``folder`` as a tool."""
    from taskloom.workflow import check_workflow, load_workflow

    out = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() not in (".toml", ".json") or not path.is_file():
            continue
        spec = load_workflow(path)  # ConfigError names the file and the key
        check_workflow(spec, kernel)
        name = _INVALID.sub("_", spec.name)[:64]
        description = spec.workflow.description or f"Run the {spec.name} workflow ({path.name})."
        out.append(Offered(name, description, workflow_schema(spec), _workflow_runner(kernel, spec)))
    return out


def _workflow_runner(kernel: Any, spec: Any) -> Callable[[dict[str, Any]], Awaitable[ToolResult]]:
    async def run(arguments: dict[str, Any]) -> ToolResult:
        from taskloom.workflow import run_workflow

        result = await run_workflow(kernel, spec, arguments)
        data = result.to_dict()
        if result.ok:
            outputs = result.outputs
            last = list(outputs.values())[-1] if outputs else ""
            text = (
                last
                if len(outputs) == 1 and isinstance(last, str)
                else json.dumps(outputs, ensure_ascii=False, default=str)
            )
            return ToolResult(text, False, data)
        return ToolResult(f"error: workflow {spec.name} {result.status}: {result.run.error}", True, data)

    return run


def build_server(kernel: Any, tool_names: list[str] | None = None, workflows: str | Path | None = None) -> Server[Any]:
    import mcp_types as types
    from mcp.server import Server

    entries = offered_tools(kernel, tool_names)
    if workflows is not None:
        for item in offered_workflows(kernel, workflows):
            if any(e.name == item.name for e in entries):
                raise ConfigError(f"workflow {item.name!r} in {workflows} has the name of a tool; rename the workflow")
            entries.append(item)
    by_name = {e.name: e for e in entries}
    listing = types.ListToolsResult(
        tools=[types.Tool(name=e.name, description=e.description, input_schema=e.schema) for e in entries]
    )

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return listing

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        entry = by_name.get(params.name)
        if entry is None:
            return _error(f"there is no tool named {params.name!r}; available: {', '.join(by_name) or 'none'}")
        arguments = dict(params.arguments or {})
        try:
            kernel.check(
                Action(
                    kind="run" if entry.run.__qualname__.startswith("_workflow") else "tool_call",
                    tool=entry.name,
                    arguments=arguments,
                    metadata=RequestMeta(user=kernel.settings.taskloom.user),
                )
            )
            result = await entry.run(arguments)
        except PolicyDenied as exc:
            return _error(str(exc))
        except ConfigError as exc:  # e.g. a missing or unknown workflow input
            return _error(str(exc))
        text = result.content.removeprefix("error: ") if result.is_error else result.content
        structured = result.value if isinstance(result.value, dict) else None
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=structured, is_error=result.is_error
        )

    def _error(text: str) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)

    from . import connection

    return Server("taskloom", version=connection._version(), on_list_tools=on_list_tools, on_call_tool=on_call_tool)


async def run_stdio(server: Server[Any]) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
