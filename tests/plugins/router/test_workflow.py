"""Workflows of ``model = "auto"`` agents through the router: end to end from a TOML file
through ``taskloom run``, a run's budget, and escalation when the engine retries a task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from taskloom.errors import PolicyDenied
from taskloom.types import Action, Message, ModelRequest, RequestMeta
from taskloom.workflow import Workflow, run_workflow
from taskloom_router import router_of

from .conftest import MODELS, Recorder, config, make

pytestmark = pytest.mark.anyio

PRICES = {alias: (Decimal(str(m["price"]["input"])), Decimal(str(m["price"]["output"]))) for alias, m in MODELS.items()}
MILLION = Decimal(1_000_000)

SETTINGS = """
[taskloom]
plugins = ["router", "scripted", "prices", "memory-store", "local-executor", "jsonl"]
store = "memory"
cache = "none"

[plugins.jsonl]
path = "{events}"

[models.nano]
provider = "scripted"
model = "gpt-4.1-nano"
default = "nano: {prompt}"
price = { input = 0.10, output = 0.40 }

[models.mini]
provider = "scripted"
model = "gpt-4.1-mini"
default = "mini: {prompt}"
price = { input = 0.40, output = 1.60 }

[models.big]
provider = "scripted"
model = "gpt-4.1"
default = "big: {prompt}"
price = { input = 2.00, output = 8.00 }

[plugins.router]
state_path = "{state}"
seed = 7
tiers = [
  { name = "weak", deployments = ["nano"] },
  { name = "base", deployments = ["mini"] },
  { name = "strong", deployments = ["big"] },
]
"""

WORKFLOW = """
[workflow]
name = "ticket"
inputs = { ticket = "The export button crashes the app" }

[agents.labeller]
model = "auto"
task_type = "classification"

[agents.coder]
model = "auto"
task_type = "code_generation"

[agents.planner]
model = "auto"
task_type = "multi_step_reasoning"

[[tasks]]
id = "label"
agent = "labeller"
prompt = "Label this ticket: {{ inputs.ticket }}"

[[tasks]]
id = "fix"
agent = "coder"
prompt = "Write the fix for: {{ inputs.ticket }}"
needs = ["label"]

[[tasks]]
id = "plan"
agent = "planner"
prompt = "Plan the release of the fix"
needs = ["fix"]
"""


def taskloom(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": os.environ.get("TIKTOKEN_CACHE_DIR", "/work/shared/tiktoken")}
    return subprocess.run(
        [sys.executable, "-m", "taskloom", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def price(alias: str, usage: dict[str, int]) -> Decimal:
    inp, out = PRICES[alias]
    return (usage["input_tokens"] * inp + usage["output_tokens"] * out) / MILLION


def test_a_toml_workflow_of_auto_agents_runs_through_the_router(tmp_path: Path) -> None:
    events_path, state_path = tmp_path / "events.jsonl", tmp_path / "router.json"
    cfg = tmp_path / "taskloom.toml"
    cfg.write_text(SETTINGS.replace("{events}", str(events_path)).replace("{state}", str(state_path)))
    wf = tmp_path / "ticket.toml"
    wf.write_text(WORKFLOW)

    done = taskloom(cfg, "run", str(wf), "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    run = json.loads(done.stdout)
    assert run["status"] == "succeeded"
    outputs = {t["id"]: t["output"] for t in run["tasks"]}
    assert outputs == {
        "label": "nano: Label this ticket: The export button crashes the app",
        "fix": "mini: Write the fix for: The export button crashes the app",
        "plan": "big: Plan the release of the fix",
    }

    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    routes = {e["task_id"]: e["data"]["route"] for e in events if e["kind"] == "model.route"}
    assert {t: (r["task_type"], r["tier"], r["chain"]) for t, r in routes.items()} == {
        "label": ("classification", "weak", ["nano", "mini"]),
        "fix": ("code_generation", "base", ["mini", "big"]),
        "plan": ("multi_step_reasoning", "strong", ["big"]),
    }
    for r in routes.values():  # every decision carries its factor breakdown, summing to its score
        assert set(r["factors"]) == {"task_type", "prompt_tokens", "tools", "structured_output", "conversation"}
        assert sum(r["factors"].values()) == pytest.approx(r["score"])
    assert [routes[t]["factors"]["task_type"] for t in ("label", "fix", "plan")] == [2.0, 6.0, 8.0]

    # the run's cost is each call's usage at its deployment's price, and so is the router's saving
    calls = [e for e in events if e["kind"] == "model.call"]
    assert [(c["task_id"], c["data"]["alias"]) for c in calls] == [("label", "nano"), ("fix", "mini"), ("plan", "big")]
    expected = sum((price(c["data"]["alias"], c["data"]["usage"]) for c in calls), Decimal(0))
    assert Decimal(run["totals"]["cost"]["total_usd"]) == expected > 0
    on_top = sum((price("big", c["data"]["usage"]) for c in calls), Decimal(0))

    stats = taskloom(cfg, "router", "stats", "--json")  # a new process: the stats come from state_path
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert data["decisions"] == {"weak": 1, "base": 1, "strong": 1}
    assert Decimal(data["cost_usd"]) == expected and Decimal(data["cost_if_top_tier_usd"]) == on_top
    assert data["saving_pct"] == pytest.approx(float((1 - expected / on_top) * 100), abs=0.05)


# ---------------------------------------------------------------------------- budget

# The agent loop fills RequestMeta.budget_remaining_usd from the run's Budget on every turn.

LONG = "word " * 600  # about 760 prompt tokens: +0.5 for size, so multi_step_reasoning scores 8.5 (strong)


def echo_models() -> dict[str, dict[str, Any]]:
    """Deployments that answer with the prompt, so a call's output costs as much as its input."""
    return {alias: {**m, "default": "{prompt}"} for alias, m in MODELS.items()}


async def test_a_workflow_budget_steps_down_when_tight(recorder: Recorder) -> None:
    kernel = make(config(models=echo_models()), recorder)
    # big: ~$0.0031 estimated a call (760 prompt + 200 output tokens), ~$0.0076 spent (the echo)
    spec = (
        Workflow("think", budget_usd="0.016")
        .agent("thinker", model="auto", task_type="multi_step_reasoning", max_tokens=200)
        .task("first", agent="thinker", prompt=LONG)
        .task("second", agent="thinker", prompt=LONG, needs="first")
        .build()
    )
    result = await run_workflow(kernel, spec)
    assert result.status == "succeeded", result.run.error
    routes = {e.task_id: e.data["route"] for e in recorder.of("model.route")}
    first, second = routes["first"], routes["second"]
    assert first["tier"] == "strong" and first["budget_remaining_usd"] == pytest.approx(0.016)
    # after the first call less than 4 big calls' worth is left: the second steps down
    assert second["scored_tier"] == "strong" and second["tier"] == "base"
    assert second["budget_remaining_usd"] == pytest.approx(0.016 - float(result.tasks["first"].cost.total))
    assert any("stepped down to base" in note for note in second["reasons"])
    assert router_of(kernel).stats.step_downs == 1
    assert result.cost.total < Decimal("0.016")


async def test_a_call_that_would_break_the_workflow_budget_is_denied(recorder: Recorder) -> None:
    kernel = make(config(), recorder)
    spec = (
        Workflow("huge", budget_usd="0.001")
        .agent("reader", model="auto", task_type="summarisation", max_tokens=400)
        .task("read", agent="reader", prompt="word " * 8000, retries=2, backoff=0)
        .build()
    )
    result = await run_workflow(kernel, spec)
    assert result.status == "failed"
    task = result.tasks["read"]
    assert task.attempts == 1  # a denial is not retried
    assert "denied by router: the cheapest call in any tier would cost about $0.00" in (task.error or "")
    assert "the run has $0.001000 left" in (task.error or "")
    assert recorder.of("model.call") == [] and result.cost.total == 0


async def test_typed_budget_fields_are_read_as_well_as_extras() -> None:
    """Stand-in for the kernel's typed RequestMeta fields (named as such): a subclass that
    declares them, so the router must read fields, not only extra keys."""

    class TypedMeta(RequestMeta):
        budget_remaining_usd: Decimal | None = None
        budget_remaining_tokens: int | None = None

    kernel = make(config())
    router = router_of(kernel)

    def request(meta: RequestMeta, text: str = "hi") -> ModelRequest:
        return ModelRequest(model="auto", messages=[Message.user(text)], max_tokens=1000, metadata=meta)

    typed = request(TypedMeta(task_type="code_generation", budget_remaining_usd=Decimal("0.004")))
    assert router.decide(typed)[0] == "nano"  # base (~$0.0016) is over a quarter of $0.004: stepped down
    assert typed.metadata.route["budget_remaining_usd"] == pytest.approx(0.004)  # type: ignore[attr-defined]
    check = kernel.check  # the policies, as the gateway asks them

    with pytest.raises(PolicyDenied, match="the run's token budget is used up"):
        req = request(TypedMeta(budget_remaining_tokens=0))
        check(Action(kind="model_call", request=req, metadata=req.metadata))
    with pytest.raises(
        PolicyDenied, match=r"needs about \d+ tokens \(\d+ prompt \+ 1000 max output\).* 500 tokens left"
    ):
        req = request(TypedMeta(budget_remaining_tokens=500))
        check(Action(kind="model_call", request=req, metadata=req.metadata))
    fixed = request(TypedMeta(budget_remaining_tokens=500))
    fixed.model = "big"
    with pytest.raises(PolicyDenied, match="500 tokens left"):
        check(Action(kind="model_call", request=fixed, metadata=fixed.metadata))
    ok = request(TypedMeta(budget_remaining_tokens=5000))
    check(Action(kind="model_call", request=ok, metadata=ok.metadata))  # fits: allowed


# ---------------------------------------------------------------------------- escalation on retries

LABEL = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}


def labelling(retries: int) -> Workflow:
    return (
        Workflow("label")
        .agent(
            "labeller",
            model="auto",
            task_type="classification",
            output_schema=LABEL,
            limits={"output_retries": 0},  # no repair inside the run: the engine's retry is what escalates
        )
        .task("label", agent="labeller", prompt="Label this ticket", retries=retries, backoff=0)
    )


async def test_a_retried_task_goes_one_tier_up(recorder: Recorder) -> None:
    kernel = make(config(), recorder)
    kernel.provider("nano").add_text("I'm sorry, I cannot complete this task.")  # refuses: not valid JSON
    kernel.provider("mini").add_text('{"label": "bug"}')
    result = await run_workflow(kernel, labelling(retries=2).build())
    assert result.status == "succeeded", result.run.error
    task = result.tasks["label"]
    assert task.attempts == 2 and task.output == {"label": "bug"}
    routes = [e.data["route"] for e in recorder.of("model.route")]
    assert [(r["tier"], r["escalation"], r["attempt"]) for r in routes] == [
        ("weak", None, None),  # "attempt" is only set on the first call of a retried attempt
        ("base", "invalid_output", 2),
    ]
    assert any("task attempt 2: escalated from weak (invalid_output)" in n for n in routes[1]["reasons"])
    assert [e.data["alias"] for e in recorder.of("model.call")] == ["nano", "mini"]
    router = router_of(kernel)
    assert router.stats.escalations["invalid_output"] == 1
    assert router.outcomes.rate("classification", "tiny", "weak")[1:] == (0, 1)  # the refusal counts as a failure
    assert router.outcomes.rate("classification", "tiny", "base")[1:] == (1, 1)


async def test_retry_escalation_is_bounded_by_max_retries(recorder: Recorder) -> None:
    kernel = make(config({"escalation": {"max_retries": 1}}), recorder)
    kernel.provider("nano").add_text("UNABLE")
    for _ in range(3):
        kernel.provider("mini").add_text("UNABLE")
    kernel.provider("big").add_text('{"label": "never asked"}')
    result = await run_workflow(kernel, labelling(retries=3).build())
    assert result.status == "failed" and result.tasks["label"].attempts == 4
    assert "invalid_output" in (result.tasks["label"].error or "")
    assert [e.data["route"]["tier"] for e in recorder.of("model.route")] == ["weak", "base", "base", "base"]
    assert "big" not in [e.data["alias"] for e in recorder.of("model.call")]
    assert router_of(kernel).stats.escalations == {"invalid_output": 1}


def retry_request(attempt: int, reason: str | None, task_id: str = "t1") -> ModelRequest:
    meta = RequestMeta(task_type="classification", run_id="r", task_id=task_id, agent="labeller", attempt=attempt)
    if reason is not None:
        meta.escalation_reason = reason  # type: ignore[attr-defined]
    return ModelRequest(model="auto", messages=[Message.user("hi")], metadata=meta)


def test_attempt_metadata_from_the_engine_escalates_without_earlier_state() -> None:
    # a remote executor's router never saw attempt 1: it goes attempt - 1 tiers up, bounded
    router = router_of(make(config({"escalation": {"max_retries": 1}})))
    assert router.decide(retry_request(1, None))[0] == "nano"
    assert router.decide(retry_request(2, "error", task_id="t2"))[0] == "mini"
    assert router.decide(retry_request(3, "error", task_id="t3"))[0] == "mini"  # bound: one tier
    router = router_of(make(config({"escalation": {"max_retries": 2}})))
    assert router.decide(retry_request(3, "invalid_output"))[0] == "big"
    assert router.stats.escalations == {"invalid_output": 1}


def test_retries_for_limits_and_timeouts_do_not_escalate() -> None:
    router = router_of(make(config()))
    assert router.decide(retry_request(1, None)) == ["nano", "mini"]
    for n, reason in enumerate(("timeout", "max_turns", "budget", "denied"), start=2):
        plan = router.plan(retry_request(n, reason))
        assert router.tier_names[plan.tier] == "weak" and plan.escalation is None, reason
        router.decide(retry_request(n, reason))
    assert router.decide(retry_request(6, "error"))[0] == "mini"
    assert router.decide(retry_request(6, "error"))[0] == "mini"  # later calls of that attempt stay up
    assert router.stats.escalations == {"error": 1}


async def test_outcomes_are_learned_from_the_run_store(tmp_path: Path) -> None:
    """Adaptive mode learns from the records a (SQLite) run store keeps, in a new process."""
    settings: dict[str, Any] = config({"adaptive": {"enabled": True, "min_samples": 3, "explore": 0.0}})
    settings["taskloom"]["plugins"] = ["router", "scripted", "prices", "sqlite", "local-executor"]
    settings["taskloom"]["store"] = "sqlite"
    settings["plugins"]["sqlite"] = {"store_path": str(tmp_path / "runs.sqlite"), "record_events": False}
    kernel = make(settings)
    for i in range(3):
        kernel.provider("nano").add_text("UNABLE")
        kernel.provider("mini").add_text('{"label": "bug"}')
        result = await run_workflow(kernel, labelling(retries=1).build(), run_id=f"run-{i}")
        assert result.status == "succeeded"
    await kernel.aclose()

    fresh = make(settings)  # a new router: nothing learned from events
    router = router_of(fresh)
    assert router.outcomes.cells == {}
    assert router.tier_names[router.plan(retry_request(1, None)).tier] == "weak"
    assert await router.learn_from_store(fresh.store) == (3, 6)
    assert router.outcomes.rate("classification", "tiny", "weak")[1:] == (0, 3)
    assert router.outcomes.rate("classification", "tiny", "base")[1:] == (3, 3)
    plan = router.plan(retry_request(1, None))
    assert router.tier_names[plan.tier] == "base" and plan.score.factors["past_outcomes"] > 0
    assert await router.learn_from_store(fresh.store) == (0, 0)  # each run is learned once
    await fresh.aclose()


async def test_store_learning_skips_runs_seen_through_events_and_caches_in_state_path(tmp_path: Path) -> None:
    state = tmp_path / "router.json"
    kernel = make(config({"state_path": str(state)}))
    kernel.provider("nano").add_text("UNABLE")
    kernel.provider("mini").add_text('{"label": "bug"}')
    result = await run_workflow(kernel, labelling(retries=1).build(), run_id="seen")
    assert result.status == "succeeded"
    router = router_of(kernel)
    before = dict(router.outcomes.cells)
    assert await router.learn_from_store(kernel.store) == (0, 0)  # this router counted the run from its events
    assert router.outcomes.cells == before
    # a run recorded by another process (written straight into the store's ledger here)
    await kernel.store.create_run(result.run.model_copy(update={"id": "elsewhere"}))
    for record in result.tasks.values():
        await kernel.store.save_task(record.model_copy(update={"run_id": "elsewhere"}))
    for call in await kernel.store.get_calls("seen"):
        await kernel.store.record_call(call.model_copy(update={"run_id": "elsewhere"}))
    assert await router.learn_from_store(kernel.store) == (1, 2)
    assert router.outcomes.rate("classification", "tiny", "weak")[1:] == (0, 2)
    cached = json.loads(state.read_text())
    assert cached["learned_runs"] == ["seen", "elsewhere"]
    again = router_of(make(config({"state_path": str(state)})))  # the cache says both runs are counted
    assert again.learned_runs.keys() == {"seen", "elsewhere"}
    assert again.outcomes.rate("classification", "tiny", "weak")[1:] == (0, 2)


async def test_failed_calls_in_the_ledger_count_as_failures_of_their_tier() -> None:
    kernel = make(config({"escalation": {"max_tiers": 0}}))  # no fallback: the failure ends the attempt
    kernel.provider("nano").add_error("auth", message="nano key revoked")
    kernel.provider("mini").add_text('{"label": "bug"}')
    result = await run_workflow(kernel, labelling(retries=1).build(), run_id="failing")
    assert result.status == "succeeded" and result.tasks["label"].attempts == 2
    calls = await kernel.store.get_calls("failing")
    assert [(c.alias, c.error is not None) for c in calls] == [("nano", True), ("mini", False)]
    fresh = router_of(make(config()))
    assert await fresh.learn_from_store(kernel.store) == (1, 2)
    assert fresh.outcomes.rate("classification", "tiny", "weak")[1:] == (0, 1)  # the failed call
    assert fresh.outcomes.rate("classification", "tiny", "base")[1:] == (1, 1)
