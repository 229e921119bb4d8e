"""Retry with exponential backoff and full jitter, a circuit breaker per deployment, and
the overall deadline of a call.

Error classes live in :mod:`taskloom.errors`; this module decides what to do with them
(``DeadlineExceeded``, the one error that is about the caller's clock rather than the
provider, lives here with the deadline logic).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .errors import ProviderError, ProviderTimeout

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
