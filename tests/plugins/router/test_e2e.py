"""End to end: a small workflow of ``model = "auto"`` agents runs through the router."""

from __future__ import annotations

from decimal import Decimal

import pytest
from taskloom import Agent, run_agent
from taskloom.types import RequestMeta
from taskloom_router import router_of, run_escalating

from .conftest import Recorder, config, make

pytestmark = pytest.mark.anyio


async def test_a_lead_agent_delegates_and_each_call_is_routed(recorder: Recorder) -> None:
    # The lead declares no task type: a delegate inherits its parent's metadata.task_type in
    # the kernel's agent loop, so the writer's own "summarisation" is only seen when the lead
    # sets none. Default 4 + tools 1 = 5 puts the lead on strong with these bounds.
    tiers = [
        {"name": "weak", "deployments": ["nano"], "max_score": 3.5},
        {"name": "base", "deployments": ["mini"], "max_score": 4.5},
        {"name": "strong", "deployments": ["big"]},
    ]
    kernel = make(config({"tiers": tiers}), recorder)
    # the strong tier (the lead's planning) first delegates to the writer, then answers
    kernel.provider("big").add_tool_call("writer", {"task": "Summarise the findings"})
    kernel.provider("big").add_text("Plan ready; summary attached.")
    kernel.provider("nano").add_error("auth", message="nano key revoked")  # the writer's first call escalates
    writer = Agent(name="writer", model="auto", task_type="summarisation")
    lead = Agent(name="lead", model="auto", delegates=[writer])
    result = await run_agent(kernel, lead, "Plan the migration", meta=RequestMeta(run_id="run-1", task_id="plan"))
    assert result.ok and result.text == "Plan ready; summary attached."
    assert result.tool_calls[0].result == "mini: Summarise the findings"
    routes = [(e.agent, e.data["route"]["tier"], e.data["chain"]) for e in recorder.of("model.route")]
    assert routes == [("lead", "strong", ["big"]), ("writer", "weak", ["nano", "mini"]), ("lead", "strong", ["big"])]
    calls = [(e.agent, e.data["alias"]) for e in recorder.of("model.call")]
    assert calls == [("lead", "big"), ("writer", "mini"), ("lead", "big")]
    router = router_of(kernel)
    assert router.stats.decisions == {"strong": 2, "weak": 1}
    assert router.stats.escalations == {"fallback": 1}
    assert router.stats.cost > 0 and router.stats.cost_if_top > router.stats.cost
    assert all(d.in_flight == 0 for tier in router.tiers for d in tier)
    # the routing event carries the factor breakdown
    first = recorder.of("model.route")[0].data["route"]
    assert set(first["factors"]) == {"task_type", "prompt_tokens", "tools", "structured_output", "conversation"}
    assert first["factors"]["tools"] == 1.0


async def test_many_tasks_share_the_router(recorder: Recorder) -> None:
    kernel = make(config(), recorder)
    kinds = ["classification", "extraction", "code_generation", "planning", "multi_step_reasoning"]
    runs = [
        await run_escalating(kernel, Agent(name=f"a{i}", model="auto", task_type=k), f"task {i}")
        for i, k in enumerate(kinds * 4)
    ]
    assert all(r.result.ok for r in runs)
    stats = router_of(kernel).stats_dict()
    assert stats["decisions"] == {"weak": 8, "base": 8, "strong": 4}
    # the saving is what the calls cost against the same usage at the top tier's price
    calls = recorder.of("model.call")
    assert [e.data["alias"] for e in calls].count("big") == 4
    cost = sum((e.data["cost"].total for e in calls), Decimal(0))
    on_top = sum(
        (
            Decimal(u.input_tokens) * 2 / 10**6 + Decimal(u.output_tokens) * 8 / 10**6
            for u in (e.data["usage"] for e in calls)
        ),
        Decimal(0),
    )
    assert Decimal(stats["cost_usd"]) == cost and Decimal(stats["cost_if_top_tier_usd"]) == on_top
    expected = float(round((1 - cost / on_top) * 100, 1))
    assert stats["saving_pct"] == expected
    # 8 calls at 1/20 of the top price, 8 at 1/5 and 4 at full price: (0.4 + 1.6 + 4) / 20 of the
    # top-tier cost if the calls were of one size, a 70% saving; theirs differ by a few tokens
    assert expected == pytest.approx(70.0, abs=3.0)
