"""One routing decision: score → tier → budget → available deployments → chain.

:func:`plan` is pure apart from the weighted-random draw: it reads the router's state and
returns a :class:`Plan`; the router commits it (counts, in-flight, the decision record)
only when the call is actually routed. ``router explain`` shows a plan without committing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskloom.errors import BudgetExceeded, ConfigError
from taskloom.types import ModelRequest

from . import balance
from .errors import NoDeploymentAvailable
from .health import DeploymentState
from .meta import meta_value, tokens_denial
from .outcomes import escalates
from .scoring import Score, score

if TYPE_CHECKING:
    from .plugin import KeyState, Router


Key = tuple[str | None, str | None, str | None]


@dataclass(slots=True)
class Plan:
    request: ModelRequest
    score: Score
    scored_tier: int
    tier: int
    chain: list[DeploymentState]
    skipped: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    estimate: float | None = None
    remaining: float | None = None
    output_tokens: int = 0
    step_down: bool = False
    escalation: str | None = None
    error: Exception | None = None
    attempt: int | None = None
    """Set when this is the first call of a new workflow task attempt."""
    retry_floor: int | None = None
    """Set when that attempt escalates: the tier later attempts keep as their floor."""

    def as_dict(self, tiers: list[str]) -> dict[str, Any]:
        first = self.chain[0] if self.chain else None
        return {
            "score": self.score.value,
            "factors": self.score.factors,
            "task_type": self.score.task_type,
            "prompt_tokens": self.score.prompt_tokens,
            "size": self.score.bucket,
            "scored_tier": tiers[self.scored_tier],
            "tier": tiers[self.tier],
            "deployment": first.alias if first else None,
            "chain": [d.alias for d in self.chain],
            "estimated_cost_usd": None if self.estimate is None else round(self.estimate, 8),
            "budget_remaining_usd": self.remaining,
            "escalation": self.escalation,
            "attempt": self.attempt,
            "reasons": self.score.notes + self.reasons if self.reasons else self.score.notes,
            "skipped": self.skipped,
        }


def plan(router: Router, request: ModelRequest, key: Key, state: KeyState | None) -> Plan:
    cfg = router.config
    now = router.clock()
    sc = score(request, router.task_types, cfg.default_task_complexity, exact=cfg.exact_tokens)
    tier = router.tier_for(sc.value)
    if cfg.adaptive.enabled:
        points, note = router.outcomes.adjust(
            sc.value, tier, router.tier_names, router.thresholds, sc.task_type, sc.bucket, cfg.adaptive, router.rng
        )
        sc.add("past_outcomes", points, note)
        if points:
            tier = router.tier_for(sc.value)
    p = Plan(request, sc, tier, tier, [])
    meta = request.metadata
    floor = 0
    wanted = meta_value(meta, "min_tier")
    if wanted is not None:
        floor = router.tier_index(str(wanted))
        if floor > tier:
            p.escalation = str(meta_value(meta, "escalation_reason") or "escalated")
            p.reasons.append(f"escalated to {wanted} ({p.escalation})")
    floor = max(floor, _retry(router, p, state, tier))
    if state is not None:
        if state.escalate is not None and state.tier is not None and state.escalations < cfg.escalation.max_retries:
            up = min(state.tier + 1, len(router.tiers) - 1)
            if up > max(floor, tier):
                p.escalation = state.escalate
                p.reasons.append(f"escalated from {router.tier_names[state.tier]} ({state.escalate})")
            floor = max(floor, up)
        floor = max(floor, state.floor)
    start = max(tier, floor)
    p.tier = start
    p.output_tokens = request.max_tokens or cfg.budget.expected_output_tokens
    tokens_left = router.remaining_tokens(meta)
    if tokens_left is not None and sc.prompt_tokens + (request.max_tokens or 0) > tokens_left:
        p.error = BudgetExceeded("router: " + tokens_denial(sc.prompt_tokens, request.max_tokens, tokens_left))
        return p
    p.remaining = router.remaining(meta, state)
    if p.remaining is not None:
        _budget_tier(router, p, start, floor, now)
        if p.error is not None:
            return p
    _build_chain(router, p, now)
    return p


def _retry(router: Router, p: Plan, state: KeyState | None, tier: int) -> int:
    """The floor for a workflow task's retried attempt (0: none).

    The attempt number and reason come from the metadata (``attempt``,
    ``escalation_reason``, set by the workflow engine) or, without them, from the
    engine's ``task.retry`` event. A new attempt whose reason is a capability failure
    (not a limit, a timeout or a denial) goes one tier above the highest tier the last
    attempt used, at most ``escalation.max_retries`` times for one task; later attempts
    stay at least there. Without a record of earlier attempts (another process, a remote
    executor) it goes ``attempt - 1`` tiers above the scored one, within the same bound.
    """
    meta = p.request.metadata
    value = meta_value(meta, "attempt")
    hint = state.retry_hint if state is not None else None
    if value is not None:
        try:
            attempt = int(value)
        except (TypeError, ValueError):
            attempt = 1
        reason = meta_value(meta, "escalation_reason")
        if reason is None and hint is not None and hint[0] == attempt:
            reason = hint[1]
    elif hint is not None:
        attempt, reason = hint
    else:
        return state.retry_floor if state is not None else 0
    seen = state.attempt if state is not None else 1
    floor = state.retry_floor if state is not None else 0
    if attempt <= seen:
        return floor
    p.attempt = attempt
    reason = str(reason) if reason else None
    bound = router.config.escalation.max_retries
    last = len(router.tiers) - 1
    if reason is None or not escalates(reason):
        return floor
    if state is not None:
        if state.retry_escalations >= bound:
            return floor
        base = state.top if state.top is not None else (state.tier if state.tier is not None else tier)
        target = min(last, max(floor, base + 1))
    else:
        base = tier
        target = min(last, tier + min(attempt - 1, bound))
    if target <= base:
        return floor  # the last attempt was on the top tier already
    p.retry_floor = target
    p.escalation = reason
    p.reasons.append(f"task attempt {attempt}: escalated from {router.tier_names[base]} ({reason})")
    return target


def _cost(d: DeploymentState, p: Plan) -> float | None:
    return d.estimate(p.score.prompt_tokens, p.output_tokens)


def _budget_tier(router: Router, p: Plan, start: int, floor: int, now: float) -> None:
    """Pick the highest tier (from ``start`` down to ``floor``) whose call takes at most the
    tight share of what remains; else the highest that fits at all; else fail."""
    remaining = p.remaining
    assert remaining is not None
    tight = remaining * router.config.budget.tight_fraction
    tokens = p.score.prompt_tokens
    for limit in (tight, remaining):
        for i in range(start, floor - 1, -1):
            for d in router.tiers[i]:
                cost = _cost(d, p)
                if (cost is None or cost <= limit) and d.down(now, tokens, router.breaker(d.alias)) is None:
                    if i < start:
                        p.step_down = True
                        first = _cheapest(router.tiers[start], p)
                        p.reasons.append(
                            f"budget: about ${first:.6f} on {router.tier_names[start]} is more than "
                            f"{router.config.budget.tight_fraction:.0%} of the ${remaining:.6f} left; stepped down to {router.tier_names[i]}"
                        )
                    elif limit is remaining and cost is not None and cost > tight:
                        p.reasons.append(
                            f"budget: tight (about ${cost:.6f} of ${remaining:.6f} left) but no cheaper tier is up"
                        )
                    p.tier = i
                    return
    cheapest = min(
        (c for i in range(floor, start + 1) for d in router.tiers[i] if (c := _cost(d, p)) is not None), default=None
    )
    if cheapest is not None and cheapest > remaining:
        where = f"at or above {router.tier_names[floor]}" if floor else "in any tier"
        p.error = BudgetExceeded(
            f"router: the cheapest call {where} would cost about ${cheapest:.6f} "
            f"({p.score.prompt_tokens} prompt + {p.output_tokens} output tokens) and the run has ${remaining:.6f} left; "
            "raise the budget or shorten the prompt"
        )
    else:
        p.tier = start  # nothing is up: the chain builder reports why


def _cheapest(deps: list[DeploymentState], p: Plan) -> float:
    return min((c for d in deps if (c := _cost(d, p)) is not None), default=0.0)


def _build_chain(router: Router, p: Plan, now: float) -> None:
    cfg = router.config
    tokens = p.score.prompt_tokens
    remaining = p.remaining
    breakers = router.breakers
    chain: list[DeploymentState] = []
    last = len(router.tiers) - 1
    top = min(last, p.tier + cfg.escalation.max_tiers)
    for i in range(p.tier, top + 1):
        _add_tier(router, p, i, now, tokens, remaining, breakers, chain)
    if not chain and cfg.degrade:
        for i in [*range(top + 1, last + 1), *range(p.tier - 1, -1, -1)]:
            _add_tier(router, p, i, now, tokens, remaining, breakers, chain)
        if chain:
            p.reasons.append(f"degraded: nothing at {router.tier_names[p.tier]} or its escalation tiers is up")
    if not chain:
        if p.skipped and all(w.startswith("over budget") for w in p.skipped.values()):
            p.error = BudgetExceeded(f"router: every deployment is over the remaining budget ({_join(p.skipped)})")
        else:
            p.error = NoDeploymentAvailable(p.skipped)
        return
    first = chain[0]
    if first.tier != p.tier:
        p.reasons.append(f"{router.tier_names[p.tier]} has no deployment up; using {router.tier_names[first.tier]}")
        p.tier = first.tier
    p.chain = chain
    p.estimate = first.estimate(tokens, p.output_tokens)


def _add_tier(
    router: Router,
    p: Plan,
    i: int,
    now: float,
    tokens: int,
    remaining: float | None,
    breakers: Any,
    chain: list[DeploymentState],
) -> None:
    usable = []
    for d in router.tiers[i]:
        why = d.down(now, tokens, breakers.get(d.alias) if breakers else None)
        if why is None and remaining is not None:
            cost = d.estimate(tokens, p.output_tokens)
            if cost is not None and cost > remaining:
                why = f"over budget (about ${cost:.6f}, ${remaining:.6f} left)"
        if why is None:
            usable.append(d)
        else:
            p.skipped[f"{router.tier_names[i]}/{d.alias}"] = why
    if usable:
        chain.extend(balance.order(router.strategies[i], usable, now, router.rng) if len(usable) > 1 else usable)


def _join(skipped: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in skipped.items())


def check_tier_name(names: list[str], name: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        raise ConfigError(f"metadata min_tier {name!r} is not a router tier; tiers: {', '.join(names)}") from None
