"""A small MCP server for the tests, built with the SDK's MCPServer: echo, a failing tool,
a slow tool, its own pid, an image, its environment and working directory, and tools that
add and remove a tool (tools/list_changed).

Run over stdio: ``python lab.py [flags]``; over streamable HTTP on 127.0.0.1: ``build().streamable_http_app()``.

Flags: ``--garbage`` (a non-JSON-RPC line on stdout first), ``--exit`` (exit at start-up),
``--starts FILE`` (append ``start <time>`` and, when it exits at start-up, ``exit <time>``),
``--exit-if-exists FILE`` (exit at start-up when FILE exists; create it otherwise, so only
the first start succeeds), ``--exit-unless-exists FILE`` (the opposite: only the first
start fails).
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the SDK is imported: when the process began, for backoff tests

import asyncio  # noqa: E402
import base64  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402
from mcp.server.mcpserver.utilities.types import Image  # noqa: E402

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def build() -> MCPServer:
    mcp = MCPServer("lab")

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text."""
        return text

    @mcp.tool()
    def explode(reason: str = "it broke") -> str:
        """Always fails."""
        raise ToolError(f"explode: {reason}")

    @mcp.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @mcp.tool()
    def pid() -> int:
        """The server's process id."""
        return os.getpid()

    @mcp.tool()
    def picture() -> Image:
        """A one-pixel PNG."""
        return Image(data=PNG, format="png")

    @mcp.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Add a tool called NAME and announce it with tools/list_changed."""

        def added(x: int) -> int:
            return x * 2

        mcp.add_tool(added, name=name, description="Double x.")
        await ctx.session.send_tool_list_changed()
        return f"added {name}"

    @mcp.tool()
    async def shrink(name: str, ctx: Context) -> str:
        """Remove the tool called NAME and announce it with tools/list_changed."""
        mcp.remove_tool(name)
        await ctx.session.send_tool_list_changed()
        return f"removed {name}"

    @mcp.tool()
    def environ(name: str) -> str:
        """The value of an environment variable of the server process ("<unset>" when absent)."""
        return os.environ.get(name, "<unset>")

    @mcp.tool()
    def cwd() -> str:
        """The server process's working directory."""
        return os.getcwd()

    @mcp.tool()
    def header(name: str, ctx: Context) -> str:
        """The value of an HTTP request header (streamable HTTP only)."""
        return (ctx.headers or {}).get(name.lower(), "")

    return mcp


def _flag(name: str) -> Path | None:
    if name not in sys.argv:
        return None
    return Path(sys.argv[sys.argv.index(name) + 1])


def _note(starts: Path | None, event: str, at: float) -> None:
    if starts is not None:
        with starts.open("a") as f:
            f.write(f"{event} {at}\n")


if __name__ == "__main__":
    starts = _flag("--starts")
    _note(starts, "start", STARTED)
    once = _flag("--exit-if-exists")
    if once is not None:
        if once.exists():
            sys.stderr.write("lab: refusing to start again\n")
            _note(starts, "exit", time.time())
            sys.exit(4)
        once.write_text("started")
    later = _flag("--exit-unless-exists")
    if later is not None and not later.exists():
        later.write_text("failed once")
        sys.stderr.write("lab: the first start fails\n")
        _note(starts, "exit", time.time())
        sys.exit(5)
    if "--garbage" in sys.argv:
        sys.stdout.write("Starting lab server v1.0... ready!\n")
        sys.stdout.flush()
    if "--exit" in sys.argv:
        sys.stderr.write("lab: LAB_TOKEN is not set, giving up\n")
        sys.exit(3)
    build().run("stdio")
