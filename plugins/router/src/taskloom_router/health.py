"""What the router knows about each deployment, learned from the gateway's events.

A hook cannot reach the gateway, so the router keeps its own view:

* **in flight**: a call counts from the moment it is routed until its ``model.call`` or
  ``model.error`` event arrives, or until ``inflight_ttl_s`` passes: a completion that is
  never reported (a crashed worker, a lost event) stops counting then, so it cannot make a
  deployment look busy for ever (``expired_in_flight`` counts those);
* **rate windows**: requests and tokens over the last 60 s, for ``rpm`` / ``tpm``
  (tokens: the prompt estimate when routed, the output tokens when the call reports);
* **latency**: a time-decayed average of ``latency_s`` (see :class:`DecayingAverage`);
* **cooldown**: ``cooldown.failures`` failures within ``cooldown.window_s`` (or one rate
  limit error) take the deployment out for ``cooldown.seconds``;
* **circuit**: a mirror of the gateway's breaker rules (``[models.<alias>] circuit``):
  ``threshold`` consecutive failures open it for ``cooldown`` seconds. When the router is
  bound to a kernel (:func:`taskloom_router.router_of`) the gateway's real breakers are
  read instead.

Failures caused by the request itself (``BadRequest``, ``ContextWindowExceeded``) say
nothing about the deployment and do not count, as in the gateway.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

MINUTE = 60.0
REQUEST_FAULTS = ("BadRequest", "ContextWindowExceeded")


@dataclass(slots=True)
class DecayingAverage:
    """An average whose samples lose half their weight every ``half_life`` seconds.

    ``total`` and ``weight`` are both decayed, so a new sample after a quiet spell
    dominates, and once the remaining weight falls under ``min_weight`` (about one sample
    several half-lives old) the average is *unknown* again: old samples age out.
    """

    half_life: float
    min_weight: float = 0.1
    total: float = 0.0
    weight: float = 0.0
    at: float = 0.0

    def _decay(self, now: float) -> float:
        return math.exp(-(now - self.at) * math.log(2) / self.half_life) if now > self.at else 1.0

    def add(self, value: float, now: float) -> None:
        d = self._decay(now)
        self.total = self.total * d + value
        self.weight = self.weight * d + 1.0
        self.at = now

    def value(self, now: float) -> float | None:
        if self.weight <= 0.0 or self.weight * self._decay(now) < self.min_weight:
            return None
        return self.total / self.weight


@dataclass(slots=True)
class DeploymentState:
    alias: str
    tier: int
    weight: float
    rpm: int | None
    tpm: int | None
    price_in: float | None
    """USD per token (None: unpriced)."""
    price_out: float | None
    circuit_threshold: int
    circuit_cooldown: float
    latency: DecayingAverage
    inflight_ttl: float = 600.0
    """Seconds after which a call routed here and never reported stops counting as in flight."""
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0
    flights: deque[float] = field(default_factory=deque)
    """When each call in flight was routed, oldest first."""
    expired_in_flight: int = 0
    failures: deque[float] = field(default_factory=deque)
    cooldown_until: float = 0.0
    consecutive: int = 0
    open_until: float = 0.0
    last_error: str = ""

    # ------------------------------------------------------------ estimates

    def estimate(self, prompt_tokens: int, output_tokens: int) -> float | None:
        if self.price_in is None or self.price_out is None:
            return None
        return prompt_tokens * self.price_in + output_tokens * self.price_out

    # ------------------------------------------------------------ availability

    def down(self, now: float, tokens: int, breaker: Any = None) -> str | None:
        """Why this deployment cannot take a call now, or None when it can."""
        if now < self.cooldown_until:
            return f"cooling down for {self.cooldown_until - now:.0f} s more after errors (last: {self.last_error})"
        if breaker is not None:
            if breaker.state == "open":
                return f"circuit open in the gateway; retry in {breaker.retry_in():.0f} s"
        elif now < self.open_until:
            return f"circuit open after {self.consecutive} consecutive failures (last: {self.last_error}); half-open in {self.open_until - now:.0f} s"
        if self.rpm is not None:
            self._prune(now)
            if len(self.requests) >= self.rpm:
                return f"at its rpm limit ({len(self.requests)}/{self.rpm} requests in the last minute)"
        if self.tpm is not None:
            self._prune(now)
            if self.token_sum + tokens > self.tpm:
                return f"over its tpm limit ({self.token_sum} tokens in the last minute + {tokens} > {self.tpm})"
        return None

    def _prune(self, now: float) -> None:
        edge = now - MINUTE
        requests = self.requests
        while requests and requests[0] <= edge:
            requests.popleft()
        tokens = self.tokens
        while tokens and tokens[0][0] <= edge:
            self.token_sum -= tokens.popleft()[1]

    @property
    def in_flight(self) -> int:
        return len(self.flights)

    def busy(self, now: float) -> int:
        """Calls in flight now; those routed more than ``inflight_ttl`` ago are dropped."""
        if self.rpm is None and self.tpm is None:
            self._prune(now)
        flights = self.flights
        edge = now - self.inflight_ttl
        while flights and flights[0] <= edge:
            flights.popleft()
            self.expired_in_flight += 1
        return len(flights)

    # ------------------------------------------------------------ bookkeeping

    def routed(self, now: float, tokens: int) -> None:
        self.flights.append(now)
        self.requests.append(now)
        if tokens:
            self.tokens.append((now, tokens))
            self.token_sum += tokens
        if len(self.requests) > 4096 and self.rpm is None:
            self._prune(now)

    def settled(self) -> None:
        """A call reported back: the oldest call in flight stops counting."""
        if self.flights:
            self.flights.popleft()

    def succeeded(self, now: float, latency_s: float | None, output_tokens: int) -> None:
        self.consecutive = 0
        self.open_until = 0.0
        if latency_s is not None:
            self.latency.add(latency_s, now)
        if output_tokens:
            self.tokens.append((now, output_tokens))
            self.token_sum += output_tokens

    def failed(self, now: float, error: str, cooldown_failures: int, window: float, cooldown: float) -> None:
        """Count one failed attempt (request faults excluded by the caller)."""
        self.last_error = error if len(error) <= 120 else error[:117] + "..."
        self.consecutive += 1
        if self.consecutive >= self.circuit_threshold:
            self.open_until = now + self.circuit_cooldown
        failures = self.failures
        failures.append(now)
        while failures and failures[0] <= now - window:
            failures.popleft()
        if len(failures) >= cooldown_failures or error.startswith("RateLimitError"):
            self.cooldown_until = now + cooldown
            failures.clear()

    def snapshot(self, now: float) -> dict[str, Any]:
        latency = self.latency.value(now)
        self._prune(now)
        return {
            "alias": self.alias,
            "in_flight": self.busy(now),
            "expired_in_flight": self.expired_in_flight,
            "requests_last_minute": len(self.requests),
            "tokens_last_minute": self.token_sum,
            "latency_s": None if latency is None else round(latency, 4),
            "cooldown_s": round(max(0.0, self.cooldown_until - now), 1),
            "consecutive_failures": self.consecutive,
            "last_error": self.last_error or None,
        }


def is_request_fault(error: str) -> bool:
    return error.startswith(REQUEST_FAULTS)
