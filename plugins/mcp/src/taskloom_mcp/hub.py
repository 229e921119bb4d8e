"""The hub: one background thread with its own asyncio event loop that owns every MCP
session of a kernel.

Why a thread: tools are registered while the kernel is assembled (synchronously), and
agents run on whatever event loop the caller has (``anyio.run`` per CLI command, pytest's
loop per test). An MCP ``ClientSession`` is bound to the loop and task that opened it, so
the sessions live here, each opened and closed by one supervisor task (no "cancel scope in
a different task" errors), and calls hop over (:meth:`Hub.call`).

Shutdown: :meth:`Hub.close` stops every server (stdin closed, then SIGTERM, then SIGKILL
for the process group, as the SDK's stdio transport does) on the hub loop, then stops the
loop. An ``atexit`` handler closes every hub still open when the interpreter exits.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("taskloom.mcp")

_open_hubs: weakref.WeakSet[Hub] = weakref.WeakSet()


class Hub:
    """A lazily started event-loop thread."""

    def __init__(self, name: str = "taskloom-mcp") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closers: list[Any] = []
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.closed:
                raise RuntimeError("the MCP hub is closed; load a new kernel to use MCP servers again")
            if self._loop is None:
                ready = threading.Event()
                loop = asyncio.new_event_loop()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    ready.set()
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name=self.name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
                _open_hubs.add(self)
            return self._loop

    @property
    def started(self) -> bool:
        return self._loop is not None

    def in_hub(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        try:
            loop = self.loop
        except RuntimeError:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the hub and wait for it (from a thread that is not the hub)."""
        if self.in_hub():
            coro.close()
            raise RuntimeError("Hub.run called from the hub thread; await the coroutine instead")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s") from None

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the hub from another event loop; cancelling the caller cancels it."""
        try:
            caller = asyncio.get_running_loop()
        except RuntimeError:  # another async library (trio): wait in a worker thread
            import anyio.to_thread

            future = self.submit(coro)
            return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        try:
            loop = self.loop
        except RuntimeError:
            coro.close()
            raise
        return await _handed_over(loop, caller, coro)

    def on_close(self, closer: Any) -> None:
        """Register an async callable run on the hub loop by :meth:`close`."""
        self._closers.append(closer)

    def close(self, timeout: float = 15.0) -> None:
        """Stop every server and the loop thread. Safe to call twice."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            loop, thread = self._loop, self._thread
        _open_hubs.discard(self)
        if loop is None or thread is None:
            return

        async def close_all() -> None:
            results = await asyncio.gather(*(c() for c in self._closers), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.warning("closing an MCP server failed: %s: %s", type(result).__name__, result)

        try:
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout)
        except Exception as exc:
            log.warning("MCP servers did not stop within %s s: %s", timeout, exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


async def _handed_over(
    loop: asyncio.AbstractEventLoop, caller: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]
) -> T:
    """Run ``coro`` as a task on ``loop`` (the hub) and await its outcome on ``caller``.

    One wake-up each way and nothing else: the task's outcome is copied straight into a
    future of the caller's loop, with none of ``run_coroutine_threadsafe``'s
    ``concurrent.futures.Future`` (its lock and condition) and ``wrap_future``'s second
    chain in between. Cancelling the caller cancels the task on the hub.
    """
    future: asyncio.Future[T] = caller.create_future()
    task: asyncio.Task[T] | None = None
    cancelled = False

    def deliver(done: asyncio.Task[T]) -> None:  # on the caller's loop
        if future.done():
            return
        if done.cancelled():
            future.cancel()
            return
        exc = done.exception()
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(done.result())

    def finished(done: asyncio.Task[T]) -> None:  # on the hub
        if not done.cancelled():
            done.exception()  # retrieved here, so a cancelled caller leaves no "never retrieved" log
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody to tell
            caller.call_soon_threadsafe(deliver, done)

    def start() -> None:  # on the hub
        nonlocal task
        task = loop.create_task(coro)
        task.add_done_callback(finished)
        if cancelled:
            task.cancel()

    def cancel() -> None:  # on the hub
        nonlocal cancelled
        cancelled = True
        if task is not None:
            task.cancel()

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:  # the hub loop was closed meanwhile
        coro.close()
        raise RuntimeError("the MCP hub is closed; load a new kernel to use MCP servers again") from None
    try:
        return await future
    except asyncio.CancelledError:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(cancel)
        raise


@atexit.register
def _close_open_hubs() -> None:
    for hub in list(_open_hubs):
        hub.close()
