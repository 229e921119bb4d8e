"""Escalation across agent runs: run, judge, and run again one tier up.

Within one gateway call the router escalates on its own: the chain it returns holds the
next tiers' deployments after the chosen tier's, so a terminal failure moves up. Within
one agent run, a repair request after invalid structured output goes one tier up (the
router sees the ``agent.output_invalid`` event). What is left is a run whose *final
answer* failed (an error, invalid output after every repair, or "I could not do it"):
:func:`run_escalating` runs it again with ``metadata.min_tier`` set to the next tier,
at most ``escalation.max_retries`` times.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from taskloom.agent import Agent, AgentResult, Budget, run_agent
from taskloom.errors import ConfigError
from taskloom.types import Message, RequestMeta

from .plugin import Router


@dataclass
class Attempt:
    tier: str | None
    stop_reason: str
    failure: str | None
    cost: Decimal


@dataclass
class EscalatedRun:
    result: AgentResult
    """The last attempt's result."""
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def escalations(self) -> int:
        return len(self.attempts) - 1

    @property
    def cost(self) -> Decimal:
        return sum((a.cost for a in self.attempts), Decimal(0))


def router_of(kernel: Any) -> Router:
    """The router plugin instance of ``kernel``, bound to its gateway's circuit breakers."""
    infos = kernel.plugins.infos
    info = infos.get("router")
    candidates = [info] if info is not None else []
    candidates += [i for i in infos.values() if isinstance(i.obj, Router) and i is not info]
    for candidate in candidates:
        if candidate.status == "enabled" and isinstance(candidate.obj, Router):
            router: Router = candidate.obj
            router.breakers = kernel.gateway.breakers
            return router
    reason = f": {info.reason}" if info is not None and info.reason else ""
    status = info.status if info is not None else "not installed"
    raise ConfigError(
        f"the router plugin is {status}{reason}; install taskloom-router and configure [plugins.router] tiers"
    )


async def run_escalating(
    kernel: Any,
    agent: Agent,
    prompt: str | list[Message],
    *,
    meta: RequestMeta | None = None,
    budget: Budget | None = None,
    failed: Callable[[AgentResult], str | None] | None = None,
) -> EscalatedRun:
    """Run ``agent`` (``model = "auto"``); while its result failed and a tier is left,
    run it again one tier up. ``failed(result)`` returns why a result failed, or None
    (default: :meth:`Router.failure_reason`). With a ``budget`` in dollars, its remainder
    is passed to the router (``metadata.budget_usd``) so it steps down and denies calls
    that would break it."""
    router = router_of(kernel)
    judge = failed or router.failure_reason
    meta = (meta or RequestMeta()).model_copy()
    if budget is not None and budget.remaining_usd is not None:
        meta.budget_usd = float(budget.remaining_usd)  # type: ignore[attr-defined]
        meta.budget_id = (meta.__pydantic_extra__ or {}).get("budget_id") or f"budget-{uuid.uuid4().hex}"  # type: ignore[attr-defined]
    run = None
    attempts: list[Attempt] = []
    for n in range(router.config.escalation.max_retries + 1):
        result = await run_agent(kernel, agent, prompt, meta=meta, budget=budget)
        tier = (
            router.tier_of(result.models[-1])
            if result.models
            else router.last_tier(meta.model_copy(update={"agent": agent.name}))
        )
        reason = judge(result)
        attempts.append(Attempt(tier, result.stop_reason, reason, result.cost.total))
        run = EscalatedRun(result, attempts)
        if reason is None or tier is None or n == router.config.escalation.max_retries:
            break
        current = router.tier_index(tier)
        if current + 1 >= len(router.tiers):
            break
        run_meta = meta.model_copy(update={"agent": agent.name})
        router.report_failure(run_meta, reason)
        meta = meta.model_copy()
        router.escalate_meta(meta, current, reason)
    assert run is not None
    return run
