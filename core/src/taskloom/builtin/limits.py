"""``limits``: a policy with user tiers defined in config.

Each tier may cap requests per minute (sliding window), tokens per day, concurrent runs,
the models and tools allowed, and delegation depth. A user's tier comes from the
request's ``metadata.tier``, else ``[plugins.limits.users]``, else ``default_tier``.

``allowed_models`` is enforced on the model actually called: the requested alias when the
call enters the gateway (``model_call``; ``auto`` is left to the router), and every
deployment of the chain, routed choice and fallbacks alike, before it is called
(``deployment``: a refused one is skipped with the reason, the next one is tried).

Independently, a deployment whose prompt would not fit its context window is refused
before it reaches the provider. The window is the alias's ``context_window`` option when
config sets one, else the provider's declared ``capabilities().context_window``; the
prompt is counted with the provider's own ``count_tokens``, else tiktoken (or the
estimate when tiktoken's encoding cannot be loaded).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskloom import hookimpl
from taskloom.config import Settings
from taskloom.tokens import count_messages
from taskloom.types import Action, Denial, Event, Message, TextPart

NAME = "limits"
DAY = 86_400.0


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(None, ge=0)
    tokens_per_day: int | None = Field(None, ge=0)
    concurrent_runs: int | None = Field(None, ge=0)
    allowed_models: list[str] | None = Field(None, description="Model aliases allowed (None: all).")
    allowed_tools: list[str] | None = Field(None, description="Tools allowed (None: all).")
    max_delegation_depth: int | None = Field(None, ge=0)


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tiers: dict[str, Tier] = Field(default_factory=dict)
    users: dict[str, str] = Field(default_factory=dict, description="User id to tier name.")
    default_tier: str | None = None
    context_check: bool = Field(
        True,
        description="Deny prompts longer than the deployment's context window "
        "(the alias's context_window option, else the provider's declared one).",
    )

    @model_validator(mode="after")
    def _known_tiers(self) -> LimitsConfig:
        names = set(self.tiers)
        for user, tier in self.users.items():
            if tier not in names:
                raise ValueError(
                    f"user {user!r} has unknown tier {tier!r} (tiers: {', '.join(sorted(names)) or 'none'})"
                )
        if self.default_tier is not None and self.default_tier not in names:
            raise ValueError(f"default_tier {self.default_tier!r} is not a defined tier")
        return self


class Limits:
    """One instance per kernel; counters are per user."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.config = LimitsConfig()
        self.clock = clock
        self.requests: dict[str, deque[float]] = defaultdict(deque)
        self.tokens: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self.running: dict[str, set[str]] = defaultdict(set)
        self._aliases: dict[str, tuple[Settings, Any, str]] = {}

    @hookimpl
    def taskloom_config_model(self) -> type[BaseModel]:
        return LimitsConfig

    @hookimpl
    def taskloom_configure(self, settings: Settings) -> None:
        self.config = settings.plugin_config(NAME) or LimitsConfig()

    def tier_of(self, user: str | None, tier: str | None) -> tuple[str, Tier] | None:
        if not self.config.tiers:
            return None
        name = tier or (self.config.users.get(user) if user else None) or self.config.default_tier
        if name is None:
            return None
        found = self.config.tiers.get(name)
        return (name, found) if found is not None else None

    @hookimpl
    def taskloom_check_kinds(self, settings: Settings) -> list[str] | None:
        """With no tiers only deployments are checked (the context window), or nothing."""
        if self.config.tiers:
            return None
        return ["deployment"] if self.config.context_check else []

    @hookimpl
    def taskloom_wants_events(self, settings: Settings) -> bool:
        """Events feed the per-day token counts and the concurrent runs: only tiers that
        cap them need them."""
        return any(t.tokens_per_day is not None or t.concurrent_runs is not None for t in self.config.tiers.values())

    @hookimpl
    def taskloom_check(self, action: Action, settings: Settings) -> Denial | None:
        kind = action.kind
        if kind == "deployment":
            return self._deployment(action, settings)
        if not self.config.tiers:
            return None  # no tiers, no limits but the context window
        meta = action.metadata
        found = self.tier_of(meta.user, meta.tier)
        if found is None:
            return None
        name, tier = found
        user = meta.user or "anonymous"
        if kind == "model_call" and action.request is not None:
            model = action.request.model
            if model != "auto":
                denial = _model_denial(name, tier, model)
                if denial:
                    return denial
            now = self.clock()
            if tier.tokens_per_day is not None:
                used = self._tokens_today(user, now)
                if used >= tier.tokens_per_day:
                    return Denial(
                        reason=f"tier {name!r} allows {tier.tokens_per_day} tokens a day; {user} used {used}",
                        plugin=NAME,
                    )
            if tier.requests_per_minute is not None:
                window = self.requests[user]
                while window and now - window[0] >= 60.0:
                    window.popleft()
                if len(window) >= tier.requests_per_minute:
                    wait = 60.0 - (now - window[0])
                    return Denial(
                        reason=f"tier {name!r} allows {tier.requests_per_minute} requests a minute; try again in {wait:.0f} s",
                        plugin=NAME,
                    )
                window.append(now)
        elif kind == "tool_call" and tier.allowed_tools is not None and action.tool not in tier.allowed_tools:
            return Denial(reason=f"tier {name!r} may not use tool {action.tool!r}", plugin=NAME)
        elif kind == "delegate" and tier.max_delegation_depth is not None and meta.depth > tier.max_delegation_depth:
            return Denial(
                reason=f"tier {name!r} allows delegation {tier.max_delegation_depth} deep; this is {meta.depth}",
                plugin=NAME,
            )
        elif kind == "run" and tier.concurrent_runs is not None:
            if len(self.running[user]) >= tier.concurrent_runs:
                return Denial(
                    reason=f"tier {name!r} allows {tier.concurrent_runs} concurrent runs; {user} has {len(self.running[user])}",
                    plugin=NAME,
                )
        return None

    def _deployment(self, action: Action, settings: Settings) -> Denial | None:
        """One deployment of the chain, about to be called: allowed models, then the
        context window."""
        alias = action.model or (action.request.model if action.request is not None else "")
        if self.config.tiers:
            found = self.tier_of(action.metadata.user, action.metadata.tier)
            if found is not None:
                denial = _model_denial(found[0], found[1], alias)
                if denial:
                    return denial
        if self.config.context_check and action.request is not None:
            return self._context(action, alias, settings)
        return None

    def _alias(self, alias: str, settings: Settings) -> tuple[Any, str]:
        """The alias's configured context window (or None) and its model name for the
        tokenizer, read from config once per alias (the settings of a kernel do not change)."""
        known = self._aliases.get(alias)
        if known is None or known[0] is not settings:
            config = settings.models.get(alias)
            extra = config.model_extra if config is not None else None  # (``options`` makes a copy)
            window = extra.get("context_window") if extra else None
            known = (settings, window, config.model if config is not None and config.model else alias)
            self._aliases[alias] = known
        return known[1], known[2]

    def _context(self, action: Action, alias: str, settings: Settings) -> Denial | None:
        request = action.request
        assert request is not None
        provider = action.provider
        window, model = self._alias(alias, settings)
        if not window and provider is not None:
            try:
                window = provider.capabilities().context_window
            except Exception:
                window = None
        if not window:
            return None
        window = int(window)
        messages = request.messages
        if _upper_bound(messages) <= window:
            return None  # cannot exceed the window whatever the tokenizer: skip counting
        tokens = _count(provider, messages, model)
        if tokens > window:
            return Denial(reason=f"the prompt has about {tokens} tokens; {alias} holds {window}", plugin=NAME)
        return None

    def _tokens_today(self, user: str, now: float) -> int:
        window = self.tokens[user]
        while window and now - window[0][0] >= DAY:
            window.popleft()
        return sum(n for _, n in window)

    @hookimpl
    def taskloom_event(self, event: Event) -> None:
        kind = event.kind
        if kind == "model.call":
            if not any(t.tokens_per_day is not None for t in self.config.tiers.values()):
                return  # no tier counts tokens: keep no history (it would only grow)
            usage = event.data.get("usage")
            user = event.data.get("user") or "anonymous"
            if usage is not None and not event.data.get("cached"):
                self.tokens[user].append((self.clock(), usage.total_tokens))
        elif kind == "run.start":
            self.running[event.data.get("user") or "anonymous"].add(event.run_id or "")
        elif kind in ("run.finish", "run.fail", "run.interrupt"):
            self.running[event.data.get("user") or "anonymous"].discard(event.run_id or "")


def _model_denial(name: str, tier: Tier, model: str) -> Denial | None:
    if tier.allowed_models is not None and model not in tier.allowed_models:
        return Denial(
            reason=f"tier {name!r} may not use model {model!r} (allowed: {', '.join(tier.allowed_models)})",
            plugin=NAME,
        )
    return None


def _upper_bound(messages: list[Message]) -> int:
    """More tokens than any byte-level tokenizer can make of these messages (a token is
    at least one UTF-8 byte, a character at most four), with each message's overhead.
    Infinite when a message holds an image, whose cost only the provider knows."""
    chars = 0
    for m in messages:
        content = m.content
        if type(content) is str:
            chars += len(content)
        elif any(not isinstance(p, TextPart) for p in content):
            return 1 << 62
        else:
            chars += len(m.text)
        if m.name:
            chars += len(m.name)
        for call in m.tool_calls:
            chars += len(call.name) + len(call.raw_arguments) + 2  # (8 tokens of overhead)
    return 3 + 8 * len(messages) + 4 * chars


def _count(provider: Any, messages: list[Message], model: str) -> int:
    """The provider's own count when it has a tokenizer, else tiktoken's (or the estimate)."""
    counter = getattr(provider, "count_tokens", None)
    if counter is not None:
        try:
            return int(counter(messages))
        except Exception:
            pass  # a provider that cannot count (NotImplementedError...) is counted for
    return count_messages(messages, model)
