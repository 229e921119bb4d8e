"""The bridge of one kernel: its MCP servers, and their tools as taskloom tools.

Registration is synchronous (kernel assembly) but needs each server's tool list. The list
comes from the *listing cache* (a JSON file per server under the user cache dir, written
every time the server is connected) when there is one, so the server itself starts on
first call. With no cache (first run, changed command/args/url, ``cache_tools = false``)
the server is started at assembly to list its tools, and its session is kept for the
calls that follow. A server that fails to start is reported by ``taskloom mcp list`` and
in the log, and the other servers are unaffected. Its allowlisted tools (``tools = [...]``)
are registered all the same, with an open schema until the server lists them, so a call
starts the server again; with no allowlist its tools appear once a listing succeeds
(:meth:`McpBridge.status` with ``connect``, as ``taskloom mcp list`` does, which also
writes the listing cache for the next kernel).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskloom.tools import Tool, ToolResult

from .connection import ServerConnection
from .errors import McpError
from .hub import Hub
from .results import ArgumentChecker, ToolInfo, taskloom_name, to_tool_result

if TYPE_CHECKING:
    import mcp_types

    from .config import McpConfig, ServerConfig

log = logging.getLogger("taskloom.mcp")
PLUGIN = "mcp"


class BridgedTool:
    """One MCP tool as seen by taskloom."""

    def __init__(self, bridge: McpBridge, server: str, info: ToolInfo) -> None:
        self.bridge = bridge
        self.server = server
        self.info = info
        self.name = taskloom_name(server, info.name)
        self.checker = ArgumentChecker(info.input_schema)
        self.available = True
        self.tool: Tool | None = None

    def update(self, info: ToolInfo) -> None:
        self.info = info
        self.checker = ArgumentChecker(info.input_schema)
        self.available = True
        if self.tool is not None:
            self.tool.description = info.description
            self.tool._spec = _spec(self.name, info)

    def make_tool(self) -> Tool:
        async def call(**arguments: Any) -> ToolResult:
            return await self.bridge.call(self, arguments)

        config = self.bridge.config.servers[self.server]
        tool = Tool.from_schema(
            self.name,
            self.info.description,
            self.info.input_schema,
            call,
            # Outer bound: start-up (first call) plus the call itself; the call's own
            # limit is enforced with a clearer message inside.
            timeout=config.startup_timeout + config.call_timeout + 1.0,
            plugin=PLUGIN,
        )
        self.tool = tool
        return tool


def _placeholder(server: str, tool: str) -> ToolInfo:
    """An allowlisted tool of a server that could not be started: any arguments, checked by
    the server once it runs (its listing then replaces this)."""
    return ToolInfo(
        tool,
        f"Tool {tool!r} of MCP server {server!r} (not listed yet: the server failed to start; a call tries again).",
        {"type": "object", "additionalProperties": True},
    )


def _spec(name: str, info: ToolInfo) -> Any:
    from taskloom.types import ToolSpec

    return ToolSpec(name=name, description=info.description, parameters=info.input_schema)


class McpBridge:
    def __init__(self, config: McpConfig, cache_dir: Path | None = None) -> None:
        self.config = config
        self.hub = Hub()
        self.cache_dir = cache_dir
        self.connections: dict[str, ServerConnection] = {
            name: ServerConnection(name, cfg, on_tools=self._on_tools)
            for name, cfg in config.servers.items()
            if cfg.enabled
        }
        self.tools: dict[str, BridgedTool] = {}
        self.missing: dict[str, list[str]] = {}
        self.startup_s: dict[str, float] = {}
        self._register: Callable[..., Any] | None = None
        self._lock = threading.Lock()
        self.hub.on_close(self._aclose_connections)

    async def _aclose_connections(self) -> None:
        import asyncio

        await asyncio.gather(*(c.aclose() for c in self.connections.values()), return_exceptions=True)

    def close(self) -> None:
        """Stop every server process and the hub thread."""
        self.hub.close()

    # ---------------------------------------------------------------- registration

    def register_tools(self, register: Callable[..., Any]) -> None:
        self._register = register
        for name, conn in self.connections.items():
            listing = self._read_cache(name, conn.config) if self.config.cache_tools else None
            if listing is None:
                listing = self.start_and_list(name)
                if listing is None:  # start failed: reported by `taskloom mcp list` and the log
                    if conn.config.tools:
                        self._apply_listing(name, [_placeholder(name, t) for t in conn.config.tools], listed=False)
                    continue
            self._apply_listing(name, listing)

    def start_and_list(self, name: str) -> list[ToolInfo] | None:
        """Start a server now (blocking) and return its tools, or None when it fails."""
        conn = self.connections[name]
        started = time.perf_counter()
        try:
            tools = self.hub.run(conn.list_tools(), timeout=conn.config.startup_timeout + 5.0)
        except (McpError, TimeoutError) as exc:
            conn.error = conn.error or str(exc)
            log.warning("%s", conn.error)
            return None
        self.startup_s[name] = time.perf_counter() - started
        return [ToolInfo.from_mcp(t) for t in tools]

    def _on_tools(self, conn: ServerConnection, tools: list[mcp_types.Tool]) -> None:
        """Called on the hub loop when a server is connected or announces new tools."""
        listing = [ToolInfo.from_mcp(t) for t in tools]
        if self.config.cache_tools:
            self._write_cache(conn.name, conn.config, listing)
        if self._register is not None:
            self._apply_listing(conn.name, listing)

    def _apply_listing(self, server: str, listing: list[ToolInfo], *, listed: bool = True) -> None:
        """Register (or update) the server's tools; ``listed`` is False for placeholders of
        allowlisted tools of a server that could not be listed."""
        allow = self.connections[server].config.tools
        offered = {info.name: info for info in listing}
        wanted = [n for n in offered if allow is None or n in allow]
        with self._lock:
            self.missing[server] = [n for n in (allow or []) if n not in offered] if listed else []
            for tool_name in wanted:
                info = offered[tool_name]
                name = taskloom_name(server, tool_name)
                existing = self.tools.get(name)
                if existing is not None:
                    existing.update(info)
                    continue
                bridged = BridgedTool(self, server, info)
                try:
                    assert self._register is not None
                    self._register(bridged.make_tool())
                except ValueError as exc:  # a name clash with another plugin's tool
                    log.warning("MCP tool %s is not registered: %s", name, exc)
                    continue
                self.tools[name] = bridged
            for bridged in self.tools.values():
                if bridged.server == server and bridged.info.name not in offered:
                    bridged.available = False
        if self.missing[server]:
            log.warning(
                "MCP server %r does not offer the allowlisted tools %s", server, ", ".join(self.missing[server])
            )

    # ---------------------------------------------------------------- calls

    async def call(self, bridged: BridgedTool, arguments: dict[str, Any]) -> ToolResult:
        if not bridged.available:
            return ToolResult(
                f"error: MCP server {bridged.server!r} no longer offers the tool {bridged.info.name!r}", True
            )
        problems = bridged.checker.problems(arguments)
        if problems:
            return ToolResult(f"error: invalid arguments for {bridged.name}: {'; '.join(problems)}", True)
        conn = self.connections[bridged.server]
        if self.hub.closed:
            return ToolResult(
                f"error: MCP server {bridged.server!r} is shut down (its kernel's MCP bridge was closed)", True
            )
        try:
            if self.hub.in_hub():  # already on the sessions' loop (e.g. a hook running there): no hop
                result = await conn.call_tool(bridged.info.name, arguments)
            else:
                result = await self.hub.call(conn.call_tool(bridged.info.name, arguments))
        except McpError as exc:
            return ToolResult(f"error: {exc}", True)
        return to_tool_result(result)

    # ---------------------------------------------------------------- status

    def status(self, *, connect: bool = True) -> list[dict[str, Any]]:
        """Each server's state and tools; with ``connect`` every server is started."""
        rows = []
        for name, conn in self.connections.items():
            if connect and conn.status not in ("ready", "closed"):
                listing = self.start_and_list(name)
                if listing is not None and self._register is not None:
                    self._apply_listing(name, listing)
            row = conn.describe()
            row["tools"] = [
                {"name": b.name, "description": b.info.description, "available": b.available}
                for b in self.tools.values()
                if b.server == name
            ]
            row["missing"] = self.missing.get(name, [])
            rows.append(row)
        return rows

    # ---------------------------------------------------------------- listing cache

    def _cache_path(self, server: str, config: ServerConfig) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{server}-{config.fingerprint()}.json"

    def _read_cache(self, server: str, config: ServerConfig) -> list[ToolInfo] | None:
        path = self._cache_path(server, config)
        if path is None or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return [ToolInfo.from_dict(d) for d in data["tools"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable MCP tool cache %s: %s", path, exc)
            return None

    def _write_cache(self, server: str, config: ServerConfig, listing: list[ToolInfo]) -> None:
        path = self._cache_path(server, config)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"server": server, "time": time.time(), "tools": [i.to_dict() for i in listing]}),
                encoding="utf-8",
            )
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot write the MCP tool cache %s: %s", path, exc)
