"""Budget-aware routing: step down when tight, never plan a call that breaks the budget."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from taskloom import Agent, Budget, Message, ModelRequest, run_agent
from taskloom.errors import PolicyDenied
from taskloom.types import RequestMeta
from taskloom_router import router_of, run_escalating

from .conftest import MODELS, Recorder, config, make

pytestmark = pytest.mark.anyio


def req(task_type: str = "code_generation", max_tokens: int = 1000, **extra: Any) -> ModelRequest:
    return ModelRequest(
        model="auto",
        messages=[Message.user("hi")],
        max_tokens=max_tokens,
        metadata=RequestMeta(task_type=task_type, **extra),
    )


def test_estimates_use_prices_and_max_tokens() -> None:
    router = router_of(make(config()))
    plan = router.plan(req())
    assert router.tier_names[plan.tier] == "base"
    tokens = plan.score.prompt_tokens
    assert plan.estimate == pytest.approx(tokens * 0.4e-6 + 1000 * 1.6e-6)


def test_tight_budget_steps_down_a_tier() -> None:
    router = router_of(make(config()))
    r = req(budget_remaining_usd=0.004)  # base would take ~0.0016, over 25% of what is left
    chain = router.decide(r)
    assert chain == ["nano", "mini"]  # weak, with base as its escalation (it still fits the hard limit)
    route = r.metadata.route  # type: ignore[attr-defined]
    assert route["scored_tier"] == "base" and route["tier"] == "weak"
    assert any("stepped down to weak" in note for note in route["reasons"])
    assert router.stats.step_downs == 1
    assert router.decide(req(budget_remaining_usd=1.0)) == ["mini", "big"]  # plenty: no step-down


def test_escalation_tiers_that_break_the_budget_are_left_out() -> None:
    router = router_of(make(config()))
    plan = router.plan(req(budget_remaining_usd=0.005))
    assert [d.alias for d in plan.chain] == ["nano", "mini"]
    plan = router.plan(req(task_type="planning", budget_remaining_usd=0.0012))
    assert [d.alias for d in plan.chain] == ["nano"]
    assert plan.skipped["base/mini"].startswith("over budget (about $0.0016")


async def test_policy_denies_a_call_no_tier_can_afford() -> None:
    kernel = make(config())
    with pytest.raises(PolicyDenied) as info:
        await kernel.gateway.complete(req(budget_remaining_usd=0.0003))
    assert info.value.plugin == "router"
    assert "the cheapest call in any tier would cost about $0.0004" in info.value.reason
    assert "the run has $0.000300 left" in info.value.reason


async def test_fixed_model_over_budget_is_denied_too() -> None:
    kernel = make(config())
    request = req(budget_remaining_usd=0.001)
    request.model = "big"
    with pytest.raises(PolicyDenied, match=r"a call to big would cost about \$0.008"):
        await kernel.gateway.complete(request)


@pytest.mark.parametrize("key", ["budget_usd", "budget_remaining_usd"])
async def test_a_budget_of_zero_denies_every_call(key: str) -> None:
    kernel = make(config())
    result = await run_agent(kernel, Agent(model="auto"), "hi", meta=RequestMeta(**{key: 0}))
    assert result.stop_reason == "denied"
    assert "denied by router: the run's budget is used up ($0.000000 left)" in result.detail


async def test_budget_zero_through_the_helper_stops_before_any_call() -> None:
    kernel = make(config())
    run = await run_escalating(kernel, Agent(model="auto"), "hi", budget=Budget(usd=0))
    assert run.result.stop_reason == "budget" and run.result.requests == 0 and run.escalations == 0


async def test_a_non_numeric_budget_is_denied_with_the_reason() -> None:
    kernel = make(config())
    result = await run_agent(kernel, Agent(model="auto"), "hi", meta=RequestMeta(budget_usd="lots"))
    assert result.stop_reason == "denied" and "budget_usd must be a number of US dollars, found 'lots'" in result.detail


async def test_budget_usd_is_tracked_against_what_the_run_spends(recorder: Recorder) -> None:
    # answers short of max_tokens, as a real provider keeps them (the scripted one would echo the prompt)
    models = {alias: {**m, "default": f"{alias} answers"} for alias, m in MODELS.items()}
    kernel = make(config(models=models), recorder)
    router = router_of(kernel)
    long = "word " * 3000  # ~3,000 tokens: big costs ~$0.0092 a call, nano ~$0.0005
    meta = RequestMeta(run_id="r1", budget_usd=0.05)
    agent = Agent(model="auto", task_type="multi_step_reasoning", max_tokens=400)
    first = await run_agent(kernel, agent, long, meta=meta)
    assert first.models == ["big"]
    spent = router.spent["r1"]
    assert spent == first.cost.total > 0
    assert router.remaining(meta) == pytest.approx(0.05 - float(spent))
    for _ in range(3):
        await run_agent(kernel, agent, long, meta=meta)
    # now less than 4 big calls remain: a big call would take over a quarter of it
    last = await run_agent(kernel, agent, long, meta=meta)
    assert last.models[0] != "big"
    route = [e for e in recorder.of("model.route")][-1].data["route"]
    assert any("stepped down" in note for note in route["reasons"])
    assert router.spent["r1"] < Decimal("0.05")


def test_the_budget_policy_is_asked_about_model_calls_only(recorder: Recorder) -> None:
    kernel = make(config(), recorder)
    # Tool calls, delegations and runs are allowed without being shown to the router.
    assert kernel.checked == frozenset({"model_call"})
