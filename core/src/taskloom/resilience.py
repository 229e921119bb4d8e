"""Retry with exponential backoff and full jitter, a circuit breaker per deployment, and
the overall deadline of a call.

Error classes live in :mod:`taskloom.errors`; this module decides what to do with them
(``DeadlineExceeded``, the one error that is about the caller's clock rather than the
provider, lives here with the deadline logic).
"""

from __future__ import annotations

import random
import sys
import time
import types
from collections.abc import Awaitable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from .errors import ProviderError, ProviderTimeout
from .timeouts import deadline

T = TypeVar("T")

State = Literal["closed", "open", "half-open"]


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    attempts: int = 3
    """Attempts per deployment, the first one included."""
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    """A ``Retry-After`` longer than this is not waited for: the next deployment is tried."""

    def delay(self, attempt: int, error: BaseException | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

        Full jitter (uniform between 0 and the exponential cap) spreads clients that failed
        together; a server's ``Retry-After`` is a floor, because it knows better.
        """
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        wait = (rng or random).uniform(0, cap)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, float(retry_after))
        return wait


class DeadlineExceeded(ProviderTimeout):
    """The call's overall deadline (``ModelRequest.deadline``) passed: no attempt, retry
    or fallback is started after it. ``attempts`` lists the failures before it, if any."""

    transient = False

    def __init__(self, message: str, *, model: str = "", attempts: list[tuple[str, BaseException]] | None = None):
        self.attempts = list(attempts or [])
        if self.attempts:
            message += " (before it: " + "; ".join(f"{a}: {type(e).__name__}: {e}" for a, e in self.attempts) + ")"
        super().__init__(message, model=model)


def is_transient(error: BaseException) -> bool:
    return isinstance(error, ProviderError) and error.transient


@dataclass
class CircuitBreaker:
    """Closed: calls pass. After ``threshold`` consecutive failures it opens: calls are
    refused for ``cooldown`` seconds. Then it is half-open: one trial call passes; success
    closes it, failure opens it again."""

    threshold: int = 5
    cooldown: float = 30.0
    clock: object = field(default=time.monotonic, repr=False)
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator, no-any-return]

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        if self._now() - self.opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go through now (reserves the half-open trial)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.trial_in_flight = False

    def record_failure(self) -> None:
        self.failures += 1
        was_trial = self.trial_in_flight
        self.trial_in_flight = False
        if was_trial or self.failures >= self.threshold:
            self.opened_at = self._now()

    def release(self) -> None:
        """Give back a half-open trial whose call ended without a verdict on the
        deployment (cancelled, or cut short by the caller's deadline)."""
        self.trial_in_flight = False

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (self._now() - self.opened_at))


def within(seconds: float, call: Coroutine[Any, Any, T]) -> Awaitable[T]:
    """``await within(seconds, call)``: await ``call``, raising ``TimeoutError`` if it has
    not finished ``seconds`` from now.

    The same as ``async with deadline(seconds): await call``, but on asyncio the timer is
    armed only once the call first suspends: a call that answers without waiting (an
    in-process answer, a fast tool) pays nothing for the timeout, and one that waits is
    bounded from the moment ``within`` was called. A timeout can only interrupt a call
    where it waits, so nothing else changes for the caller.
    """
    # asyncio is looked up, not imported: a process that never imported it runs no asyncio
    # loop, and importing it would cost every ``taskloom`` command ~20 ms at start-up.
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return _scoped(seconds, call)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio): anyio's scope
        return _scoped(seconds, call)
    if type(call) is not types.CoroutineType:  # another kind of awaitable
        return _scoped(seconds, call)
    return _lazily_bounded(call, seconds, time.monotonic())


async def _scoped(seconds: float, call: Awaitable[T]) -> T:
    async with deadline(seconds):
        return await call


@types.coroutine
def _lazily_bounded(call: Coroutine[Any, Any, T], seconds: float, started: float) -> Generator[Any, Any, T]:
    # Step the coroutine as ``await`` would; if it finishes at once, no timer is needed.
    try:
        pending = call.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    # It waits: run the rest inside asyncio's timeout scope, passing every send and
    # throw on to the coroutine as ``yield from`` does. The scope ends ``seconds`` after
    # ``started`` (read on the monotonic clock, and turned into the loop's own time here).
    asyncio = sys.modules["asyncio"]  # within() found its loop running
    loop = asyncio.get_running_loop()
    scope = asyncio.timeout_at(loop.time() + seconds - (time.monotonic() - started))
    yield from scope.__aenter__().__await__()
    try:
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                raise
            except BaseException as exc:
                pending = call.throw(exc)
            else:
                pending = call.send(sent)
    except StopIteration as stop:
        yield from scope.__aexit__(None, None, None).__await__()
        return stop.value  # type: ignore[no-any-return]
    except GeneratorExit:  # the awaiting coroutine is being closed: close ours too
        scope.reschedule(None)
        call.close()
        raise
    except BaseException as exc:
        # On expiry asyncio cancelled the task: this turns that into ``TimeoutError``.
        yield from scope.__aexit__(type(exc), exc, exc.__traceback__).__await__()
        raise
