"""A run's collector: what the run built before its first task is frozen while it runs,
collections go on for what it makes, and nothing stays frozen or paused afterwards, also
when the workflow is refused or the run is resumed."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from taskloom.errors import ConfigError
from taskloom.types import ModelRequest, ModelResponse
from taskloom.workflow import Workflow, resume_workflow, run_workflow
from taskloom.workflow.spec import BudgetSpec

from .conftest import TrackingProvider, WfTestPlugin

pytestmark = pytest.mark.anyio


class CollectorState(TrackingProvider):
    """Notes, during each call, whether the collector runs and how many objects are frozen."""

    seen: list[tuple[bool, int]] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        CollectorState.seen.append((gc.isenabled(), gc.get_freeze_count()))
        return await super().complete(request)


@pytest.fixture
def watched(wf_plugin: WfTestPlugin, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TASKLOOM_GC_THRESHOLD", raising=False)
    gc.unfreeze()
    CollectorState.seen = []
    wf_plugin.providers["t"] = CollectorState("t")
    yield
    gc.unfreeze()
    gc.enable()


def _wf(**kw: Any) -> Workflow:
    wf = Workflow("w", **kw).agent("a", model="t", limits={"max_turns": 1})
    return wf.task("one", agent="a", prompt="first").task("two", agent="a", prompt="second", needs=["one"])


async def test_a_run_freezes_what_it_built_and_unfreezes_it_at_its_end(make_kernel: Any, watched: None) -> None:
    kernel = make_kernel({"t": {"provider": "tracking"}})
    result = await run_workflow(kernel, _wf().build())
    assert result.ok, result.run.error
    assert len(CollectorState.seen) == 2
    for enabled, frozen in CollectorState.seen:
        assert enabled, "collections go on during the run"
        assert frozen > 1000, "the objects alive when the run started (modules, spec, graph) are frozen"
    assert gc.get_freeze_count() == 0 and gc.isenabled()


async def test_a_refused_workflow_leaves_the_collector_as_it_was(make_kernel: Any, watched: None) -> None:
    kernel = make_kernel({"t": {"provider": "tracking"}})
    bad = Workflow("w").agent("a", model="t").task("one", agent="a", prompt="x", needs=["nope"]).build()
    with pytest.raises(ConfigError, match="nope"):
        await run_workflow(kernel, bad)
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    assert CollectorState.seen == []


async def test_a_resumed_run_is_frozen_as_a_new_one(make_kernel: Any, watched: None) -> None:
    kernel = make_kernel({"t": {"provider": "tracking"}})
    first = await run_workflow(kernel, _wf(budget_tokens=1).build())
    assert first.run.status == "budget_exceeded"
    CollectorState.seen = []
    resumed = await resume_workflow(kernel, first.run.id, budget=BudgetSpec(tokens=10_000))
    assert resumed.ok, resumed.run.error
    assert CollectorState.seen and all(enabled and frozen > 1000 for enabled, frozen in CollectorState.seen)
    assert gc.get_freeze_count() == 0 and gc.isenabled()


async def test_an_application_that_froze_its_own_objects_keeps_them_frozen(make_kernel: Any, watched: None) -> None:
    kernel = make_kernel({"t": {"provider": "tracking"}})
    gc.freeze()
    frozen = gc.get_freeze_count()
    result = await run_workflow(kernel, _wf().build())
    assert result.ok, result.run.error
    # (frozen objects freed by reference count leave the count: it can only go down)
    assert len(CollectorState.seen) == 2
    assert all(f <= frozen for _, f in CollectorState.seen), "the run adds nothing to the app's freeze"
    assert frozen - 100 < gc.get_freeze_count() <= frozen, "and does not unfreeze it either"


async def test_runs_at_once_in_one_process_leave_nothing_frozen_or_paused(make_kernel: Any, watched: None) -> None:
    kernel = make_kernel({"t": {"provider": "tracking"}})
    results = []

    async def one() -> None:
        results.append(await run_workflow(kernel, _wf().build()))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
    assert len(results) == 3 and all(r.ok for r in results)
    assert all(enabled for enabled, _ in CollectorState.seen), (
        "no call ran while another run set up (the memory store does not yield there)"
    )
    assert gc.get_freeze_count() == 0 and gc.isenabled()
