"""When a new run's record reaches the run store: after its first tasks have started, before
any task's result is saved; a taken run id is refused before any task runs; a store that
refuses the run stops it and nothing is written; a run cancelled before its record was
stored is still recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from taskloom.cli import main
from taskloom.errors import ConfigError
from taskloom.kernel import Kernel
from taskloom.records import RunRecord, TaskRecord
from taskloom.workflow import Workflow, resume_workflow, run_workflow

from .conftest import TrackingProvider, WfTestPlugin

pytestmark = pytest.mark.anyio


def _wf() -> Workflow:
    wf = Workflow("w").agent("a", model="t", limits={"max_turns": 1})
    wf.task("long", agent="a", prompt="long sleep=0.05")
    wf.task("short", agent="a", prompt="short sleep=0.01")
    return wf.task("next", agent="a", prompt="next", needs=["long", "short"])


def _log_store(kernel: Kernel, provider: TrackingProvider) -> list[tuple[Any, ...]]:
    """Every run-store write, in order (a create notes how many model calls had begun)."""
    store, log = kernel.store, []
    create, save, update = store.create_run, store.save_task, store.update_run

    async def create_run(run: RunRecord) -> None:
        log.append(("create", len(provider.prompts), len(run.spec.get("tasks", []))))
        await create(run)

    async def save_task(task: TaskRecord) -> None:
        log.append(("save", task.task_id, task.state))
        await save(task)

    async def update_run(run: RunRecord) -> None:
        log.append(("update", run.status))
        await update(run)

    store.create_run, store.save_task, store.update_run = create_run, save_task, update_run  # type: ignore[method-assign]
    return log


@pytest.fixture
def tracked(wf_plugin: WfTestPlugin) -> TrackingProvider:
    provider = wf_plugin.providers["t"] = TrackingProvider("t")
    return provider


async def test_the_first_tasks_start_before_the_run_is_stored_and_nothing_finishes_before_it(
    make_kernel: Any, tracked: TrackingProvider
) -> None:
    kernel = make_kernel({"t": {"provider": "tracking"}})
    log = _log_store(kernel, tracked)
    result = await run_workflow(kernel, _wf().build())
    assert result.ok, result.run.error
    assert log[0][0] == "create", log
    _, calls_begun, tasks_in_spec = log[0]
    assert calls_begun == 2, "both roots were calling the model when the run was stored"
    assert tasks_in_spec == 3, "the run is stored with its whole spec"
    saves = [entry[1:] for entry in log[1:-1]]
    # The roots' "running" checkpoints follow the run's record, each before its result.
    assert saves[:2] == [("long", "running"), ("short", "running")]
    for tid in ("long", "short", "next"):
        assert saves.index((tid, "running")) < saves.index((tid, "succeeded"))
    assert log[-1] == ("update", "succeeded")
    stored = await kernel.store.get_run(result.run_id)
    assert stored is not None and stored.spec == result.run.spec and len(stored.spec["tasks"]) == 3


async def test_a_task_finishing_before_the_run_is_stored_saves_after_it(
    make_kernel: Any, tracked: TrackingProvider
) -> None:
    wf = Workflow("w").agent("a", model="t", limits={"max_turns": 1})
    for k in range(30):  # many roots: the first to finish does before the last has started
        wf.task(f"r{k}", agent="a", prompt=f"r{k}")
    kernel = make_kernel({"t": {"provider": "tracking"}})
    log = _log_store(kernel, tracked)
    result = await run_workflow(kernel, wf.build())
    assert result.ok, result.run.error
    assert log[0][0] == "create"
    assert log[0][1] < 30, "the run was stored before every root had started (a finished root needed it)"
    saves = [entry[1:] for entry in log[1:-1]]
    assert sorted(s for s in saves if s[1] == "succeeded") == sorted((f"r{k}", "succeeded") for k in range(30))
    for k in range(30):  # a root that finished before the run was stored saved no "running" after it
        states = [state for tid, state in saves if tid == f"r{k}"]
        assert states in (["running", "succeeded"], ["succeeded"]), (k, states)
    assert {r.state for r in await kernel.store.get_tasks(result.run_id)} == {"succeeded"}


async def test_a_taken_run_id_is_refused_before_any_task_runs(make_kernel: Any, tracked: TrackingProvider) -> None:
    kernel = make_kernel({"t": {"provider": "tracking"}})
    first = await run_workflow(kernel, _wf().build(), run_id="mine")
    assert first.ok, first.run.error
    before = await kernel.store.get_run("mine")
    tasks_before = sorted((r.task_id, r.state, r.attempts) for r in await kernel.store.get_tasks("mine"))
    calls = len(tracked.prompts)

    with pytest.raises(ConfigError) as info:
        await run_workflow(kernel, _wf().build(), run_id="mine")
    message = str(info.value)
    assert "run id 'mine' is taken" in message and "(memory)" in message and "(w, succeeded)" in message
    assert "--run-id" in message and "taskloom resume mine" in message
    assert len(tracked.prompts) == calls, "no task ran"
    assert (await kernel.store.get_run("mine")) == before
    assert sorted((r.task_id, r.state, r.attempts) for r in await kernel.store.get_tasks("mine")) == tasks_before


async def test_a_run_the_store_refuses_fails_with_the_store_named_and_writes_nothing(
    make_kernel: Any, tracked: TrackingProvider
) -> None:
    kernel = make_kernel({"t": {"provider": "tracking"}})
    log = _log_store(kernel, tracked)

    async def refuse(run: RunRecord) -> None:
        log.append(("create", len(tracked.prompts)))
        raise OSError(28, "No space left on device")

    kernel.store.create_run = refuse  # type: ignore[method-assign]
    result = await run_workflow(kernel, _wf().build(), run_id="full-disk")
    assert result.status == "failed" and not result.stored
    assert result.run.error is not None
    assert "the run store (memory) could not record run 'full-disk'" in result.run.error
    assert "No space left on device" in result.run.error
    assert [entry[0] for entry in log] == ["create"], "no checkpoint and no final update without the run"
    assert await kernel.store.get_run("full-disk") is None
    assert await kernel.store.get_tasks("full-disk") == []
    assert result.tasks["next"].state == "pending", "nothing built on results that could not be saved"
    assert {result.tasks[t].state for t in ("long", "short")} <= {"interrupted", "failed"}


def test_the_cli_does_not_offer_to_resume_a_run_the_store_did_not_record(
    tmp_path: Path, wf_plugin: WfTestPlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskloom.builtin.memory_store import MemoryStore

    async def refuse(self: MemoryStore, run: RunRecord) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MemoryStore, "create_run", refuse)
    config = tmp_path / "taskloom.toml"
    config.write_text(
        '[taskloom]\nstore = "memory"\ncache = "none"\nplugins = ["scripted", "memory-store", "local-executor", '
        '"prices", "wf-test"]\n[models.m]\nprovider = "scripted"\n',
        encoding="utf-8",
    )
    flow = tmp_path / "w.toml"
    flow.write_text(
        '[workflow]\nname = "w"\n[agents.a]\nmodel = "m"\n[[tasks]]\nid = "one"\nagent = "a"\nprompt = "hi"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["--config", str(config), "run", str(flow)])
    assert result.exit_code == 1, result.output
    assert "could not record run" in result.output and "No space left on device" in result.output
    assert "resume with" not in result.output
    assert "did not record this run: run it again" in result.output


async def test_a_run_cancelled_before_its_record_was_stored_is_recorded_interrupted(
    make_kernel: Any, tracked: TrackingProvider
) -> None:
    kernel = make_kernel({"t": {"provider": "tracking"}})
    log = _log_store(kernel, tracked)
    ids: list[str] = []

    async def run() -> None:
        result = await run_workflow(kernel, _wf().build(), run_id="cancelled-run")
        ids.append(result.run_id)  # (not reached: the cancellation goes on to the caller)

    with anyio.move_on_after(0.005):
        await run()
    assert not ids
    assert log[0][0] == "create"
    stored = await kernel.store.get_run("cancelled-run")
    assert stored is not None and stored.status == "interrupted" and len(stored.spec["tasks"]) == 3
    states = {r.task_id: r.state for r in await kernel.store.get_tasks("cancelled-run")}
    assert states == {"long": "interrupted", "short": "interrupted"}
    resumed = await resume_workflow(kernel, "cancelled-run")
    assert resumed.ok, resumed.run.error
    assert {tid: r.state for tid, r in resumed.tasks.items()} == dict.fromkeys(("long", "short", "next"), "succeeded")
