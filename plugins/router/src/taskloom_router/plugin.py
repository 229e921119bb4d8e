"""``router``: the tier router plugin (one :class:`Router` per kernel).

Hooks:

* ``taskloom_route``: for ``model = "auto"`` requests, plan and return the chain (the
  chosen deployment, the rest of its tier, then up to ``escalation.max_tiers`` tiers up).
  The decision, with its factor breakdown, goes into ``request.metadata.route`` and into
  the gateway's ``model.route`` event (``data["route"]``).
* ``taskloom_check``: denies a model call whose estimated cost (or tokens) cannot fit the
  run's remaining budget (``metadata.budget_remaining_usd`` / ``budget_remaining_tokens``,
  filled by the agent loop, or the ``budget_usd`` extra), or when the budget is zero.
* ``taskloom_event``: learns deployment health, latency, spend and outcomes from events,
  and which workflow tasks are being retried (``task.retry``) so their next attempt
  goes a tier up.
* ``taskloom_register_commands``: ``taskloom router explain``, ``stats`` and ``learn``.

Metadata the kernel may declare as typed fields or pass as extras (``budget_remaining_usd``,
``budget_remaining_tokens``, ``attempt``, ``escalation_reason``) is read with
:func:`meta_value`, which finds it either way.
"""

from __future__ import annotations

import atexit
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from taskloom import hookimpl
from taskloom.config import Settings
from taskloom.errors import BudgetExceeded, ConfigError
from taskloom.types import Action, Denial, Event, ModelRequest, RequestMeta, Usage

from .config import DEFAULT_TASK_TYPES, RouterConfig, check_aliases
from .errors import EscalationExhausted
from .health import DecayingAverage, DeploymentState, is_request_fault
from .meta import meta_value, tokens_denial
from .outcomes import Outcomes, Stats, escalates, read_state, retry_reason, write_state
from .planner import Key, Plan, check_tier_name, plan
from .prices import per_million, per_token

NAME = "router"
_MAX_KEYS = 10_000
_SAVE_EVERY_S = 5.0
_MILLION = Decimal(1_000_000)


@dataclass(slots=True)
class KeyState:
    """What the router remembers about one agent run (run_id, task_id, agent)."""

    tier: int | None = None
    pending: str | None = None
    """Alias counted in flight, until its call reports back."""
    pending_at: float = 0.0
    task_type: str = "-"
    bucket: str = "tiny"
    budget_key: str | None = None
    escalate: str | None = None
    escalations: int = 0
    floor: int = 0
    last_ok: tuple[str, str, str] | None = None
    attempt: int = 1
    """The workflow task attempt this agent run is on."""
    top: int | None = None
    """The highest tier routed during this attempt."""
    retry_floor: int = 0
    """The lowest tier for later attempts, after an escalated retry."""
    retry_escalations: int = 0
    retry_hint: tuple[int, str] | None = None
    """(next attempt, reason) from the engine's ``task.retry`` event."""


def _key(meta: RequestMeta | Event) -> Key:
    return (meta.run_id, meta.task_id, meta.agent)


class Router:
    def __init__(self) -> None:
        self.config = RouterConfig()
        self.settings: Settings | None = None
        self.tier_names: list[str] = []
        self.thresholds: list[float] = []
        self.tiers: list[list[DeploymentState]] = []
        self.strategies: list[str] = []
        self.by_alias: dict[str, DeploymentState] = {}
        self.task_types: dict[str, float] = dict(DEFAULT_TASK_TYPES)
        self.outcomes = Outcomes()
        self.stats = Stats()
        self.clock: Callable[[], float] = time.monotonic
        self.rng = random.Random()
        self.breakers: dict[str, Any] | None = None
        self.keys: dict[Key, KeyState] = {}
        self.spent: dict[str, Decimal] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=100)
        self.refusals: list[re.Pattern[str]] = []
        self.state_path: Path | None = None
        self.learned_runs: dict[str, None] = {}
        """Runs whose outcomes are counted (from events or the run store), oldest first."""
        self._checked: Plan | None = None
        self._route_info: dict[str, Any] | None = None
        self._top_prices: tuple[Decimal, Decimal] | None = None
        """The top tier's first deployment, USD per million tokens (input, output)."""
        self._dirty = False
        self._saved_at = 0.0

    # ------------------------------------------------------------------ set-up

    @hookimpl
    def taskloom_config_model(self) -> type[BaseModel]:
        return RouterConfig

    @hookimpl
    def taskloom_configure(self, settings: Settings) -> None:
        cfg: RouterConfig = settings.plugin_config(NAME) or RouterConfig()
        check_aliases(cfg, settings)
        self.config = cfg
        self.settings = settings
        self.task_types = {**DEFAULT_TASK_TYPES, **cfg.task_types}
        self.tier_names = [t.name for t in cfg.tiers]
        self.thresholds = cfg.thresholds()
        self.strategies = [t.strategy or cfg.strategy for t in cfg.tiers]
        self.rng = random.Random(cfg.seed)
        self.tiers = []
        for i, tier in enumerate(cfg.tiers):
            states = []
            for dep in tier.deployments:
                model = settings.model(dep.model)
                price_in, price_out = per_token(dep, model, settings)
                state = DeploymentState(
                    alias=dep.model, tier=i, weight=dep.weight, rpm=dep.rpm, tpm=dep.tpm, price_in=price_in, price_out=price_out,
                    circuit_threshold=model.circuit.threshold, circuit_cooldown=model.circuit.cooldown,
                    latency=DecayingAverage(cfg.latency_half_life_s), inflight_ttl=cfg.inflight_ttl_s,
                )  # fmt: skip
                states.append(state)
                self.by_alias[dep.model] = state
            self.tiers.append(states)
        if self.tiers:
            top = cfg.tiers[-1].deployments[0]
            top_in, top_out = per_million(top, settings.model(top.model), settings)
            if top_in is not None and top_out is not None:
                self._top_prices = (Decimal(str(top_in)), Decimal(str(top_out)))
        try:
            self.refusals = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in cfg.escalation.refusal_patterns]
        except re.error as exc:
            raise ConfigError(
                f"{settings.where}: [plugins.router.escalation] refusal_patterns: invalid regex {exc.pattern!r}: {exc}"
            ) from None
        if cfg.state_path:
            self.state_path = Path(cfg.state_path).expanduser()
            data = read_state(self.state_path)
            self.stats.load(data.get("stats", {}))
            self.outcomes.load(data.get("outcomes", []))
            self.learned_runs = dict.fromkeys(str(r) for r in data.get("learned_runs", []))
            atexit.register(self.flush)

    # ------------------------------------------------------------------ lookups

    def tier_for(self, value: float) -> int:
        for i, bound in enumerate(self.thresholds):
            if value <= bound:
                return i
        return len(self.thresholds) - 1

    def tier_index(self, name: str) -> int:
        return check_tier_name(self.tier_names, name)

    def tier_of(self, alias: str) -> str | None:
        """The tier an alias belongs to, or None when it is in no tier."""
        state = self.by_alias.get(alias)
        return None if state is None else self.tier_names[state.tier]

    def last_tier(self, meta: RequestMeta) -> str | None:
        """The tier of the last decision for this agent run (run_id, task_id, agent)."""
        state = self.keys.get(_key(meta))
        return None if state is None or state.tier is None else self.tier_names[state.tier]

    def breaker(self, alias: str) -> Any:
        return self.breakers.get(alias) if self.breakers else None

    def remaining(self, meta: RequestMeta, state: KeyState | None = None) -> float | None:
        """The run's remaining budget in USD from the request's metadata, or None.

        ``budget_remaining_usd`` (a typed field the agent loop fills from the run's
        :class:`~taskloom.agent.Budget` on every turn, or an extra) is taken as it is;
        else ``budget_usd`` is the budget of the scope ``budget_id`` (else ``run_id``)
        minus what the router saw it spend.
        """
        value = meta_value(meta, "budget_remaining_usd")
        if value is not None:
            return _number(value, "budget_remaining_usd")
        value = meta_value(meta, "budget_usd")
        if value is None:
            return None
        spent = self.spent.get(_budget_key(meta), Decimal(0))
        return _number(value, "budget_usd") - float(spent)

    def remaining_tokens(self, meta: RequestMeta) -> int | None:
        """The run's remaining token budget (``budget_remaining_tokens``), or None."""
        value = meta_value(meta, "budget_remaining_tokens")
        if value is None:
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"metadata budget_remaining_tokens must be a whole number, found {value!r}") from None

    # ------------------------------------------------------------------ deciding

    def plan(self, request: ModelRequest) -> Plan:
        """The decision for ``request`` without committing it (what ``explain`` shows)."""
        if not self.tiers:
            raise ConfigError(
                'model "auto": [plugins.router] has no tiers; add tiers = [{ name = "...", deployments = ["alias"] }, ...]'
            )
        key = _key(request.metadata)
        return plan(self, request, key, self.keys.get(key))

    def decide(self, request: ModelRequest) -> list[str]:
        """Plan and commit: what ``taskloom_route`` does for an ``auto`` request."""
        checked = self._checked
        self._checked = None
        p = checked if checked is not None and checked.request is request else self.plan(request)
        if p.error is not None:
            raise p.error
        return self._commit(p)

    def _commit(self, p: Plan) -> list[str]:
        meta = p.request.metadata
        key = _key(meta)
        state = self.keys.get(key)
        if state is None:
            if len(self.keys) >= _MAX_KEYS:
                del self.keys[next(iter(self.keys))]
            state = self.keys[key] = KeyState()
        now = self.clock()
        if state.pending is not None:  # an earlier call never reported back
            self.by_alias[state.pending].settled()
        first = p.chain[0]
        first.routed(now, p.score.prompt_tokens)
        state.pending, state.pending_at = first.alias, now
        state.tier, state.task_type, state.bucket = p.tier, p.score.task_type, p.score.bucket
        state.budget_key = _budget_key(meta) if p.remaining is not None else None
        if p.attempt is not None:  # the first call of a new task attempt
            if p.retry_floor is not None and p.escalation is not None:
                state.retry_floor = p.retry_floor
                state.retry_escalations += 1
                self.stats.escalations[p.escalation] += 1
            state.attempt, state.top, state.retry_hint = p.attempt, None, None
        if state.top is None or p.tier > state.top:
            state.top = p.tier
        if p.escalation is not None and p.retry_floor is None:
            if state.escalate is not None:
                state.escalations += 1
                state.escalate = None
                self.stats.escalations[p.escalation] += 1
            state.floor = max(state.floor, p.tier)
        tier_name = self.tier_names[p.tier]
        self.stats.decisions[tier_name] += 1
        if p.step_down:
            self.stats.step_downs += 1
        info = p.as_dict(self.tier_names)
        extra = meta.__pydantic_extra__
        if extra is not None:  # RequestMeta allows extra keys; this is meta.route = info, without the setattr cost
            extra["route"] = info
        self._route_info = info
        self.recent.append(info)
        self._dirty = True
        return [d.alias for d in p.chain]

    def escalate(self, request: ModelRequest, reason: str = "manual") -> str:
        """Send ``request``'s next call one tier above its last decision; return the tier.

        Sets ``request.metadata.min_tier`` (kept by every later call with that metadata),
        counts the escalation, and turns the last success of that agent run into a
        failure in the outcome table. Raises :class:`EscalationExhausted` at the top tier.
        """
        meta = request.metadata
        extra = meta.__pydantic_extra__ or {}
        route = extra.get("route")
        state = self.keys.get(_key(meta))
        current = state.tier if state is not None and state.tier is not None else None
        if current is None and isinstance(route, dict):
            current = self.tier_index(route["tier"])
        if current is None:
            raise EscalationExhausted("this request was never routed; nothing to escalate from")
        return self.escalate_meta(meta, current, reason, state)

    def escalate_meta(self, meta: RequestMeta, current: int, reason: str, state: KeyState | None = None) -> str:
        """Set ``meta.min_tier`` to the tier above ``current`` and count the escalation."""
        if current + 1 >= len(self.tiers):
            raise EscalationExhausted(f"{self.tier_names[current]} is the top tier; there is no tier to escalate to")
        target = self.tier_names[current + 1]
        meta.min_tier = target  # type: ignore[attr-defined]
        meta.escalation_reason = reason  # type: ignore[attr-defined]
        self.stats.escalations[reason] += 1
        if state is not None and state.last_ok is not None:
            self.outcomes.flip_success(*state.last_ok)
            state.last_ok = None
        self._dirty = True
        return target

    def failure_reason(self, result: Any) -> str | None:
        """Why an agent result counts as failed for escalation, or None when it succeeded.

        ``error`` (the call failed terminally) and ``invalid_output`` escalate, and so does
        an answer matching ``escalation.refusal_patterns`` (the agent could not do it).
        Limits (turns, budget, time) and policy denials do not: a stronger model would not help.
        """
        if result.stop_reason in ("error", "invalid_output"):
            return str(result.stop_reason)
        text = result.text or ""
        for pattern in self.refusals:
            if pattern.search(text):
                return "refusal"
        return None

    # ------------------------------------------------------------------ hooks

    @hookimpl
    def taskloom_route(self, request: ModelRequest, settings: Settings) -> list[str] | None:
        if request.model != "auto":
            return None
        return self.decide(request)

    @hookimpl
    def taskloom_check_kinds(self, settings: Settings) -> list[str]:
        # Budgets are checked on model calls only; nothing else needs to be shown here.
        return ["model_call"]

    @hookimpl
    def taskloom_check(self, action: Action, settings: Settings) -> Denial | None:
        request = action.request
        if action.kind != "model_call" or request is None:
            return None
        meta = request.metadata
        try:
            remaining = self.remaining(meta)
            tokens_left = self.remaining_tokens(meta)
        except ValueError as exc:
            return Denial(reason=str(exc), plugin=NAME)
        if remaining is None and tokens_left is None:
            return None
        if remaining is not None and remaining <= 0:
            return Denial(
                reason=f"the run's budget is used up (${max(remaining, 0.0):.6f} left); no model call fits", plugin=NAME
            )
        if tokens_left is not None and tokens_left <= 0:
            return Denial(reason="the run's token budget is used up (0 tokens left); no model call fits", plugin=NAME)
        if request.model == "auto":
            if not self.tiers:
                return None
            p = self.plan(request)
            self._checked = p
            if isinstance(p.error, BudgetExceeded):
                return Denial(reason=str(p.error).removeprefix("router: "), plugin=NAME)
            return None
        tokens = plan_tokens(self, request)
        if tokens_left is not None:
            need = tokens + (request.max_tokens or 0)
            if need > tokens_left:
                return Denial(reason=tokens_denial(tokens, request.max_tokens, tokens_left), plugin=NAME)
        state = self.by_alias.get(request.model)
        if state is None or state.price_in is None or remaining is None:
            return None
        cost = state.estimate(tokens, request.max_tokens or self.config.budget.expected_output_tokens)
        if cost is not None and cost > remaining:
            return Denial(
                reason=f"a call to {request.model} would cost about ${cost:.6f}; the run has ${remaining:.6f} left",
                plugin=NAME,
            )
        return None

    @hookimpl(tryfirst=True)
    def taskloom_event(self, event: Event) -> None:
        kind = event.kind
        if kind == "model.route":
            if self._route_info is not None:
                event.data.setdefault("route", self._route_info)
                self._route_info = None
            return
        if kind == "model.call":
            self._on_call(event)
        elif kind == "model.error" or kind == "model.retry":
            self._on_error(event, final=kind == "model.error")
        elif kind == "agent.output_invalid":
            state = self.keys.get(_key(event))
            if state is not None:
                if state.last_ok is not None:
                    self.outcomes.flip_success(*state.last_ok)
                    state.last_ok = None
                if self.config.escalation.on_invalid_output:
                    state.escalate = "invalid_output"
        elif kind == "agent.start":
            state = self.keys.get(_key(event))
            if state is not None:
                state.escalate, state.escalations, state.floor, state.last_ok = None, 0, 0, None
        elif kind == "task.retry":
            self._on_retry(event)
        else:
            return
        if self.state_path is not None and self._dirty and self.clock() - self._saved_at > _SAVE_EVERY_S:
            self.flush()

    @hookimpl
    def taskloom_register_commands(self, register: Callable[..., None]) -> None:
        from .cli import router_group

        register(router_group)

    # ------------------------------------------------------------------ learning

    def _settle(self, event: Event, state: KeyState | None, alias: str | None) -> None:
        if state is not None and state.pending is not None and (alias is None or alias == state.pending):
            self.by_alias[state.pending].settled()
            state.pending = None

    def _on_call(self, event: Event) -> None:
        data = event.data
        alias = data.get("alias")
        state = self.keys.get(_key(event))
        self._settle(event, state, None)
        dep = self.by_alias.get(alias) if alias else None
        if dep is None or data.get("cached"):
            return
        usage: Usage | None = data.get("usage")
        dep.succeeded(self.clock(), data.get("latency_s"), usage.output_tokens if usage is not None else 0)
        tier = self.tier_names[dep.tier]
        self.stats.calls[tier] += 1
        cost = data.get("cost")
        if cost is not None and cost.priced:
            self.stats.cost += cost.total
            self.stats.cost_if_top += cost.total if dep.tier == len(self.tiers) - 1 else self._top_cost(usage)
            if state is not None and state.budget_key is not None:
                self.spent[state.budget_key] = self.spent.get(state.budget_key, Decimal(0)) + cost.total
                if len(self.spent) > _MAX_KEYS:
                    del self.spent[next(iter(self.spent))]
        else:
            self.stats.unpriced_calls += 1
        if state is not None:
            if state.tier is not None and dep.tier > state.tier:
                self.stats.escalations["fallback"] += 1
                state.floor = max(state.floor, dep.tier)
            cell = (state.task_type, state.bucket, tier)
            self.outcomes.record(*cell, ok=True, max_samples=self.config.adaptive.max_samples)
            state.last_ok = cell
            self._learned(event.run_id)
        self._dirty = True

    def _on_retry(self, event: Event) -> None:
        """The workflow engine retries a task: note it for that agent run's next attempt.

        The next routed call applies it (see ``planner._retry``); metadata from the engine
        (``attempt``, ``escalation_reason``), when present, takes precedence."""
        state = self.keys.get(_key(event))
        if state is None:
            return
        failed = int(event.data.get("attempt") or state.attempt)
        reason = retry_reason(event.data.get("error"))
        state.retry_hint = (failed + 1, reason)
        if escalates(reason) and state.last_ok is not None:
            self.outcomes.flip_success(*state.last_ok)  # its answer was not good enough
        state.last_ok = None
        self._dirty = True

    def _learned(self, run_id: str | None) -> None:
        if run_id is not None and run_id not in self.learned_runs:
            self.learned_runs[run_id] = None
            if len(self.learned_runs) > _MAX_KEYS:
                del self.learned_runs[next(iter(self.learned_runs))]

    def _top_cost(self, usage: Usage | None) -> Decimal:
        if usage is None or self._top_prices is None:
            return Decimal(0)
        price_in, price_out = self._top_prices
        return (usage.input_tokens * price_in + usage.output_tokens * price_out) / _MILLION

    def _on_error(self, event: Event, *, final: bool) -> None:
        data = event.data
        alias = data.get("alias")
        dep = self.by_alias.get(alias) if alias else None
        if dep is None:
            return
        error = str(data.get("error", ""))
        if not is_request_fault(error):
            c = self.config.cooldown
            dep.failed(self.clock(), error, c.failures, c.window_s, c.seconds)
        if final:
            state = self.keys.get(_key(event))
            self._settle(event, state, alias)
            if state is not None:
                self.outcomes.record(
                    state.task_type,
                    state.bucket,
                    self.tier_names[dep.tier],
                    ok=False,
                    max_samples=self.config.adaptive.max_samples,
                )
                self._learned(event.run_id)
            self._dirty = True

    # ------------------------------------------------------------------ reporting

    def report_failure(self, meta: RequestMeta, reason: str) -> None:
        """Count the last successful call of this agent run as a failure (e.g. the answer
        turned out wrong), so adaptive mode learns from it."""
        state = self.keys.get(_key(meta))
        if state is not None and state.last_ok is not None:
            self.outcomes.flip_success(*state.last_ok)
            state.last_ok = None
            self._dirty = True

    def stats_dict(self) -> dict[str, Any]:
        now = self.clock()
        out = self.stats.as_dict(self.tier_names)
        out["tiers"] = [
            {
                "name": n,
                "max_score": self.thresholds[i],
                "strategy": self.strategies[i],
                "deployments": [d.snapshot(now) for d in self.tiers[i]],
            }
            for i, n in enumerate(self.tier_names)
        ]
        out["outcomes"] = [
            {"task_type": t, "size": b, "tier": tier, "succeeded": ok, "failed": fail}
            for t, b, tier, ok, fail in self.outcomes.to_json()
        ]
        out["learned_runs"] = len(self.learned_runs)
        out["recent"] = list(self.recent)[-10:]
        out["state_path"] = str(self.state_path) if self.state_path else None
        return out

    def flush(self) -> None:
        """Write stats and outcomes to ``state_path`` (no-op without one)."""
        if self.state_path is None:
            return
        self._saved_at = self.clock()
        self._dirty = False
        write_state(
            self.state_path,
            {
                "stats": self.stats.as_dict(self.tier_names),
                "outcomes": self.outcomes.to_json(),
                "learned_runs": list(self.learned_runs),
            },
        )

    async def learn_from_store(self, store: Any, runs: int = 200) -> tuple[int, int]:
        """Count the outcomes recorded in the run store's last ``runs`` finished runs that
        this router has not counted yet (see :mod:`taskloom_router.learning`).

        Returns (runs learned from, outcomes added). With ``state_path`` the result is
        written to the file, which then acts as a cache of the store."""
        from .learning import outcomes_from_store

        found = await outcomes_from_store(store, self.by_alias, self.tier_names, set(self.learned_runs), runs)
        added = 0
        for run_id, rows in found:
            for task_type, bucket, tier, ok in rows:
                self.outcomes.record(task_type, bucket, tier, ok, max_samples=self.config.adaptive.max_samples)
                added += 1
            self._learned(run_id)
        if found:
            self._dirty = True
            self.flush()
        return len(found), added


def plan_tokens(router: Router, request: ModelRequest) -> int:
    from .scoring import prompt_tokens

    return prompt_tokens(request, router.config.exact_tokens)


def _budget_key(meta: RequestMeta) -> str:
    extra = meta.__pydantic_extra__ or {}
    return str(extra.get("budget_id") or meta.run_id or "-")


def _number(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metadata {name} must be a number of US dollars, found {value!r}") from None
