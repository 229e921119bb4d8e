"""Outcomes and statistics: what the router learns, and what ``router stats`` shows.

Adaptive mode keeps, per cell (task type x prompt-size bucket x tier), how many calls
succeeded and failed. A call *succeeded* when its ``model.call`` event arrives; it is
turned into a failure when the agent then reports invalid output, when the run is
escalated because the agent could not do the task, and a ``model.error`` is a failure.

The ``past_outcomes`` factor moves a score across one tier boundary:

* **up** when the tier the score picks has at least ``min_samples`` outcomes in the cell
  and a success rate under ``target_success`` (except, with chance ``explore``, to keep
  measuring the lower tier);
* **down** when the tier below has at least ``min_samples`` outcomes in the cell and a
  success rate at or above ``target_success``.

Counts are halved when a cell passes ``max_samples``, so old outcomes fade. Outcomes of
other processes come from the run store (:mod:`taskloom_router.learning`); with
``state_path`` everything here is kept in a JSON file across processes, a cache of what
was learned (last writer wins).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from taskloom.errors import ConfigError

from .config import Adaptive

Cell = tuple[str, str, str]

NOT_ESCALATING = frozenset(
    {"timeout", "max_turns", "max_requests", "max_tool_calls", "max_tokens", "max_cost", "budget", "denied", "config"}
)
"""Why a run can stop without a stronger model helping: limits, time, budget, policy, config."""


def escalates(reason: str) -> bool:
    """Whether a failure for ``reason`` (an agent stop reason, ``refusal``, or the workflow
    engine's ``escalation_reason``) is worth a stronger tier."""
    return reason not in NOT_ESCALATING


def retry_reason(error: str | None) -> str:
    """The stop reason in a failed task attempt's error (``"invalid_output: ..."``)."""
    text = error or ""
    head = text.split(":", 1)[0].strip()
    if head in NOT_ESCALATING or head in ("error", "invalid_output", "refusal"):
        return head
    if text.startswith("timed out"):
        return "timeout"
    return "error"


class Outcomes:
    def __init__(self) -> None:
        self.cells: dict[Cell, list[float]] = {}

    def record(self, task_type: str, bucket: str, tier: str, ok: bool, max_samples: int = 500) -> None:
        counts = self.cells.setdefault((task_type, bucket, tier), [0.0, 0.0])
        counts[0 if ok else 1] += 1
        if counts[0] + counts[1] > max_samples:
            counts[0] /= 2
            counts[1] /= 2

    def flip_success(self, task_type: str, bucket: str, tier: str) -> None:
        """A call first counted as a success turned out to be a failure."""
        counts = self.cells.get((task_type, bucket, tier))
        if counts is None or counts[0] < 1:
            self.record(task_type, bucket, tier, False)
            return
        counts[0] -= 1
        counts[1] += 1

    def rate(self, task_type: str, bucket: str, tier: str) -> tuple[float, float, float]:
        """(success rate, successes, total) in a cell; rate 0 when empty."""
        counts = self.cells.get((task_type, bucket, tier))
        if not counts:
            return 0.0, 0.0, 0.0
        total = counts[0] + counts[1]
        return (counts[0] / total if total else 0.0), counts[0], total

    def adjust(
        self,
        score: float,
        tier: int,
        tiers: list[str],
        thresholds: list[float],
        task_type: str,
        bucket: str,
        cfg: Adaptive,
        rng: random.Random,
    ) -> tuple[float, str | None]:
        """Points to add to ``score`` (which picks ``tier``), with the reason."""
        rate, ok, n = self.rate(task_type, bucket, tiers[tier])
        cell = f"{task_type}/{bucket}"
        if tier < len(tiers) - 1 and n >= cfg.min_samples and rate < cfg.target_success:
            if cfg.explore and rng.random() < cfg.explore:
                return 0.0, f"past outcomes: {tiers[tier]} {ok:g}/{n:g} for {cell} is below target; exploring it anyway"
            points = round(thresholds[tier] + 0.01 - score, 2)
            return (
                points,
                f"past outcomes: {tiers[tier]} succeeded {ok:g}/{n:g} for {cell}, below {cfg.target_success:g}: up to {tiers[tier + 1]}",
            )
        if tier > 0:
            rate, ok, n = self.rate(task_type, bucket, tiers[tier - 1])
            if n >= cfg.min_samples and rate >= cfg.target_success:
                points = round(thresholds[tier - 1] - score, 2)
                return (
                    points,
                    f"past outcomes: {tiers[tier - 1]} succeeded {ok:g}/{n:g} for {cell}: down to {tiers[tier - 1]}",
                )
        return 0.0, None

    def to_json(self) -> list[list[Any]]:
        return [[*cell, ok, fail] for cell, (ok, fail) in sorted(self.cells.items())]

    def load(self, rows: list[list[Any]]) -> None:
        for task_type, bucket, tier, ok, fail in rows:
            self.cells[(str(task_type), str(bucket), str(tier))] = [float(ok), float(fail)]


@dataclass
class Stats:
    """Counters behind ``taskloom router stats``."""

    decisions: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    escalations: Counter[str] = field(default_factory=Counter)
    step_downs: int = 0
    cost: Decimal = Decimal(0)
    cost_if_top: Decimal = Decimal(0)
    unpriced_calls: int = 0

    def as_dict(self, tiers: list[str]) -> dict[str, Any]:
        saving = None
        if self.cost_if_top > 0:
            saving = float(round((1 - self.cost / self.cost_if_top) * 100, 1))
        return {
            "decisions": {t: self.decisions.get(t, 0) for t in tiers}
            | {k: v for k, v in self.decisions.items() if k not in tiers},
            "calls": {t: self.calls.get(t, 0) for t in tiers} | {k: v for k, v in self.calls.items() if k not in tiers},
            "escalations": sum(self.escalations.values()),
            "escalations_by_reason": dict(self.escalations),
            "budget_step_downs": self.step_downs,
            "cost_usd": str(self.cost),
            "cost_if_top_tier_usd": str(self.cost_if_top),
            "saving_pct": saving,
            "unpriced_calls": self.unpriced_calls,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.decisions.update(data.get("decisions", {}))
        self.calls.update(data.get("calls", {}))
        self.escalations.update(data.get("escalations_by_reason", {}))
        self.step_downs += int(data.get("budget_step_downs", 0))
        self.cost += Decimal(str(data.get("cost_usd", "0")))
        self.cost_if_top += Decimal(str(data.get("cost_if_top_tier_usd", "0")))
        self.unpriced_calls += int(data.get("unpriced_calls", 0))


def read_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"[plugins.router] state_path {path}: cannot read it ({exc}); delete the file or fix its JSON"
        ) from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ConfigError(
            f"[plugins.router] state_path {path}: not a router state file (version 1); delete it or point state_path elsewhere"
        )
    return data


def write_state(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".router-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": 1, **data}, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
