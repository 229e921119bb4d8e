"""Escalation: terminal failures, invalid output and 'could not do it' move up a tier, bounded."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from taskloom import Agent, Message, ModelRequest, run_agent
from taskloom.types import RequestMeta
from taskloom_router import EscalationExhausted, router_of, run_escalating

from .conftest import Recorder, config, make

pytestmark = pytest.mark.anyio


class Label(BaseModel):
    label: str


async def test_a_terminal_failure_on_weak_is_answered_by_the_next_tier(recorder: Recorder) -> None:
    kernel = make(config(), recorder)
    kernel.provider("nano").add_error("auth", message="nano key revoked")
    result = await run_agent(kernel, Agent(model="auto", task_type="classification"), "label this")
    assert result.ok and result.text == "mini: label this" and result.models == ["mini"]
    router = router_of(kernel)
    assert router.stats.escalations["fallback"] == 1
    assert [e.data["alias"] for e in recorder.of("model.fallback")] == ["mini"]
    assert router.outcomes.rate("classification", "tiny", "weak")[2] == 1  # the failure is recorded
    assert recorder.of("model.route")[0].data["route"]["chain"] == ["nano", "mini"]


async def test_the_chain_is_bounded_by_max_tiers() -> None:
    kernel = make(config({"escalation": {"max_tiers": 0}}))
    kernel.provider("nano").add_error("auth")
    result = await run_agent(kernel, Agent(model="auto", task_type="classification"), "x")
    assert result.stop_reason == "error" and "AuthenticationError" in result.detail


async def test_invalid_output_repair_goes_one_tier_up(recorder: Recorder) -> None:
    kernel = make(config(), recorder)
    kernel.provider("nano").add_text("not json at all")
    kernel.provider("mini").add_text('{"label": "spam"}')
    agent = Agent(model="auto", task_type="classification", output_type=Label)
    result = await run_agent(kernel, agent, "classify")
    assert result.ok and result.output == Label(label="spam")
    assert result.models == ["nano", "mini"]
    router = router_of(kernel)
    assert router.stats.escalations["invalid_output"] == 1
    route = recorder.of("model.route")[-1].data["route"]
    assert route["escalation"] == "invalid_output" and route["tier"] == "base"
    ok, total = router.outcomes.rate("classification", "tiny", "weak")[1:]
    assert (ok, total) == (0, 1)  # the weak call counted as a failure once its output was invalid


async def test_repairs_escalate_at_most_max_retries_times() -> None:
    kernel = make(config({"escalation": {"max_retries": 1}}))
    for alias in ("nano", "mini", "big"):
        for _ in range(3):
            kernel.provider(alias).add_text("nope")
    agent = Agent(model="auto", task_type="classification", output_type=Label)
    result = await run_agent(kernel, agent, "classify")
    assert result.stop_reason == "invalid_output"
    assert result.models == ["nano", "mini", "mini"]


async def test_could_not_do_it_reruns_on_the_next_tier() -> None:
    kernel = make(config())
    kernel.provider("nano").add_text("I'm sorry, I cannot complete this task.")
    run = await run_escalating(kernel, Agent(model="auto", task_type="summarisation"), "summarise the report")
    assert run.result.ok and run.result.text == "mini: summarise the report"
    assert [(a.tier, a.failure) for a in run.attempts] == [("weak", "refusal"), ("base", None)]
    assert run.escalations == 1
    assert router_of(kernel).stats.escalations["refusal"] == 1


async def test_a_failed_run_escalates_up_to_the_top_and_stops() -> None:
    kernel = make(config({"escalation": {"max_tiers": 0}}))
    for alias in ("nano", "mini", "big"):
        kernel.provider(alias).add_error("auth", message=f"{alias} down")
    run = await run_escalating(kernel, Agent(model="auto", task_type="classification"), "x")
    assert [(a.tier, a.failure) for a in run.attempts] == [("weak", "error"), ("base", "error"), ("strong", "error")]
    assert "strong" in run.result.detail or "big down" in run.result.detail
    kernel = make(config({"escalation": {"max_tiers": 0}}))
    kernel.provider("nano").add_text("UNABLE")
    kernel.provider("mini").add_text("UNABLE")
    kernel.provider("big").add_text("UNABLE")
    run = await run_escalating(kernel, Agent(model="auto", task_type="classification"), "x")
    assert [a.tier for a in run.attempts] == ["weak", "base", "strong"]
    assert run.result.text == "UNABLE" and run.escalations == 2


async def test_custom_failure_judge() -> None:
    kernel = make(config())
    run = await run_escalating(
        kernel,
        Agent(model="auto", task_type="extraction"),
        "x",
        failed=lambda r: "wrong" if r.text.startswith("nano") else None,
    )
    assert [a.tier for a in run.attempts] == ["weak", "base"]


def test_escalate_api_and_its_bound() -> None:
    router = router_of(make(config()))
    request = ModelRequest(
        model="auto", messages=[Message.user("hi")], metadata=RequestMeta(task_type="classification", agent="a")
    )
    assert router.decide(request) == ["nano", "mini"]
    assert router.escalate(request, "manual") == "base"
    assert router.decide(request)[0] == "mini"
    assert request.metadata.route["escalation"] == "manual"  # type: ignore[attr-defined]
    assert router.escalate(request) == "strong"
    assert router.decide(request) == ["big"]
    with pytest.raises(EscalationExhausted, match="strong is the top tier"):
        router.escalate(request)
    fresh = ModelRequest(model="auto", messages=[Message.user("hi")])
    with pytest.raises(EscalationExhausted, match="never routed"):
        router.escalate(fresh)
    assert router.stats.escalations["manual"] == 2
