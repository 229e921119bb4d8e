"""``taskloom mcp``: list servers, call a tool, serve taskloom over MCP."""

from __future__ import annotations

import json
from typing import Any

import click
from taskloom.cli import echo_json, get_kernel, run_async
from taskloom.config import did_you_mean
from taskloom.errors import ConfigError, TaskloomError

NO_SERVERS = "no MCP servers are configured; add a [plugins.mcp.servers.<name>] table with command or url"


def _bridge(ctx: click.Context) -> Any:
    from . import bridge_of

    return bridge_of(get_kernel(ctx))


@click.group()
def mcp() -> None:
    """Model Context Protocol: servers' tools as taskloom tools, and taskloom as a server."""


@mcp.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_servers(ctx: click.Context, as_json: bool) -> None:
    """Start every configured server and show its status and tools."""
    bridge = _bridge(ctx)
    rows = bridge.status(connect=True) if bridge is not None else []
    if bridge is not None:
        bridge.close()
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(NO_SERVERS)
        return
    for row in rows:
        status = row["status"] + (f": {row['error']}" if row["error"] and row["status"] != "ready" else "")
        info = f" ({row['server_info']})" if row["server_info"] else ""
        click.echo(f"{row['server']}  [{row['transport']}] {row['target']}{info}  {status}")
        for tool in row["tools"]:
            gone = "" if tool["available"] else "  (no longer offered)"
            click.echo(
                f"    {tool['name']}  {tool['description'].splitlines()[0] if tool['description'] else ''}{gone}"
            )
        for name in row["missing"]:
            click.echo(f"    {row['server']}.{name}  (allowlisted but not offered by the server)")


@mcp.command("call")
@click.argument("name", metavar="SERVER.TOOL")
@click.option("--args", "args_json", default="{}", help="Arguments as a JSON object.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def call(ctx: click.Context, name: str, args_json: str, as_json: bool) -> None:
    """Call one tool of an MCP server and print its result."""
    from taskloom.types import Action, RequestMeta

    kernel = get_kernel(ctx)
    bridge = _bridge(ctx)
    if bridge is None:
        raise ConfigError(NO_SERVERS)
    try:
        arguments = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg} at column {exc.colno}", param_hint="--args") from None
    if not isinstance(arguments, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--args")
    bridged = bridge.tools.get(name)
    if bridged is None:
        bridge.close()
        server = name.split(".", 1)[0]
        conn = bridge.connections.get(server)
        if conn is None:
            raise ConfigError(
                f"no MCP server named {server!r}{did_you_mean(server, bridge.connections)}; configured: {', '.join(bridge.connections)}"
            )
        if conn.error:
            raise TaskloomError(f"{name} is not available: {conn.error}")
        raise ConfigError(
            f"MCP server {server!r} has no tool {name!r}{did_you_mean(name, bridge.tools)}; `taskloom mcp list` shows its tools"
        )
    kernel.check(
        Action(
            kind="tool_call", tool=name, arguments=arguments, metadata=RequestMeta(user=kernel.settings.taskloom.user)
        )
    )
    assert bridged.tool is not None
    try:
        result = run_async(ctx, lambda k: bridged.tool.run(arguments))
    finally:
        bridge.close()
    if as_json:
        echo_json(
            {
                "tool": name,
                "result": result.content,
                "value": result.value,
                "is_error": result.is_error,
                "duration_s": result.duration_s,
            }
        )
    else:
        click.echo(result.content, err=result.is_error)
    if result.is_error:
        ctx.exit(1)


@mcp.command("serve")
@click.option(
    "--workflows",
    "workflows_dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Offer every workflow file in this folder as a tool.",
)
@click.option(
    "--tool",
    "-t",
    "tool_names",
    multiple=True,
    help="Offer only these taskloom tools (repeatable; default: all but MCP-bridged ones).",
)
@click.pass_context
def serve(ctx: click.Context, workflows_dir: str | None, tool_names: tuple[str, ...]) -> None:
    """Run an MCP server over stdio offering taskloom's tools and workflows."""
    from .serve import build_server, run_stdio

    kernel = get_kernel(ctx)
    server = build_server(kernel, list(tool_names) or None, workflows_dir)
    try:
        run_async(ctx, lambda k: run_stdio(server))
    finally:
        bridge = _bridge(ctx)
        if bridge is not None:
            bridge.close()
