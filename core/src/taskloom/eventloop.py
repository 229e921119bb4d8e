"""The event loop taskloom runs on: asyncio, with timers that wake on time.

asyncio's loop on Linux waits in ``epoll_wait``, whose timeout is whole milliseconds
(CPython rounds up), so every timer -- a sleep, a retry's backoff, a timeout -- fires up to
a millisecond late, 0.5-1 ms on average. Along a chain of a hundred dependent tasks that is
a tenth of a second of nothing. :class:`PreciseEpollSelector` waits on the epoll object
itself with ``select()``, whose timeout is in microseconds, then collects the events from
epoll without waiting: timers fire within the kernel's own slack (tens of microseconds).
Readiness of sockets and pipes is still epoll's, so the number of descriptors is not
limited, and a loop with work ready (timeout 0) makes the one call it always made.

Linux also lets every timed wait end up to the thread's *timer slack* late (50 µs by
default), so the kernel can wake several waits at once; the loop's thread asks for the
smallest slack there is (1 ns, ``PR_SET_TIMERSLACK``) while :func:`run` runs, which took a
timer's median lateness on a 2-core VM from 172 to 116 µs.

Elsewhere (macOS, Windows, an epoll object whose descriptor does not fit ``select()``) the
stock selector is used as it is.

Use :func:`run` where you would use ``anyio.run``; ``taskloom`` commands do. It also paces
the garbage collector for the run (:mod:`taskloom.collector`).
``TASKLOOM_PRECISE_TIMERS=0`` turns precise timers and the timer slack off.
"""

from __future__ import annotations

import asyncio
import os
import select
import selectors
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# select() takes descriptors below FD_SETSIZE only (1024 on Linux).
_SELECT_LIMIT = 1024


class PreciseEpollSelector(selectors.EpollSelector):
    """An epoll selector whose timed waits have microsecond resolution."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            epoll_fd = self.fileno()
            if epoll_fd < _SELECT_LIMIT:
                # Readable as soon as any registered descriptor has an event; the events
                # themselves are then taken from epoll with no wait. A wait that ended
                # with nothing readable is a timer's turn: no events to take.
                if not select.select([epoll_fd], [], [], timeout)[0]:
                    return []
                timeout = 0
        return super().select(timeout)


def precise_timers_enabled() -> bool:
    """Whether :func:`new_event_loop` gives the precise loop here."""
    if os.environ.get("TASKLOOM_PRECISE_TIMERS", "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    default: type[selectors.BaseSelector] = selectors.DefaultSelector
    return default is getattr(selectors, "EpollSelector", None)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An asyncio loop with precise timers where the platform allows, the stock one elsewhere."""
    if precise_timers_enabled():
        return asyncio.SelectorEventLoop(PreciseEpollSelector())
    return asyncio.new_event_loop()


def has_precise_timers(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` waits with :class:`PreciseEpollSelector`."""
    return type(getattr(loop, "_selector", None)) is PreciseEpollSelector


def make_precise(loop: asyncio.AbstractEventLoop) -> bool:
    """Give a running stock asyncio loop precise timers, in place; False when it is not one
    (another loop, another selector, or turned off) and has none already. For loops
    taskloom does not create itself, such as the one Ray runs an async actor on. The
    selector keeps its registrations: only its class changes, to a subclass that adds no
    state. Call it from the loop's thread, whose timer slack it lowers for good."""
    selector = getattr(loop, "_selector", None)
    if precise_timers_enabled() and type(selector) is selectors.EpollSelector:
        selector.__class__ = PreciseEpollSelector
        set_timer_slack(1)  # (called on the loop's own thread: the loop is running)
    return has_precise_timers(loop)


_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30


def set_timer_slack(nanoseconds: int) -> int | None:
    """Set the calling thread's timer slack (Linux); the previous value, or None where
    there is no such setting (another system, or the call refused)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # (here, not at the top: importing ctypes costs ~3 ms, paid only by a loop that runs)

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    # prctl takes unsigned longs after the option (a variadic call: pass them at that width)
    zero = ctypes.c_ulong(0)
    previous = prctl(_PR_GET_TIMERSLACK, zero, zero, zero, zero)
    if previous < 0 or prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(nanoseconds), zero, zero, zero) != 0:
        return None
    return int(previous)


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``anyio.run(fn, *args)`` on :func:`new_event_loop`, with this thread's timer slack at
    its least and the collector paced (both as they were afterwards)."""
    import anyio

    from .collector import paced_collector

    slack = set_timer_slack(1) if precise_timers_enabled() else None
    try:
        with paced_collector():
            return anyio.run(fn, *args, backend="asyncio", backend_options={"loop_factory": new_event_loop})
    finally:
        if slack is not None:
            set_timer_slack(slack)
