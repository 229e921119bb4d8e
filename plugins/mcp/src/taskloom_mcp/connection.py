"""One MCP server: its session, supervised on the hub loop.

A :class:`ServerConnection` starts its server on first use, shares one ``ClientSession``
among concurrent calls, restarts a server that crashed (with exponential backoff; the call
that was in flight fails with :class:`McpConnectionLost`, it is never retried because a tool
call may not be idempotent), and refreshes the tool list on ``tools/list_changed``.

Every method except the ``status``-style attributes runs on the hub loop. The session's
transport and ``ClientSession`` context managers are entered and exited by one supervisor
task, so no cancel scope ever crosses tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .errors import McpCallTimeout, McpConnectionLost, McpError, McpStartError

if TYPE_CHECKING:
    import mcp_types
    from mcp import ClientSession

    from .config import ServerConfig

log = logging.getLogger("taskloom.mcp")

Status = Literal["stopped", "starting", "ready", "restarting", "failed", "closed"]
CLIENT_NAME = "taskloom"


class _WatchedStream:
    """The transport's read stream, setting ``lost`` when the session stops reading it
    (end of stream: the server exited or the connection closed)."""

    def __init__(self, inner: Any, lost: asyncio.Event) -> None:
        self._inner = inner
        self._lost = lost

    async def receive(self) -> Any:
        return await self._inner.receive()

    async def aclose(self) -> None:
        self._lost.set()
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            self._lost.set()
            raise

    async def __aenter__(self) -> _WatchedStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        self._lost.set()
        return await self._inner.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:  # e.g. last_context
        return getattr(self._inner, name)


class _Stderr:
    """A stdio server's stderr, kept in a temporary file so start-up errors can quote it."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="taskloom-mcp-", suffix=".stderr")
        os.close(fd)
        self.file = open(self.path, "a", encoding="utf-8", errors="replace")

    def tail(self, limit: int = 600) -> str:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        text = text.strip()
        return text if len(text) <= limit else "..." + text[-limit:]

    def close(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class ServerConnection:
    def __init__(
        self,
        name: str,
        config: ServerConfig,
        on_tools: Callable[[ServerConnection, list[mcp_types.Tool]], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.on_tools = on_tools
        self.status: Status = "stopped"
        self.error: str | None = None
        self.tools: list[mcp_types.Tool] | None = None
        self.restarts = 0
        self.delays: list[float] = []  # the restart delays waited so far (seconds)
        self.server_info: str | None = None
        self._session: ClientSession | None = None
        self._ready: asyncio.Future[ClientSession] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self._garbage: list[str] = []
        self._garbage_seen: asyncio.Event | None = None
        self._stderr: _Stderr | None = None
        self._closing = False
        self._background: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------- public (hub loop)

    @property
    def where(self) -> str:
        return f"MCP server {self.name!r}"

    async def session(self) -> ClientSession:
        """The live session, starting (or waiting for a restart of) the server."""
        session = self._session
        if session is not None:  # the fast path of every call but the first
            return session
        if self._closing:
            raise McpError(f"{self.where} is shut down")
        if self._supervisor is None or self._supervisor.done():
            self._new_ready()
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name=f"mcp:{self.name}")
        assert self._ready is not None
        return await asyncio.shield(self._ready)

    async def list_tools(self) -> list[mcp_types.Tool]:
        await self.session()
        return list(self.tools or [])

    async def call_tool(
        self, tool: str, arguments: dict[str, Any], timeout: float | None = None
    ) -> mcp_types.CallToolResult:
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

        session = await self.session()
        limit = timeout if timeout is not None else self.config.call_timeout
        try:
            return await session.call_tool(tool, arguments, read_timeout_seconds=limit)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._mark_lost()
                raise McpConnectionLost(
                    f"{self.where} closed the connection during the call to {tool!r} (it crashed or exited); "
                    f"the call was not completed and the server is being restarted"
                ) from None
            if exc.code == REQUEST_TIMEOUT:
                raise McpCallTimeout(
                    f"{tool!r} on {self.where} did not answer within {limit:g} s; "
                    f"raise call_timeout in [plugins.mcp.servers.{self.name}] if it needs longer"
                ) from None
            raise McpError(
                f"{self.where} rejected the call to {tool!r}: {exc.message} (JSON-RPC error {exc.code})"
            ) from None

    async def aclose(self) -> None:
        """Stop the server and wait for its process to end."""
        self._closing = True
        if self._lost is not None:
            self._lost.set()
        supervisor = self._supervisor
        if supervisor is not None and not supervisor.done():
            try:
                await asyncio.wait_for(asyncio.shield(supervisor), 12.0)
            except TimeoutError:
                supervisor.cancel()
                with contextlib.suppress(BaseException):
                    await supervisor
        for task in list(self._background):
            task.cancel()
        self.status = "closed"

    def describe(self) -> dict[str, Any]:
        return {
            "server": self.name,
            "transport": self.config.transport,
            "target": self.config.url or " ".join([self.config.command or "", *self.config.args]).strip(),
            "status": self.status,
            "error": self.error,
            "restarts": self.restarts,
            "server_info": self.server_info,
        }

    # ---------------------------------------------------------------- supervision

    def _new_ready(self) -> None:
        future: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        # Nobody may be waiting when a start fails: mark the exception as retrieved.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._ready = future

    def _mark_lost(self) -> None:
        if self._lost is not None:
            self._lost.set()

    async def _supervise(self) -> None:
        failures = 0
        ever_ready = False
        while True:
            was_ready = False
            error: str | None = None
            try:
                was_ready = await self._lifetime()
            except McpError as exc:
                error = str(exc)
            except BaseExceptionGroup as group:
                leaf = _first_leaf(group)
                error = (
                    str(leaf)
                    if isinstance(leaf, McpError)
                    else f"{self.where} failed: {type(leaf).__name__}: {leaf}{self._stderr_hint()}"
                )
                if not isinstance(leaf, Exception):
                    raise
            except Exception as exc:  # anything else the SDK or transport raises
                error = f"{self.where} failed: {type(exc).__name__}: {exc}{self._stderr_hint()}"
            finally:
                if self._stderr is not None:
                    self._stderr.close()
                    self._stderr = None
            if self._closing:
                self.status = "closed"
                self._fail_ready(McpError(f"{self.where} is shut down"))
                return
            # After a crash the server is started again up to max_restarts times in a row,
            # waiting backoff, 2 x backoff, 4 x backoff... (at most backoff_max) before each.
            if was_ready:
                ever_ready = True
                failures = 0
                self.restarts += 1
                if self.config.max_restarts == 0:
                    self.error = f"{self.where} exited or closed the connection; it is not restarted (max_restarts = 0)"
                    self.status = "failed"
                    self._fail_ready(McpStartError(self.error))
                    return
                self.error = "the server exited or closed the connection; restarting"
                log.warning("%s exited or closed the connection; restarting it", self.where)
            else:
                failures += 1
                self.error = error
                if not ever_ready or failures >= self.config.max_restarts:
                    if ever_ready:
                        self.error = f"{error} (gave up after {failures} failed restart{'s' if failures != 1 else ''})"
                    self.status = "failed"
                    self._fail_ready(McpStartError(self.error or f"{self.where} failed to start"))
                    return
            self.status = "restarting"
            if self._ready is None or self._ready.done():
                self._new_ready()
            delay = min(self.config.backoff * 2**failures, self.config.backoff_max)
            self.delays.append(delay)
            await asyncio.sleep(delay)

    def _fail_ready(self, exc: BaseException) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc)

    async def _lifetime(self) -> bool:
        """Open the session, hand it out, hold it until it is lost. Returns True when the
        session was ready before it ended; raises McpError when it never got ready."""
        from mcp import ClientSession
        from mcp_types import Implementation

        self.status = "starting"
        lost = asyncio.Event()
        self._lost = lost
        self._garbage = []
        self._garbage_seen = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._open_transport())
            session = await stack.enter_async_context(
                ClientSession(
                    _WatchedStream(read, lost),
                    write,
                    message_handler=self._on_message,
                    client_info=Implementation(name=CLIENT_NAME, version=_version()),
                )
            )
            tools = await self._handshake(session, lost)
            if isinstance(tools, McpError):
                failure = tools
            else:
                failure = None
                await self._hold(session, tools, lost)
        # Raised once the transport is closed, so no task group wraps it in an ExceptionGroup.
        if failure is not None:
            raise failure
        return True

    async def _hold(self, session: ClientSession, tools: list[mcp_types.Tool], lost: asyncio.Event) -> None:
        """Hand the session out and keep it until it is lost or closed."""
        self._session = session
        self.tools = tools
        self.status = "ready"
        self.error = None
        if self.on_tools is not None:
            self.on_tools(self, tools)
        if self._ready is None or self._ready.done():
            self._new_ready()
        assert self._ready is not None
        self._ready.set_result(session)
        try:
            await lost.wait()
        finally:
            self._session = None
            # Callers arriving from now on wait for the restart.
            self._new_ready()

    def _open_transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        config = self.config
        if config.command is not None:
            from mcp import StdioServerParameters, stdio_client

            if config.cwd is not None and not config.cwd.is_dir():
                raise McpStartError(
                    f"{self.where}: cwd {config.cwd} is not a directory; fix [plugins.mcp.servers.{self.name}] cwd"
                )
            self._stderr = _Stderr()
            params = StdioServerParameters(
                command=config.command,
                args=list(config.args),
                env={k: v.get_secret_value() for k, v in config.env.items()} or None,
                cwd=config.cwd,
            )
            return _stdio_guard(stdio_client(params, errlog=self._stderr.file), self)
        import httpx2
        from mcp.shared._httpx_utils import create_mcp_http_client

        headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        client = create_mcp_http_client(headers=headers or None, timeout=httpx2.Timeout(30.0, read=300.0))
        assert config.url is not None
        return _http_context(config.url, client)

    async def _handshake(self, session: ClientSession, lost: asyncio.Event) -> list[mcp_types.Tool] | McpError:
        """initialize + tools/list, bounded by the start-up timeout; fails fast when the
        server exits or writes something that is not JSON-RPC to stdout."""
        from mcp import MCPError

        async def handshake() -> list[mcp_types.Tool]:
            result = await session.initialize()
            info = result.server_info
            self.server_info = f"{info.name} {info.version}".strip()
            return await _list_all_tools(session)

        assert self._garbage_seen is not None
        work = asyncio.ensure_future(handshake())
        garbage = asyncio.ensure_future(self._garbage_seen.wait())
        gone = asyncio.ensure_future(lost.wait())
        limit = self.config.startup_timeout
        try:
            done, _ = await asyncio.wait({work, garbage, gone}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, garbage, gone):
                if not task.done():
                    task.cancel()
            await asyncio.gather(work, garbage, gone, return_exceptions=True)
        if work in done and work.exception() is None:
            return work.result()
        if garbage in done:
            if self.config.transport == "http":
                return McpStartError(f"{self.where} at {self.config.url} could not be reached: {self._garbage[0]}")
            return McpStartError(
                f"{self.where} wrote to stdout something that is not a JSON-RPC message: {self._garbage[0]}; "
                f"an MCP stdio server must write only protocol messages to stdout (logs go to stderr){self._stderr_hint()}"
            )
        exc = work.exception() if work.done() and not work.cancelled() else None
        if gone in done or (isinstance(exc, MCPError)):
            return McpStartError(f"{self.where} exited or closed the connection during start-up{self._stderr_hint()}")
        if exc is not None:
            return McpStartError(
                f"{self.where} failed during start-up: {type(exc).__name__}: {exc}{self._stderr_hint()}"
            )
        return McpStartError(
            f"{self.where} did not finish start-up (initialize and tools/list) within {limit:g} s; "
            f"raise startup_timeout in [plugins.mcp.servers.{self.name}] if it is slow to start{self._stderr_hint()}"
        )

    def _stderr_hint(self) -> str:
        tail = self._stderr.tail() if self._stderr is not None else ""
        return f"; its stderr said: {tail}" if tail else ""

    async def _on_message(self, message: Any) -> None:
        import mcp_types

        if isinstance(message, Exception):
            text = str(message).strip().splitlines()
            summary = text[-1] if text else type(message).__name__
            if "input_value=" in str(message):
                value = str(message).split("input_value=", 1)[1].split(", input_type", 1)[0]
                summary = value[:200]
            self._garbage.append(summary)
            log.warning("%s: transport error: %s", self.where, summary)
            if self._garbage_seen is not None:
                self._garbage_seen.set()
            return
        if isinstance(message, mcp_types.ToolListChangedNotification):
            task = asyncio.get_running_loop().create_task(self._refresh_tools())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _refresh_tools(self) -> None:
        session = self._session
        if session is None:
            return
        try:
            tools = await _list_all_tools(session)
        except Exception as exc:
            log.warning("%s announced new tools but listing them failed: %s", self.where, exc)
            return
        self.tools = tools
        if self.on_tools is not None:
            self.on_tools(self, tools)


@contextlib.asynccontextmanager
async def _stdio_guard(inner: contextlib.AbstractAsyncContextManager[Any], conn: ServerConnection) -> Any:
    """Turn a command that cannot be run into a clear error."""
    try:
        streams = await inner.__aenter__()
    except FileNotFoundError:
        raise McpStartError(
            f"{conn.where}: command {conn.config.command!r} was not found; install it, give its full path, "
            f"or fix command in [plugins.mcp.servers.{conn.name}]"
        ) from None
    except PermissionError:
        raise McpStartError(f"{conn.where}: command {conn.config.command!r} is not executable") from None
    except NotADirectoryError:
        raise McpStartError(f"{conn.where}: cwd {conn.config.cwd} is not a directory") from None
    try:
        yield streams
    except BaseException as exc:
        if not await inner.__aexit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        await inner.__aexit__(None, None, None)


@contextlib.asynccontextmanager
async def _http_context(url: str, client: Any) -> Any:
    from mcp.client.streamable_http import streamable_http_client

    async with client, streamable_http_client(url, http_client=client) as streams:
        yield streams


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _list_all_tools(session: ClientSession) -> list[mcp_types.Tool]:
    from mcp_types import PaginatedRequestParams

    result = await session.list_tools()
    tools = list(result.tools)
    pages = 0
    while result.next_cursor and pages < 100:
        result = await session.list_tools(params=PaginatedRequestParams(cursor=result.next_cursor))
        tools.extend(result.tools)
        pages += 1
    return tools


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("taskloom-mcp")
    except Exception:
        return "0"
