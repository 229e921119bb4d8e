"""The precise-timer event loop: timed waits shorter than epoll's millisecond, events
still delivered, the stock loop where it cannot apply or is turned off."""

from __future__ import annotations

import asyncio
import os
import selectors
import sys
import time

import anyio
import pytest
from taskloom import eventloop

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll is Linux's")


def shortest_wait(selector: selectors.BaseSelector, timeout: float, tries: int = 20) -> float:
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        selector.select(timeout)
        best = min(best, time.perf_counter() - start)
    return best


@linux_only
def test_a_timed_wait_is_not_rounded_up_to_a_millisecond() -> None:
    # epoll_wait takes whole milliseconds (rounded up): 0.3 ms becomes at least 1 ms.
    with selectors.EpollSelector() as stock, eventloop.PreciseEpollSelector() as precise:
        assert shortest_wait(stock, 0.0003) >= 0.00095
        waited = shortest_wait(precise, 0.0003)
    assert 0.0003 <= waited < 0.0009


@linux_only
def test_events_arrive_at_once_and_with_their_key() -> None:
    read_fd, write_fd = os.pipe()
    try:
        with eventloop.PreciseEpollSelector() as selector:
            key = selector.register(read_fd, selectors.EVENT_READ, data="pipe")
            assert selector.select(0.001) == []
            os.write(write_fd, b"x")
            start = time.perf_counter()
            ready = selector.select(5)
            assert time.perf_counter() - start < 1
            assert ready == [(key, selectors.EVENT_READ)]
            assert ready[0][0].data == "pipe"
    finally:
        os.close(read_fd)
        os.close(write_fd)


@linux_only
def test_a_descriptor_select_cannot_take_falls_back_to_epoll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventloop, "_SELECT_LIMIT", 0)
    read_fd, write_fd = os.pipe()
    try:
        with eventloop.PreciseEpollSelector() as selector:
            assert shortest_wait(selector, 0.0003, tries=3) >= 0.00095  # epoll's own wait
            key = selector.register(read_fd, selectors.EVENT_READ)
            os.write(write_fd, b"x")
            assert selector.select(5) == [(key, selectors.EVENT_READ)]
    finally:
        os.close(read_fd)
        os.close(write_fd)


@linux_only
def test_the_loop_uses_the_precise_selector_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKLOOM_PRECISE_TIMERS", raising=False)
    loop = eventloop.new_event_loop()
    try:
        assert isinstance(loop._selector, eventloop.PreciseEpollSelector)  # type: ignore[attr-defined]
    finally:
        loop.close()
    monkeypatch.setenv("TASKLOOM_PRECISE_TIMERS", "0")
    assert not eventloop.precise_timers_enabled()
    loop = eventloop.new_event_loop()
    try:
        assert not isinstance(loop._selector, eventloop.PreciseEpollSelector)  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_run_drives_anyio_code_with_sleeps_timeouts_and_subprocesses() -> None:
    async def main(delay: float) -> tuple[float, bool, bytes]:
        start = time.perf_counter()
        await anyio.sleep(delay)
        slept = time.perf_counter() - start
        with anyio.move_on_after(0.01) as scope:
            await anyio.sleep(5)
        done = await anyio.run_process([sys.executable, "-c", "print('hi')"])
        assert isinstance(asyncio.get_running_loop(), asyncio.AbstractEventLoop)
        return slept, scope.cancelled_caught, done.stdout

    slept, timed_out, out = eventloop.run(main, 0.02)
    assert slept >= 0.02
    assert timed_out
    assert out.strip() == b"hi"


@linux_only
def test_a_loop_made_elsewhere_gets_precise_timers_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKLOOM_PRECISE_TIMERS", raising=False)
    loop = asyncio.SelectorEventLoop(selectors.EpollSelector())
    read_fd, write_fd = os.pipe()
    try:
        got: list[bytes] = []
        loop.add_reader(read_fd, lambda: got.append(os.read(read_fd, 10)))
        assert not eventloop.has_precise_timers(loop)
        assert eventloop.make_precise(loop) and eventloop.has_precise_timers(loop)
        selector = loop._selector  # type: ignore[attr-defined]
        assert type(selector) is eventloop.PreciseEpollSelector
        assert shortest_wait(selector, 0.0003) < 0.0009
        os.write(write_fd, b"ok")  # the reader registered before the change still fires
        loop.run_until_complete(asyncio.sleep(0.01))
        assert got == [b"ok"]
        assert eventloop.make_precise(loop)  # already precise: nothing to do, still True
    finally:
        loop.remove_reader(read_fd)
        loop.close()
        os.close(read_fd)
        os.close(write_fd)


def left_alone(selector: selectors.BaseSelector) -> bool:
    """make_precise said no and the loop kept its selector."""
    loop = asyncio.SelectorEventLoop(selector)
    try:
        return not eventloop.make_precise(loop) and loop._selector is selector  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_a_loop_that_is_not_epoll_or_turned_off_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert left_alone(selectors.SelectSelector())
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("TASKLOOM_PRECISE_TIMERS", "off")
        selector = selectors.EpollSelector()
        assert left_alone(selector) and type(selector) is selectors.EpollSelector


def thread_slack() -> int:
    """The calling thread's timer slack in nanoseconds, as the kernel reports it."""
    import threading

    # (a thread id names its own /proc entry, as a process id does)
    with open(f"/proc/{threading.get_native_id()}/timerslack_ns") as f:
        return int(f.read())


slack_readable = pytest.mark.skipif(
    not os.path.exists("/proc/self/timerslack_ns"), reason="this kernel does not show timer slack in /proc"
)


@linux_only
@slack_readable
def test_run_lowers_the_threads_timer_slack_for_the_run_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKLOOM_PRECISE_TIMERS", raising=False)
    eventloop.set_timer_slack(50_000)  # the kernel's default, whatever an earlier test left
    try:

        async def inside() -> int:
            return thread_slack()

        assert eventloop.run(inside) == 1
        assert thread_slack() == 50_000
        monkeypatch.setenv("TASKLOOM_PRECISE_TIMERS", "0")
        assert eventloop.run(inside) == 50_000
    finally:
        eventloop.set_timer_slack(50_000)


@linux_only
@slack_readable
def test_make_precise_lowers_the_slack_of_the_loops_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKLOOM_PRECISE_TIMERS", raising=False)
    seen: list[int] = []

    def loop_thread() -> None:  # a thread of its own: the change lasts as long as the thread
        loop = asyncio.SelectorEventLoop(selectors.EpollSelector())
        try:
            seen.append(thread_slack())
            assert eventloop.make_precise(loop)
            seen.append(thread_slack())
        finally:
            loop.close()

    import threading

    worker = threading.Thread(target=loop_thread)
    worker.start()
    worker.join()
    assert seen[-1] == 1 and seen[0] != 1


def test_timer_slack_elsewhere_is_no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventloop.sys, "platform", "darwin")
    assert eventloop.set_timer_slack(1) is None
