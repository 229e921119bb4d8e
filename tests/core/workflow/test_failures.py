"""What goes wrong mid-run: a run store that stops taking writes, a budget spent while
tasks run in parallel, templates that reach for Python internals, retries a router can
escalate, and a cycle reported together with other problems."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from taskloom import hookimpl, load_kernel
from taskloom.builtin.memory_store import MemoryStore
from taskloom.cli import main
from taskloom.errors import ConfigError, TaskloomError
from taskloom.records import RunRecord, TaskRecord
from taskloom.testing import register_plugin
from taskloom.types import ModelRequest
from taskloom.workflow import Workflow, check_workflow, load_workflow, run_workflow

from .conftest import PLUGINS, WfTestPlugin, write

pytestmark = pytest.mark.anyio

TRACK = {"t": {"provider": "tracking"}}


# ---------------------------------------------------------------------- a failing run store


class DiskFull(TaskloomError):
    """What a store raises when its disk is full (the SQLite store's DatabaseFull, say)."""


class FailingStore(MemoryStore):
    """The memory store, which starts failing once it is asked to save ``trigger`` (a
    ``(task_id, state)``): then every ``save_task`` fails, and with ``runs_too`` every
    ``update_run`` as well. A test double for a full disk, named as such."""

    def __init__(self, trigger: tuple[str, str], runs_too: bool) -> None:
        super().__init__()
        self.trigger = trigger
        self.runs_too = runs_too
        self.broken = False
        self.failed_saves: list[tuple[str, str]] = []

    async def save_task(self, task: TaskRecord) -> None:
        if (task.task_id, task.state) == self.trigger:
            self.broken = True
        if self.broken:
            self.failed_saves.append((task.task_id, task.state))
            raise DiskFull("database or disk is full; free space and resume")
        await super().save_task(task)

    async def update_run(self, run: RunRecord) -> None:
        if self.broken and self.runs_too:
            raise DiskFull("database or disk is full; free space and resume")
        await super().update_run(run)


class StorePlugin:
    def __init__(self, trigger: tuple[str, str], runs_too: bool = False) -> None:
        self.trigger, self.runs_too = trigger, runs_too
        self.store: FailingStore | None = None

    @hookimpl
    def taskloom_register_stores(self, register: Callable[..., None], settings: Any) -> None:
        def factory(settings: Any) -> FailingStore:
            self.store = FailingStore(self.trigger, self.runs_too)
            return self.store

        register("failing", factory)


@pytest.fixture
def failing_store(wf_plugin: WfTestPlugin) -> Iterator[Callable[..., StorePlugin]]:
    plugins: list[Any] = []

    def make(trigger: tuple[str, str], runs_too: bool = False) -> StorePlugin:
        plugin = StorePlugin(trigger, runs_too)
        cm = register_plugin(plugin, "failing-store")
        cm.__enter__()
        plugins.append(cm)
        return plugin

    yield make
    for cm in plugins:
        cm.__exit__(None, None, None)


def _store_kernel() -> Any:
    return load_kernel(
        {
            "taskloom": {"store": "failing", "cache": "none", "plugins": [*PLUGINS, "failing-store"]},
            "models": TRACK,
        }
    )


def _store_workflow() -> Any:
    # first -> second -> third, and slow running beside them when second's checkpoint fails.
    return (
        Workflow("w")
        .agent("a", model="t", limits={"max_turns": 1})
        .task("first", agent="a", prompt="sleep=0.01 first", compensate="undo")
        .task("second", agent="a", prompt="sleep=0.05 second", needs=["first"])
        .task("third", agent="a", prompt="third", needs=["second"])
        .task("slow", agent="a", prompt="sleep=5 slow")
        .task("undo", agent="a", prompt="undo {{ outputs.first }}")
        .build()
    )


async def test_a_store_error_mid_run_fails_the_run_with_the_reason(
    failing_store: Callable[..., StorePlugin], wf_plugin: WfTestPlugin
) -> None:
    plugin = failing_store(("second", "succeeded"))
    kernel = _store_kernel()
    t0 = time.monotonic()
    with anyio.fail_after(10):
        result = await run_workflow(kernel, _store_workflow())  # returns: no ExceptionGroup
    assert time.monotonic() - t0 < 3, "the running task was not cancelled"
    assert result.status == "failed"
    reason = "the run store (failing) failed while saving task 'second' (succeeded): DiskFull: database or disk is full"
    assert result.run.error is not None and result.run.error.startswith(reason), result.run.error
    states = {k: v.state for k, v in result.tasks.items()}
    # second did its work (its output is in the result) but its checkpoint failed, so
    # third never started on it; slow was cancelled; nothing was compensated.
    assert states == {"first": "succeeded", "second": "succeeded", "third": "pending", "slow": "interrupted"}
    assert result.output("second") == "done: sleep=0.05 second"
    assert result.compensations == []
    assert "third" not in wf_plugin.times("task.start")
    store = plugin.store
    assert store is not None
    stored = {t.task_id: t.state for t in await store.get_tasks(result.run_id)}
    assert stored["first"] == "succeeded"  # finished results kept
    assert stored["second"] == "running"  # so a resume redoes it
    run = await store.get_run(result.run_id)
    assert run is not None and run.status == "failed" and run.error == result.run.error
    assert ("slow", "interrupted") in store.failed_saves  # it tried to record the cancellation


async def test_a_store_that_also_refuses_the_final_status(failing_store: Callable[..., StorePlugin]) -> None:
    plugin = failing_store(("second", "running"), runs_too=True)
    with anyio.fail_after(10):
        result = await run_workflow(_store_kernel(), _store_workflow())
    assert result.status == "failed"
    error = result.run.error or ""
    assert error.startswith("the run store (failing) failed while saving task 'second' (running): DiskFull")
    assert "could not save the run's final status: DiskFull" in error
    # second never started (its start could not be recorded): pending, to be run on resume.
    assert {k: v.state for k, v in result.tasks.items()} == {
        "first": "succeeded", "second": "pending", "third": "pending", "slow": "interrupted",
    }  # fmt: skip
    assert plugin.store is not None
    run = await plugin.store.get_run(result.run_id)
    assert run is not None and run.status == "running"  # the store could not be told otherwise


STORE_CLI_WORKFLOW = """
[workflow]
name = "w"

[agents.a]
model = "t"

[[tasks]]
id = "first"
agent = "a"
prompt = "sleep=0.01 first"

[[tasks]]
id = "second"
agent = "a"
prompt = "sleep=0.01 second"
needs = ["first"]

[[tasks]]
id = "slow"
agent = "a"
prompt = "sleep=5 slow"
"""


def test_cli_reports_a_store_error_in_one_line_and_exits_1(
    tmp_path: Path, failing_store: Callable[..., StorePlugin]
) -> None:
    failing_store(("second", "succeeded"))
    config = write(
        tmp_path / "taskloom.toml",
        '[taskloom]\nplugins = ["scripted", "memory-store", "local-executor", "prices", "wf-test", "failing-store"]\n'
        'store = "failing"\ncache = "none"\n[models.t]\nprovider = "tracking"\n',
    )
    wf = write(tmp_path / "wf.toml", STORE_CLI_WORKFLOW)
    result = CliRunner().invoke(main, ["--config", str(config), "run", str(wf), "--run-id", "s1"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "ExceptionGroup" not in result.output and "Traceback" not in result.output
    reasons = [line for line in result.stderr.splitlines() if line.startswith("reason: ")]
    assert reasons == [
        "reason: the run store (failing) failed while saving task 'second' (succeeded): "
        "DiskFull: database or disk is full; free space and resume"
    ]
    assert "== first [succeeded]" in result.stdout and "== slow [interrupted]" in result.stdout
    assert "run s1 failed" in result.stdout


# ---------------------------------------------------------------------- budget, in parallel


class WaitTool:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def taskloom_register_tools(self, register: Callable[..., None], settings: Any) -> None:
        async def wait(seconds: float) -> str:
            """Wait, then report.

            Args:
                seconds: How long to wait.
            """
            self.calls += 1
            await anyio.sleep(seconds)
            return f"waited {seconds}"

        register(wait)


async def test_budget_spent_while_tasks_run_in_parallel(make_kernel: Any, wf_plugin: WfTestPlugin) -> None:
    # At t=0 three tasks start. At 0.1 s "spender" answers with a long text: the budget of
    # 30 tokens is gone. At 0.3 s "answerer" gets the answer it was waiting for: kept. At
    # 0.5 s "tooler"'s tool returns; its next turn is refused by the budget: interrupted.
    # "later" needs spender and never starts.
    long = " ".join(["word"] * 60)
    models = {
        "spend": {"provider": "scripted", "responses": [{"text": long, "delay": 0.1}]},
        "slowans": {"provider": "scripted", "responses": [{"text": "slow answer", "delay": 0.3}]},
        "tooly": {
            "provider": "scripted",
            "responses": [{"tool": "wait", "arguments": {"seconds": 0.5}}, "never reached"],
        },
    }
    tool = WaitTool()
    spec = (
        Workflow("w", budget_tokens=30)
        .agent("spender", model="spend")
        .agent("answerer", model="slowans")
        .agent("tooler", model="tooly", tools=["wait"])
        .task("spender", agent="spender", prompt="spend")
        .task("answerer", agent="answerer", prompt="answer")
        .task("tooler", agent="tooler", prompt="use the tool")
        .task("later", agent="spender", prompt="later", needs=["spender"])
        .build()
    )
    with register_plugin(tool, "wait-tool"):
        kernel = load_kernel(
            {"taskloom": {"store": "memory", "cache": "none", "plugins": [*PLUGINS, "wait-tool"]}, "models": models}
        )
        t0 = time.monotonic()
        with anyio.fail_after(10):
            result = await run_workflow(kernel, spec)
    assert time.monotonic() - t0 < 3
    assert result.status == "budget_exceeded"
    assert result.run.error is not None and "the run's budget of 30 tokens is spent" in result.run.error
    states = {k: v.state for k, v in result.tasks.items()}
    assert states == {"spender": "succeeded", "answerer": "succeeded", "tooler": "interrupted", "later": "pending"}
    assert result.output("spender") == long and result.output("answerer") == "slow answer"
    tooler = result.tasks["tooler"]
    assert tooler.error is not None and "budget of 30 tokens is spent" in tooler.error
    assert tooler.usage.total_tokens > 0 and tooler.finished_at is not None  # it ended, with its usage kept
    assert tool.calls == 1
    stored = {t.task_id: t for t in await kernel.store.get_tasks(result.run_id)}
    assert {k: v.state for k, v in stored.items()} == {k: v for k, v in states.items() if v != "pending"}
    assert stored["spender"].output == long
    run = await kernel.store.get_run(result.run_id)
    assert run is not None and run.status == "budget_exceeded" and run.error == result.run.error
    assert wf_plugin.kinds("tooler") == ["task.start", "task.interrupt"]
    assert "later" not in wf_plugin.times("task.start")


# ---------------------------------------------------------------------- the template sandbox


def test_reaching_for_python_internals_is_refused_by_the_checks(tmp_path: Path) -> None:
    wf = write(
        tmp_path / "wf.toml",
        '[workflow]\nname = "w"\n[agents.a]\nmodel = "m"\n'
        '[[tasks]]\nid = "peek"\nagent = "a"\nprompt = "{{ \'\'.__class__.__mro__ }}"\n'
        '[[tasks]]\nid = "peek2"\nagent = "a"\nprompt = "hi"\nwhen = "inputs | attr(\'__dict__\')"\n',
    )
    with pytest.raises(ConfigError) as info:
        check_workflow(load_workflow(wf))
    lines = str(info.value).splitlines()
    rest = "the template sandbox refuses names starting with '_' (no access to Python internals); read inputs and outputs only"
    assert lines == [
        f"{wf}: task 'peek': prompt reads '__class__', '__mro__': {rest}",
        f"{wf}: task 'peek2': when reads '__dict__': {rest}",
    ]


async def test_the_sandbox_refuses_internals_at_render_time(
    tmp_path: Path, make_kernel: Any, wf_plugin: WfTestPlugin
) -> None:
    # The attribute name comes from an input, so no check can see it: the sandbox refuses it.
    wf = write(
        tmp_path / "wf.toml",
        '[workflow]\nname = "w"\ninputs = { name = "upper" }\n[agents.a]\nmodel = "t"\n'
        '[[tasks]]\nid = "peek"\nagent = "a"\nprompt = "{{ \'text\' | attr(inputs.name) }}"\n',
    )
    kernel = make_kernel(TRACK)
    ok = await run_workflow(kernel, wf, {"name": "upper"})
    assert ok.status == "succeeded" and ok.output("peek").startswith("done: <built-in method upper")

    result = await run_workflow(kernel, wf, {"name": "__class__"})
    assert result.status == "failed"
    error = result.tasks["peek"].error or ""
    assert error.startswith("prompt template: SecurityError: access to attribute '__class__' of 'str' object is unsafe")
    assert error.endswith(f"(in {wf})")
    assert result.run.error == f"task 'peek' failed: {error}"
    prompts = wf_plugin.providers["t"].prompts
    assert len(prompts) == 1 and "class" not in prompts[0]  # the refused prompt was never sent


# ---------------------------------------------------------------------- retries a router can use


class RecordingRouter:
    """A router (test double) that sends first attempts to "weak" and any request whose
    metadata says a previous attempt failed to "strong"; it records what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, Any, Any]] = []

    @hookimpl
    def taskloom_route(self, request: ModelRequest, settings: Any) -> list[str] | None:
        extra = request.metadata.__pydantic_extra__ or {}
        self.seen.append((extra.get("attempt"), extra.get("escalation_reason"), extra.get("previous_error")))
        return ["strong"] if extra.get("escalation_reason") else ["weak"]


async def test_a_retry_carries_the_attempt_and_why_the_last_one_failed(wf_plugin: WfTestPlugin) -> None:
    router = RecordingRouter()
    models = {
        "weak": {"provider": "scripted", "responses": [{"error": "bad_request", "message": "I cannot do that"}]},
        "strong": {"provider": "scripted", "default": "strong: {prompt}"},
    }
    spec = (
        Workflow("w")
        .agent("a", model="auto")
        .task("hard", agent="a", prompt="a hard thing", retries=2, backoff=0)
        .build()
    )
    with register_plugin(router, "recording-router"):
        kernel = load_kernel(
            {
                "taskloom": {"store": "memory", "cache": "none", "plugins": [*PLUGINS, "recording-router"]},
                "models": models,
            }
        )
        result = await run_workflow(kernel, spec)
    assert result.status == "succeeded", result.run.error
    assert result.output("hard") == "strong: a hard thing" and result.tasks["hard"].attempts == 2
    assert router.seen[0] == (1, None, None)
    attempt, reason, previous = router.seen[-1]
    assert (attempt, reason) == (2, "error")
    assert "I cannot do that" in previous


# ---------------------------------------------------------------------- checks


def test_a_cycle_is_reported_together_with_other_problems(make_kernel: Any) -> None:
    spec = (
        Workflow("w")
        .agent("a", model="m")
        .task("plan", agent="a", prompt="p", needs=["build"])
        .task("build", agent="a", prompt="b", needs=["plan", "tset"])
        .task("test", agent="nobody", prompt="t")
        .build()
    )
    with pytest.raises(ConfigError) as info:
        check_workflow(spec)
    lines = str(info.value).splitlines()
    assert lines == [
        "workflow 'w': cycle: plan -> build -> plan; remove one of these needs",
        "workflow 'w': task 'build': needs unknown task 'tset' (did you mean 'test'?)",
        "workflow 'w': task 'test': unknown agent 'nobody'; defined agents: a",
    ]
