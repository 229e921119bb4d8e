"""Checkpoints and resume, in process: a failed run, a run cancelled mid-way, and the
errors for runs that cannot be resumed."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
from taskloom.workflow import RunNotResumable, Workflow, resume_workflow, run_workflow

from .conftest import WfTestPlugin

pytestmark = pytest.mark.anyio


def _completions(plugin: WfTestPlugin) -> Counter[str]:
    return Counter(e.task_id or "" for e in plugin.events if e.kind == "task.succeed")


async def test_resume_reruns_only_what_did_not_succeed(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    models = {
        "t": {"provider": "tracking"},
        "flaky": {
            "provider": "scripted",
            "responses": [{"error": "bad_request", "message": "first time fails"}],
            "default": "fixed",
        },
    }
    spec = (
        Workflow("w", failure_mode="continue")
        .agent("a", model="t")
        .agent("f", model="flaky")
        .task("root", agent="a", prompt="root")
        .task("side", agent="a", prompt="side", needs=["root"])
        .task("flaky", agent="f", prompt="go", needs=["root"])
        .task("end", agent="a", prompt="end {{ outputs.flaky }}", needs=["flaky", "side"])
        .build()
    )
    kernel = make_kernel(models)
    first = await run_workflow(kernel, spec)
    assert first.status == "failed"
    assert {k: v.state for k, v in first.tasks.items()} == {
        "root": "succeeded",
        "side": "succeeded",
        "flaky": "failed",
        "end": "skipped",
    }
    prompts_before = list(wf_plugin.providers["t"].prompts)

    second = await resume_workflow(kernel, first.run_id)
    assert second.status == "succeeded" and second.run_id == first.run_id
    assert second.output("end") == "done: end fixed"
    # root and side were not asked again; only "end" reached the tracking model.
    assert wf_plugin.providers["t"].prompts[len(prompts_before) :] == ["end fixed"]
    assert _completions(wf_plugin) == {"root": 1, "side": 1, "flaky": 1, "end": 1}
    assert second.tasks["flaky"].attempts == 2  # one failed attempt before, one now
    start = [e for e in wf_plugin.events if e.kind == "run.start"][-1]
    assert start.data["resumed"] and start.data["already_done"] == 2
    # Totals cover both sessions.
    assert second.usage.total_tokens == sum(r.usage.total_tokens for r in second.tasks.values())


async def test_cancelled_run_resumes_without_redoing_finished_tasks(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    # Three quick tasks finish, then a long one is running when the run is cancelled
    # (what Ctrl-C does): it is recorded interrupted; resume reruns it and its dependant.
    spec = (
        Workflow("w", inputs={"long": 5.0})
        .agent("a", model="t")
        .task("q1", agent="a", prompt="sleep=0.01 q1")
        .task("q2", agent="a", prompt="sleep=0.01 q2", needs=["q1"])
        .task("q3", agent="a", prompt="sleep=0.01 q3")
        .task("long", agent="a", prompt="sleep={{ inputs.long }} long", needs=["q2"])
        .task("last", agent="a", prompt="sleep=0.01 last", needs=["long", "q3"])
        .build()
    )
    kernel = make_kernel({"t": {"provider": "tracking"}})
    with anyio.move_on_after(0.5):
        await run_workflow(kernel, spec, run_id="r1")
    run = await kernel.store.get_run("r1")
    assert run is not None and run.status == "interrupted"
    stored = {t.task_id: t.state for t in await kernel.store.get_tasks("r1")}
    assert stored == {"q1": "succeeded", "q2": "succeeded", "q3": "succeeded", "long": "interrupted"}

    # The resumed run reads its inputs from the run record: make "long" quick by
    # changing the stored input, as an operator fixing a run would.
    run.inputs["long"] = 0.01
    await kernel.store.update_run(run)
    result = await resume_workflow(kernel, "r1")
    assert result.status == "succeeded"
    assert _completions(wf_plugin) == {"q1": 1, "q2": 1, "q3": 1, "long": 1, "last": 1}
    started = Counter(e.task_id for e in wf_plugin.events if e.kind == "task.start")
    assert started == {"q1": 1, "q2": 1, "q3": 1, "long": 2, "last": 1}


async def test_resume_errors(make_kernel: Any) -> None:
    kernel = make_kernel()
    with pytest.raises(RunNotResumable) as info:
        await resume_workflow(kernel, "no-such-run")
    assert str(info.value).startswith("no run 'no-such-run' in the run store (memory)")
    spec = Workflow("w").agent("a", model="m").task("x", agent="a", prompt="x").build()
    done = await run_workflow(kernel, spec)
    assert done.ok
    with pytest.raises(RunNotResumable) as info:
        await resume_workflow(kernel, done.run_id)
    assert str(info.value) == f"run {done.run_id!r} (w) already succeeded; there is nothing to resume"
    assert RunNotResumable.exit_code == 2


async def test_budget_exceeded_run_resumes_with_a_larger_budget(make_kernel: Any) -> None:
    from taskloom.workflow.spec import BudgetSpec

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
    first = await run_workflow(kernel, spec)
    assert first.status == "budget_exceeded"
    again = await resume_workflow(kernel, first.run_id)  # same budget: spent already
    assert again.status == "budget_exceeded"
    final = await resume_workflow(kernel, first.run_id, budget=BudgetSpec(tokens=1000))
    assert final.status == "succeeded" and final.tasks["three"].state == "succeeded"
    assert final.tasks["one"].attempts == 1
