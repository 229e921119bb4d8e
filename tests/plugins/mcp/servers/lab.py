"""A small MCP server for the tests, built with the SDK's MCPServer: echo, a failing tool,
a slow tool, its own pid, an image, and a tool that adds a tool (tools/list_changed).

Run over stdio: ``python lab.py``; over streamable HTTP on 127.0.0.1: see ``http_app()``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image

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
    def header(name: str, ctx: Context) -> str:
        """The value of an HTTP request header (streamable HTTP only)."""
        return (ctx.headers or {}).get(name.lower(), "")

    return mcp


if __name__ == "__main__":
    if "--garbage" in sys.argv:
        sys.stdout.write("Starting lab server v1.0... ready!\n")
        sys.stdout.flush()
    if "--exit" in sys.argv:
        sys.stderr.write("lab: LAB_TOKEN is not set, giving up\n")
        sys.exit(3)
    build().run("stdio")
