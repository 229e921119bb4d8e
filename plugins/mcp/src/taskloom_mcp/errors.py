"""Errors of the MCP bridge. Their text is what the model or the user reads."""

from __future__ import annotations

from taskloom.errors import TaskloomError


class McpError(TaskloomError):
    """An MCP server could not be started or did not answer."""


class McpStartError(McpError):
    """The server did not start: a bad command, an exit, garbage on stdout, a timeout."""


class McpConnectionLost(McpError):
    """The server went away during a call; it is being restarted."""


class McpCallTimeout(McpError):
    """A tool call did not finish within the server's call timeout."""
