"""The ``[plugins.router]`` table: tiers of deployments and the knobs of each stage.

Tiers are an ordered array, weakest (cheapest) first::

    [plugins.router]
    tiers = [
      { name = "weak", deployments = [{ model = "nano", weight = 2, rpm = 600, tpm = 200000 }, "mini"] },
      { name = "base", deployments = ["gpt41-mini"] },
      { name = "strong", deployments = ["gpt41"], max_score = 10 },
    ]

A deployment is a model alias (``[models.<alias>]``) or a table with the alias and its
weight, rate limits and price. Aliases are checked against ``[models]`` when the kernel is
assembled (:func:`check_aliases`), because the pydantic model cannot see the rest of the
configuration.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from taskloom.config import Settings, did_you_mean
from taskloom.errors import ConfigError

Strategy = Literal["weighted", "least_busy", "latency"]

DEFAULT_TASK_TYPES: dict[str, float] = {
    "classification": 2.0,
    "extraction": 3.0,
    "summarisation": 3.0,
    "summarization": 3.0,
    "translation": 3.0,
    "rewriting": 3.0,
    "chat": 3.0,
    "question_answering": 4.0,
    "creative_writing": 4.0,
    "analysis": 5.0,
    "code_generation": 6.0,
    "planning": 6.0,
    "math": 7.0,
    "multi_step_reasoning": 8.0,
}

DEFAULT_REFUSALS = [
    r"\bI (?:can(?:no|')t|am unable to|'m unable to|could not|couldn't) (?:do|complete|answer|help with|solve)\b",
    r"\bI (?:don't|do not) know how to\b",
    r"^\s*(?:UNABLE|CANNOT_COMPLETE)\b",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Price(_Section):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class Deployment(_Section):
    model: str = Field(description="A model alias defined as [models.<alias>].")
    weight: float = Field(1.0, gt=0, description="Share of traffic for weighted random balancing.")
    rpm: int | None = Field(None, ge=1, description="Requests per minute this deployment accepts.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute this deployment accepts.")
    price: Price | None = Field(
        None, description="Price for cost estimates (default: [models.<alias>] price, then the price table)."
    )


class Tier(_Section):
    name: str = Field(min_length=1)
    deployments: list[Deployment] = Field(description="Model aliases (or tables) serving this tier.")
    max_score: float | None = Field(
        None, ge=1, le=10, description="Highest complexity score this tier takes (default: an even split)."
    )
    strategy: Strategy | None = Field(None, description="Load balancing for this tier (default: the router's).")

    @field_validator("deployments", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"model": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Tier:
        if not self.deployments:
            raise ValueError(
                f'tier {self.name!r} has no deployments; list at least one, e.g. deployments = ["my-alias"]'
            )
        return self


class Cooldown(_Section):
    failures: int = Field(3, ge=1, description="Failures within window_s that put a deployment in cooldown.")
    window_s: float = Field(60.0, gt=0)
    seconds: float = Field(30.0, ge=0, description="How long a deployment is skipped after that.")


class Escalation(_Section):
    max_tiers: int = Field(
        1, ge=0, description="Tiers above the chosen one put in the fallback chain, and retries of a failed run."
    )
    max_retries: int = Field(
        2, ge=0, description="Escalated retries of one agent run (repairs after invalid output, re-runs after failure)."
    )
    on_invalid_output: bool = Field(
        True, description="A repair request after invalid structured output goes one tier up."
    )
    refusal_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSALS), description="Regexes marking an answer as 'could not do it'."
    )


class BudgetSettings(_Section):
    tight_fraction: float = Field(
        0.25, gt=0, le=1, description="Step down when one call would take more than this share of what remains."
    )
    expected_output_tokens: int = Field(
        400, ge=0, description="Output tokens assumed for estimates when a request sets no max_tokens."
    )


class Adaptive(_Section):
    enabled: bool = False
    min_samples: int = Field(20, ge=1, description="Outcomes in a cell before they move the score.")
    target_success: float = Field(0.9, gt=0, le=1, description="Success rate a tier must keep in a cell.")
    explore: float = Field(
        0.05, ge=0, le=1, description="Chance of not pushing up, so a lower tier keeps being tested."
    )
    max_samples: int = Field(500, ge=10, description="Counts are halved past this, so old outcomes fade.")


class RouterConfig(_Section):
    tiers: list[Tier] = Field(default_factory=list, description="Tiers from weakest (cheapest) to strongest.")
    strategy: Strategy = Field("weighted", description="Load balancing within a tier.")
    task_types: dict[str, float] = Field(
        default_factory=dict, description="Task type to base complexity (1-10), merged over the defaults."
    )
    default_task_complexity: float = Field(
        4.0, ge=1, le=10, description="Base complexity of an unknown or missing task type."
    )
    exact_tokens: bool = Field(
        False, description="Count prompt tokens with tiktoken (slower) instead of 4 characters a token."
    )
    latency_half_life_s: float = Field(300.0, gt=0, description="Half-life of latency samples in the decaying average.")
    inflight_ttl_s: float = Field(
        600.0, gt=0, description="A call not reported back after this long stops counting as in flight."
    )
    degrade: bool = Field(
        True, description="When every deployment at or above the chosen tier is down, try lower tiers."
    )
    cooldown: Cooldown = Field(default_factory=Cooldown)
    escalation: Escalation = Field(default_factory=Escalation)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    adaptive: Adaptive = Field(default_factory=Adaptive)
    state_path: str | None = Field(None, description="JSON file keeping stats and outcomes across processes.")
    seed: int | None = Field(None, description="Seed for weighted random choices (reproducible runs).")

    @field_validator("task_types")
    @classmethod
    def _scores_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for name, score in value.items():
            if not 1 <= score <= 10:
                raise ValueError(f"task type {name!r} has complexity {score}; use a number from 1 to 10")
        return value

    @model_validator(mode="after")
    def _tiers_consistent(self) -> RouterConfig:
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tier names must be unique; repeated: {', '.join(dupes)}")
        seen: dict[str, str] = {}
        for tier in self.tiers:
            for dep in tier.deployments:
                if dep.model in seen:
                    raise ValueError(
                        f"model alias {dep.model!r} is in tiers {seen[dep.model]!r} and {tier.name!r}; an alias belongs to one tier"
                    )
                seen[dep.model] = tier.name
        bounds = [t.max_score for t in self.tiers if t.max_score is not None]
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError(f"tier max_score values must rise from the first tier to the last; found {bounds}")
        return self

    def thresholds(self) -> list[float]:
        """Each tier's highest score: configured, else an even split of 1-10; the last is 10."""
        n = len(self.tiers)
        out = []
        for i, tier in enumerate(self.tiers):
            out.append(tier.max_score if tier.max_score is not None else round(1 + 9 * (i + 1) / n, 2))
        if out:
            out[-1] = 10.0
        return out


def check_aliases(config: RouterConfig, settings: Settings) -> None:
    """Every deployment must name a ``[models.<alias>]``; raise one error listing all that do not."""
    problems = []
    for tier in config.tiers:
        for dep in tier.deployments:
            if dep.model == "auto":
                problems.append(f'tier {tier.name!r}: "auto" is the router itself, not a model alias')
            elif dep.model not in settings.models:
                problems.append(
                    f"tier {tier.name!r}: unknown model alias {dep.model!r}{did_you_mean(dep.model, settings.models)}"
                )
    if problems:
        known = ", ".join(sorted(settings.models)) or "none"
        raise ConfigError(
            f"{settings.where}: [plugins.router] "
            + "; ".join(problems)
            + f" (defined aliases: {known}); define [models.<alias>] or fix the tier"
        )
