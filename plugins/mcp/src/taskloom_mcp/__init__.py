"""taskloom-mcp: tools from any MCP server as taskloom tools (``<server>.<tool>``), and
``taskloom mcp serve`` to offer taskloom's tools and workflows to MCP clients."""

from __future__ import annotations

from typing import Any

from .config import McpConfig, ServerConfig
from .errors import McpCallTimeout, McpConnectionLost, McpError, McpStartError
from .plugin import McpPlugin


def bridge_of(kernel: Any) -> Any:
    """The kernel's :class:`taskloom_mcp.bridge.McpBridge`, or None when no server is configured."""
    info = kernel.plugins.infos.get("mcp")
    obj = getattr(info, "obj", None) if info is not None else None
    return getattr(obj, "bridge", None)


def close(kernel: Any) -> None:
    """Stop the kernel's MCP servers now (an ``atexit`` handler does it at exit otherwise)."""
    bridge = bridge_of(kernel)
    if bridge is not None:
        bridge.close()


__all__ = [
    "McpCallTimeout",
    "McpConfig",
    "McpConnectionLost",
    "McpError",
    "McpPlugin",
    "McpStartError",
    "ServerConfig",
    "bridge_of",
    "close",
]
