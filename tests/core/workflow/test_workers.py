"""How started tasks are run: reusable workers, most critical task first, unlimited
concurrency kept; and the local executor's agent per agent spec."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from taskloom.types import ModelRequest, ModelResponse
from taskloom.workflow import Workflow, run_workflow

from .conftest import TrackingProvider, WfTestPlugin

pytestmark = pytest.mark.anyio

TRACK = {"t": {"provider": "tracking"}}


def _wf(**kw: Any) -> Workflow:
    return Workflow("w", **kw).agent("a", model="t", limits={"max_turns": 1})


async def test_a_wide_fan_out_runs_all_at_once(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    wf = _wf().task("root", agent="a", prompt="sleep=0.01")
    for k in range(300):
        wf.task(f"leaf{k}", agent="a", prompt="sleep=0.4", needs=["root"])
    kernel = make_kernel(TRACK)
    t0 = time.monotonic()
    result = await run_workflow(kernel, wf.build())
    elapsed = time.monotonic() - t0
    assert result.ok, result.run.error
    provider = wf_plugin.providers["t"]
    assert isinstance(provider, TrackingProvider)
    assert provider.peak == 300, "every ready task runs at once with no concurrency limit"
    assert elapsed < 4.0, f"300 parallel tasks of 0.4 s took {elapsed:.1f} s"


class TaskIds(TrackingProvider):
    """Notes which anyio task ran each call (the local executor runs the agent in the worker)."""

    seen: set[int] = set()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        TaskIds.seen.add(anyio.get_current_task().id)
        return await super().complete(request)


async def test_workers_are_reused_not_spawned_per_task(
    make_kernel: Any, wf_plugin: WfTestPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = _wf()
    for layer in range(20):
        for k in range(20):
            needs = [f"t{layer - 1}_{k}", f"t{layer - 1}_{(k + 1) % 20}"] if layer else []
            wf.task(f"t{layer}_{k}", agent="a", prompt=f"task {layer} {k}", needs=needs)
    wf_plugin.providers["t"] = provider = TaskIds("t")
    TaskIds.seen = set()
    result = await run_workflow(make_kernel(TRACK), wf.build())
    assert result.ok, result.run.error
    assert len(provider.prompts) == 400
    assert len(TaskIds.seen) <= 100, f"{len(TaskIds.seen)} anyio tasks ran 400 tasks; workers should be reused"


async def test_the_most_critical_ready_task_starts_first(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    # root makes four tasks ready; "long" heads the longest chain, so it starts first,
    # although it is listed last.
    wf = _wf().task("root", agent="a", prompt="go")
    for name in ("short1", "short2", "short3"):
        wf.task(name, agent="a", prompt="x", needs=["root"])
    wf.task("long", agent="a", prompt="x", needs=["root"])
    wf.task("long2", agent="a", prompt="x", needs=["long"])
    wf.task("long3", agent="a", prompt="x", needs=["long2"])
    result = await run_workflow(make_kernel(TRACK), wf.build())
    assert result.ok, result.run.error
    started = [e.task_id for e in wf_plugin.events if e.kind == "task.start"]
    assert started[:2] == ["root", "long"], started


async def test_a_changed_agent_spec_is_used_by_the_next_run(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    kernel = make_kernel(TRACK)
    spec = Workflow("w").agent("a", model="t", system="first", limits={"max_turns": 1}).task("x", agent="a", prompt="p")
    built = spec.build()
    assert (await run_workflow(kernel, built)).ok
    built.agents["a"].system = "second"
    assert (await run_workflow(kernel, built)).ok
    provider = wf_plugin.providers["t"]
    systems = [r.messages[0].text for r in provider.requests]
    assert systems == ["first", "second"]
