"""The scheduler: dependency-driven starts, limits, retries, timeouts, skips, failure
modes, budgets and compensation, on the scripted provider."""

from __future__ import annotations

import itertools
import time
from typing import Any

import anyio
import pytest
from taskloom.workflow import Workflow, run_workflow

from .conftest import WfTestPlugin

pytestmark = pytest.mark.anyio

TRACK = {"t": {"provider": "tracking"}}


def _wf(**kw: Any) -> Workflow:
    return Workflow("w", **kw).agent("a", model="t", limits={"max_turns": 1})


async def test_a_task_starts_as_soon_as_its_own_dependencies_finish(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    # Level 0: fast (0.05 s) and slow (0.8 s). Level 1: after_fast needs only fast.
    # Level by level, after_fast would start at 0.8 s; event-driven it starts at ~0.05 s
    # and its own dependant finishes before slow does.
    spec = (
        _wf()
        .task("fast", agent="a", prompt="sleep=0.05")
        .task("slow", agent="a", prompt="sleep=0.8")
        .task("after_fast", agent="a", prompt="sleep=0.05 {{ outputs.fast }}", needs=["fast"])
        .task("after_after", agent="a", prompt="sleep=0.05", needs=["after_fast"])
        .task("join", agent="a", prompt="sleep=0.01", needs=["slow", "after_after"])
        .build()
    )
    kernel = make_kernel(TRACK)
    t0 = time.time()
    result = await run_workflow(kernel, spec)
    assert result.status == "succeeded", result.run.error
    starts, ends = wf_plugin.times("task.start"), wf_plugin.times("task.succeed")
    assert starts["after_fast"] - t0 < 0.4, "after_fast waited for the whole level"
    assert ends["after_after"] < ends["slow"]
    assert starts["join"] >= ends["slow"]
    assert result.output("after_fast") == "done: sleep=0.05 done: sleep=0.05"


async def test_global_concurrency_limit(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    wf = _wf(max_concurrency=2)
    for i in range(6):
        wf.task(f"t{i}", agent="a", prompt=f"sleep=0.05 #{i}")
    result = await run_workflow(make_kernel(TRACK), wf.build())
    assert result.ok
    assert wf_plugin.providers["t"].peak == 2


async def test_resource_limits_and_no_deadlock(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    # Tasks take {a, b} in both orders, plus single-resource tasks: with capacity 1 each,
    # no two tasks holding "a" overlap, and the run cannot deadlock.
    wf = _wf(resources={"a": 1, "b": 1})
    for i in range(4):
        wf.task(f"ab{i}", agent="a", prompt=f"sleep=0.03 ab{i}", resources={"a": 1, "b": 1})
        wf.task(f"ba{i}", agent="a", prompt=f"sleep=0.03 ba{i}", resources={"b": 1, "a": 1})
        wf.task(f"a{i}", agent="a", prompt=f"sleep=0.03 a{i}", resources={"a": 1})
    wf.task("free", agent="a", prompt="sleep=0.03 free")
    with anyio.fail_after(10):
        result = await run_workflow(make_kernel(TRACK), wf.build())
    assert result.ok
    intervals = []
    for e in wf_plugin.events:
        if e.kind == "task.start" and e.task_id != "free":
            intervals.append((e.time, wf_plugin.times("task.succeed")[e.task_id]))
    intervals.sort()
    for (_, e1), (s2, _) in itertools.pairwise(intervals):
        assert s2 >= e1 - 0.002, "two holders of resource 'a' overlapped"
    # The free task did not wait for the resource queue.
    assert wf_plugin.times("task.succeed")["free"] < sorted(e for _, e in intervals)[2]


async def test_retries_with_backoff_then_success(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    models = {
        "m": {"provider": "scripted", "responses": [{"error": "bad_request", "message": "nope"}], "default": "fine"}
    }
    spec = Workflow("w").agent("a", model="m").task("x", agent="a", prompt="p", retries=2, backoff=0.05).build()
    t0 = time.monotonic()
    result = await run_workflow(make_kernel(models), spec)
    assert result.ok and time.monotonic() - t0 >= 0.05
    assert result.tasks["x"].attempts == 2 and result.output("x") == "fine"
    assert wf_plugin.kinds("x") == ["task.start", "task.retry", "task.succeed"]
    retry = next(e for e in wf_plugin.events if e.kind == "task.retry")
    assert retry.data["attempt"] == 1 and "nope" in retry.data["error"] and retry.data["delay_s"] == 0.05


async def test_a_task_that_fails_every_retry(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    models = {"m": {"provider": "scripted", "responses": [{"error": "bad_request", "message": "broken"}] * 3}}
    spec = Workflow("w").agent("a", model="m").task("x", agent="a", prompt="p", retries=2, backoff=0).build()
    result = await run_workflow(make_kernel(models), spec)
    assert result.status == "failed"
    x = result.tasks["x"]
    assert x.state == "failed" and x.attempts == 3
    assert "BadRequest: broken" in (x.error or "")
    assert result.run.error == f"task 'x' failed: {x.error}"
    fail = next(e for e in wf_plugin.events if e.kind == "task.fail")
    assert fail.data["error"] == x.error
    assert wf_plugin.events[-1].kind == "run.finish" and wf_plugin.events[-1].data["status"] == "failed"


async def test_timeout_per_attempt(make_kernel: Any) -> None:
    models = {"m": {"provider": "scripted", "responses": [{"hang": True}], "default": "second try"}}
    spec = (
        Workflow("w").agent("a", model="m").task("x", agent="a", prompt="p", timeout=0.2, retries=1, backoff=0).build()
    )
    t0 = time.monotonic()
    result = await run_workflow(make_kernel(models), spec)
    assert result.ok and result.output("x") == "second try" and result.tasks["x"].attempts == 2
    assert 0.2 <= time.monotonic() - t0 < 2

    models = {"m": {"provider": "scripted", "responses": [{"hang": True}]}}
    result = await run_workflow(
        make_kernel(models), Workflow("w").agent("a", model="m").task("x", agent="a", prompt="p", timeout=0.1).build()
    )
    assert result.status == "failed" and result.tasks["x"].error == "timed out after 0.1 s"


async def test_when_false_skips_and_the_skip_propagates(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    models = {"m": {"provider": "scripted", "default": '{"label": "feature"}'}}
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    spec = (
        Workflow("w")
        .agent("clf", model="m", output_schema=schema)
        .agent("a", model="m")
        .task("classify", agent="clf", prompt="classify")
        .task("fix_bug", agent="a", prompt="fix", needs=["classify"], when='outputs.classify.label == "bug"')
        .task("report", agent="a", prompt="report", needs=["fix_bug"])
        .task("plan_feature", agent="a", prompt="plan", needs=["classify"], when='outputs.classify.label == "feature"')
        .build()
    )
    result = await run_workflow(make_kernel(models), spec)
    assert result.status == "succeeded"
    assert result.output("classify") == {"label": "feature"}
    states = {k: v.state for k, v in result.tasks.items()}
    assert states == {"classify": "succeeded", "fix_bug": "skipped", "report": "skipped", "plan_feature": "succeeded"}
    assert result.tasks["fix_bug"].error == "condition 'outputs.classify.label == \"bug\"' is false"
    assert result.tasks["report"].error == "needs 'fix_bug', which was skipped"
    assert "task.skip" in wf_plugin.kinds("report")


def _branches(mode: str) -> Any:
    return (
        Workflow("w", failure_mode=mode)
        .agent("bad", model="broken")
        .agent("ok", model="t")
        .task("boom", agent="bad", prompt="x")
        .task("after_boom", agent="ok", prompt="y", needs=["boom"])
        .task("slow", agent="ok", prompt="sleep=0.4 slow")
        .task("after_slow", agent="ok", prompt="z", needs=["slow"])
        .build()
    )


MODELS = {**TRACK, "broken": {"provider": "scripted", "responses": [{"error": "bad_request", "message": "kaput"}]}}


async def test_continue_mode_finishes_independent_branches(make_kernel: Any) -> None:
    result = await run_workflow(make_kernel(MODELS), _branches("continue"))
    states = {k: v.state for k, v in result.tasks.items()}
    assert states == {"boom": "failed", "after_boom": "skipped", "slow": "succeeded", "after_slow": "succeeded"}
    assert result.status == "failed"
    assert result.tasks["after_boom"].error == "needs 'boom', which failed"


async def test_fail_fast_cancels_running_tasks(make_kernel: Any) -> None:
    t0 = time.monotonic()
    result = await run_workflow(make_kernel(MODELS), _branches("fail-fast"))
    assert time.monotonic() - t0 < 0.35
    states = {k: v.state for k, v in result.tasks.items()}
    assert states == {"boom": "failed", "after_boom": "pending", "slow": "interrupted", "after_slow": "pending"}
    assert result.status == "failed"


async def test_budget_exhausted_mid_run_keeps_finished_results(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    # Each call uses ~10 tokens; the budget of 15 is spent by the second task.
    models = {"m": {"provider": "scripted", "default": "a fairly long answer of some words"}}
    spec = (
        Workflow("w", budget_tokens=15)
        .agent("a", model="m")
        .task("one", agent="a", prompt="first")
        .task("two", agent="a", prompt="second", needs=["one"])
        .task("three", agent="a", prompt="third", needs=["two"])
        .build()
    )
    kernel = make_kernel(models)
    result = await run_workflow(kernel, spec)
    assert result.status == "budget_exceeded"
    assert result.tasks["one"].state == "succeeded" and result.output("one") == "a fairly long answer of some words"
    assert result.tasks["three"].state == "pending"
    assert "budget of 15 tokens is spent" in (result.run.error or "")
    stored = {t.task_id: t for t in await kernel.store.get_tasks(result.run_id)}
    assert stored["one"].state == "succeeded"
    run = await kernel.store.get_run(result.run_id)
    assert run is not None and run.status == "budget_exceeded" and run.usage.total_tokens >= 15


async def test_compensation_runs_in_reverse_completion_order(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    models = {
        **TRACK,
        "broken": {"provider": "scripted", "responses": [{"error": "bad_request", "message": "no room"}]},
    }
    spec = (
        Workflow("trip")
        .agent("a", model="t")
        .agent("bad", model="broken")
        .task("book_flight", agent="a", prompt="sleep=0.01 flight", compensate="cancel_flight")
        .task("book_hotel", agent="a", prompt="sleep=0.01 hotel", needs=["book_flight"], compensate="cancel_hotel")
        .task("book_car", agent="bad", prompt="car", needs=["book_hotel"])
        .task("cancel_flight", agent="a", prompt="cancel {{ outputs.book_flight }}")
        .task("cancel_hotel", agent="a", prompt="cancel {{ outputs.book_hotel }}")
        .build()
    )
    kernel = make_kernel(models)
    result = await run_workflow(kernel, spec)
    assert result.status == "failed"
    assert [c.task_id for c in result.compensations] == ["cancel_hotel@book_hotel", "cancel_flight@book_flight"]
    assert [c.compensation_of for c in result.compensations] == ["book_hotel", "book_flight"]
    assert all(c.state == "succeeded" for c in result.compensations)
    assert result.compensations[0].output == "done: cancel done: sleep=0.01 hotel"
    assert result.tasks["book_flight"].state == "compensated"
    assert "cancel_flight" not in result.tasks  # compensation-only tasks never run in the normal flow
    stored = {t.task_id: t for t in await kernel.store.get_tasks(result.run_id)}
    assert stored["cancel_hotel@book_hotel"].compensation_of == "book_hotel"
    compensate_events = [e.data["of"] for e in wf_plugin.events if e.kind == "task.compensate"]
    assert compensate_events == ["book_hotel", "book_flight"]


async def test_no_compensation_when_the_run_succeeds(make_kernel: Any) -> None:
    spec = _wf().task("x", agent="a", prompt="x", compensate="undo").task("undo", agent="a", prompt="undo").build()
    result = await run_workflow(make_kernel(TRACK), spec)
    assert result.ok and result.compensations == [] and list(result.tasks) == ["x"]


async def test_usage_totals_and_events(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    spec = _wf().task("x", agent="a", prompt="one").task("y", agent="a", prompt="two", needs=["x"]).build()
    result = await run_workflow(make_kernel(TRACK), spec)
    total = result.tasks["x"].usage.total_tokens + result.tasks["y"].usage.total_tokens
    assert total > 0 and result.usage.total_tokens == total
    assert result.cost.priced and result.cost.total == 0  # the scripted provider is free
    kinds = wf_plugin.kinds()
    assert kinds[0] == "run.start" and kinds[-1] == "run.finish"
    start = wf_plugin.events[0]
    assert start.data["workflow"] == "w" and start.data["tasks"] == 2
    succeed = next(e for e in wf_plugin.events if e.kind == "task.succeed")
    assert succeed.data["usage"].total_tokens > 0 and "cost" in succeed.data
    data = result.to_dict()
    assert data["status"] == "succeeded" and data["tasks"][0]["attempts"] == 1
    assert data["totals"]["usage"]["total_tokens"] == total


def test_run_cost_equals_the_chain_of_additions() -> None:
    # The run's cost is summed as plain Decimals (Cost.sum); it must equal, value for value
    # and digit for digit, what adding the records one after another gives, with the shared
    # zero records left out (adding Decimal(0) would change 5E+1 into 50).
    from decimal import Decimal

    from taskloom.records import TaskRecord
    from taskloom.types import Cost
    from taskloom.workflow import runner

    def rec(cost: Cost) -> TaskRecord:
        return TaskRecord(run_id="r", task_id="t", cost=cost)

    records = [
        rec(Cost(total=Decimal("5E+1"))),
        rec(runner._NO_COST),
        rec(Cost(total=Decimal("0.1000"), input=Decimal("0.05"), tools=Decimal("1E-30"))),
        rec(Cost(priced=False, source="prices")),
    ]
    cost = Cost()
    for r in records:
        if r.cost is not runner._NO_COST:
            cost = cost + r.cost
    got = Cost.sum([r.cost for r in records if r.cost is not runner._NO_COST])
    assert got == cost and got.model_fields_set == cost.model_fields_set
    assert [str(v) for v in got.__dict__.values()] == [str(v) for v in cost.__dict__.values()]
    assert got.priced is False and got.source is None
    empty = Cost.sum([])  # nothing to add: Cost(), as before
    assert empty == Cost() and empty.model_fields_set == set()


def test_usage_sum_equals_the_chain_of_additions() -> None:
    from taskloom.types import Usage

    usages = [Usage(input_tokens=3, output_tokens=4), Usage(cached_input_tokens=2, reasoning_tokens=7), Usage()]
    chain = Usage()
    for u in usages:
        chain = chain + u
    got = Usage.sum(usages)
    assert got == chain and got.model_fields_set == chain.model_fields_set
    assert (got.input_tokens, got.output_tokens, got.cached_input_tokens, got.reasoning_tokens) == (3, 4, 2, 7)
    empty = Usage.sum([])
    assert empty == Usage() and empty.model_fields_set == set()


async def test_run_usage_counts_every_attempt_and_compensation(make_kernel: Any) -> None:
    # The run's usage must equal the sum over the task records
    # (a retried task's record holds the usage of both attempts) and the compensations.
    models = {
        # The first answer is a tool call: with one turn allowed the attempt stops at
        # max_turns, having used tokens; the retry gets the default answer.
        "m": {"provider": "scripted", "responses": [{"tool": "nope", "arguments": {}}], "default": "fine"},
        "broken": {"provider": "scripted", "responses": [{"error": "bad_request", "message": "broken"}]},
    }
    spec = (
        Workflow("w", failure_mode="continue")
        .agent("a", model="m", limits={"max_turns": 1})
        .agent("b", model="broken")
        .task("flaky", agent="a", prompt="p", retries=1, backoff=0)
        .task("ok", agent="a", prompt="q", needs=["flaky"], compensate="undo")
        .task("bad", agent="b", prompt="r", needs=["ok"])
        .task("undo", agent="a", prompt="undo it")
        .build()
    )
    result = await run_workflow(make_kernel(models), spec)
    assert result.status == "failed" and result.tasks["bad"].state == "failed"
    flaky = result.tasks["flaky"]
    assert flaky.attempts == 2 and flaky.state == "succeeded"
    assert flaky.usage.output_tokens > result.tasks["ok"].usage.output_tokens  # two answers counted
    assert result.compensations and result.compensations[0].usage.total_tokens > 0
    records = [*result.tasks.values(), *result.compensations]
    for field in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
        assert getattr(result.usage, field) == sum(getattr(r.usage, field) for r in records), field
    assert result.usage.model_fields_set == {"input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"}


@pytest.mark.parametrize("tally_misses_it", [False, True])
async def test_an_internal_error_keeps_the_usage_of_every_record(
    make_kernel: Any, monkeypatch: pytest.MonkeyPatch, tally_misses_it: bool
) -> None:
    # Final records are added up as they end. A run stopped by an internal error records
    # the running task as interrupted, with its attempt's usage, and the run's totals hold
    # it; a record the tally missed (left running by a bug) is added at the end instead.
    from taskloom.workflow import runner

    real_settle, real_count, real_finish = runner._Engine._settle, runner._Engine._count, runner._Engine._finish
    captured: list[Any] = []

    async def broken_settle(self: Any, i: int, record: Any, outcome: Any) -> None:
        if record.task_id == "second":
            raise RuntimeError("engine bug")
        await real_settle(self, i, record, outcome)

    def count(self: Any, i: int, record: Any) -> None:
        if not (tally_misses_it and record.task_id == "second"):
            real_count(self, i, record)

    async def keep(self: Any, status: Any) -> Any:
        captured.append(await real_finish(self, status))
        return captured[-1]

    monkeypatch.setattr(runner._Engine, "_settle", broken_settle)
    monkeypatch.setattr(runner._Engine, "_count", count)
    monkeypatch.setattr(runner._Engine, "_finish", keep)
    models = {"m": {"provider": "scripted", "default": "an answer of a few tokens"}}
    spec = (
        Workflow("w")
        .agent("a", model="m")
        .task("first", agent="a", prompt="p")
        .task("second", agent="a", prompt="q", needs=["first"])
        .build()
    )
    with pytest.raises(RuntimeError, match="engine bug"):
        await run_workflow(make_kernel(models), spec)
    (result,) = captured
    assert result.status == "failed" and "internal error: RuntimeError: engine bug" in (result.run.error or "")
    first, second = result.tasks["first"], result.tasks["second"]
    assert second.state == "interrupted" and second.usage.total_tokens > 0 and first.usage.total_tokens > 0
    assert result.usage.total_tokens == first.usage.total_tokens + second.usage.total_tokens
