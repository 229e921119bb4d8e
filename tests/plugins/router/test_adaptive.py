"""Adaptive mode: recorded outcomes move the tier boundary per task type and size; state persists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from taskloom import Agent, Event, Message, ModelRequest, run_agent
from taskloom.types import RequestMeta
from taskloom_router import router_of
from taskloom_router.plugin import Router

from .conftest import config, make

pytestmark = pytest.mark.anyio

ADAPTIVE = {"enabled": True, "min_samples": 5, "target_success": 0.8, "explore": 0.0}


def req(task_type: str = "summarisation") -> ModelRequest:
    return ModelRequest(
        model="auto", messages=[Message.user("hi")], metadata=RequestMeta(task_type=task_type, agent="a")
    )


def feed(router: Router, tier: str, ok: int, failed: int, task_type: str = "summarisation") -> None:
    for i in range(ok + failed):
        router.outcomes.record(task_type, "tiny", tier, i < ok, max_samples=router.config.adaptive.max_samples)


def test_a_tier_that_keeps_failing_is_skipped_for_that_cell() -> None:
    router = router_of(make(config({"adaptive": ADAPTIVE})))
    assert router.tier_names[router.plan(req()).tier] == "weak"
    feed(router, "weak", ok=2, failed=4)
    plan = router.plan(req())
    assert router.tier_names[plan.tier] == "base"
    assert plan.score.factors["past_outcomes"] > 0
    assert any("weak succeeded 2/6 for summarisation/tiny, below 0.8: up to base" in n for n in plan.score.notes)
    assert router.tier_names[router.plan(req("extraction")).tier] == "weak"  # other cells are untouched


def test_a_lower_tier_that_succeeds_takes_the_cell_back() -> None:
    router = router_of(make(config({"adaptive": ADAPTIVE})))
    assert router.tier_names[router.plan(req("code_generation")).tier] == "base"
    feed(router, "weak", ok=9, failed=1, task_type="code_generation")
    plan = router.plan(req("code_generation"))
    assert router.tier_names[plan.tier] == "weak" and plan.score.factors["past_outcomes"] < 0


def test_exploration_keeps_testing_the_lower_tier() -> None:
    router = router_of(make(config({"adaptive": {**ADAPTIVE, "explore": 0.5}})))
    feed(router, "weak", ok=0, failed=10)
    tiers = {router.tier_names[router.plan(req()).tier] for _ in range(50)}
    assert tiers == {"weak", "base"}


async def test_outcomes_come_from_the_runs() -> None:
    kernel = make(config({"adaptive": ADAPTIVE, "cooldown": {"failures": 100}}))  # no cooldown: weak keeps being tried
    router = router_of(kernel)
    for _ in range(5):
        kernel.provider("nano").add_error("auth")
        await run_agent(kernel, Agent(model="auto", task_type="summarisation"), "hi")
    assert router.outcomes.rate("summarisation", "tiny", "weak")[1:] == (0, 5)
    assert router.outcomes.rate("summarisation", "tiny", "base")[1:] == (5, 5)
    result = await run_agent(kernel, Agent(model="auto", task_type="summarisation"), "hi")
    assert result.models == ["mini"]
    assert router.recent[-1]["tier"] == "base" and router.recent[-1]["factors"]["past_outcomes"] > 0


def test_counts_fade_past_max_samples() -> None:
    router = router_of(make(config({"adaptive": {**ADAPTIVE, "max_samples": 10}})))
    feed(router, "weak", ok=0, failed=10)
    feed(router, "weak", ok=1, failed=0)
    assert router.outcomes.cells[("summarisation", "tiny", "weak")] == [0.5, 5.0]


async def test_state_file_keeps_stats_and_outcomes(tmp_path: Path) -> None:
    path = tmp_path / "router.json"
    kernel = make(config({"adaptive": ADAPTIVE, "state_path": str(path)}))
    await run_agent(kernel, Agent(model="auto", task_type="classification"), "hi")
    router = router_of(kernel)
    router.flush()
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["stats"]["decisions"]["weak"] == 1
    assert ["classification", "tiny", "weak", 1.0, 0.0] in data["outcomes"]
    again = router_of(make(config({"adaptive": ADAPTIVE, "state_path": str(path)})))
    assert again.stats.decisions["weak"] == 1
    assert again.outcomes.rate("classification", "tiny", "weak")[1:] == (1, 1)


def test_a_corrupt_state_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "router.json"
    path.write_text("{not json")
    kernel = make(config({"state_path": str(path)}))
    assert (
        "state_path" in kernel.plugins.infos["router"].reason
        and "delete the file" in kernel.plugins.infos["router"].reason
    )
    path.write_text('{"something": "else"}')
    assert "not a router state file" in make(config({"state_path": str(path)})).plugins.infos["router"].reason


def test_an_event_for_an_unknown_alias_is_ignored() -> None:
    router = router_of(make(config()))
    router.taskloom_event(Event(kind="model.call", data={"alias": "elsewhere", "cached": False}))
    router.taskloom_event(Event(kind="model.error", data={"alias": "elsewhere", "error": "x"}))
    assert sum(router.stats.calls.values()) == 0
