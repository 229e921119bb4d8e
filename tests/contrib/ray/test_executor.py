"""Workflows on a real local Ray cluster: end to end in both modes, custom resources,
max_in_flight and runtime_env as seen on the cluster, errors raised on workers, a worker
killed mid-task, a timed-out attempt, and a resumed run."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from ray_marker import MarkerPlugin, max_overlap, read_log
from taskloom import load_kernel
from taskloom.testing import register_plugin
from taskloom.workflow import Workflow, WorkflowResult, resume_workflow, run_workflow
from taskloom_ray.executor import RayExecutor

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster", "marker_plugin")]


@pytest.fixture
def marker_plugin() -> Any:
    with register_plugin(MarkerPlugin(), "marker"):
        yield


def config(marker: Path | None = None, models: dict[str, Any] | None = None, **ray: Any) -> dict[str, Any]:
    models = {"s": {"provider": "scripted", "default": "<{prompt}>"}, **(models or {})}
    if marker is not None:
        models["m"] = {"provider": "marker", "marker": str(marker), "default": "recovered"}
    return {
        "taskloom": {"executor": "ray", "store": "memory", "cache": "none", "default_model": "s"},
        "models": models,
        "plugins": {"ray": ray},
    }


def diamond() -> Workflow:
    wf = Workflow("diamond").agent("a", model="s", limits={"max_turns": 1})
    wf.task("top", agent="a", prompt="top")
    wf.task("left", agent="a", prompt="L {{ outputs.top }}", needs=["top"])
    wf.task("right", agent="a", prompt="R {{ outputs.top }}", needs=["top"])
    wf.task("bottom", agent="a", prompt="B {{ outputs.left }} {{ outputs.right }}", needs=["left", "right"])
    return wf


def check_diamond(result: WorkflowResult) -> None:
    assert result.ok, result.run.error
    out = {tid: r.output for tid, r in result.tasks.items()}
    assert out == {"top": "<top>", "left": "<L <top>>", "right": "<R <top>>", "bottom": "<B <L <top>> <R <top>>>"}
    assert all(r.attempts == 1 for r in result.tasks.values())
    assert result.run.usage.total_tokens > 0, "the workers' usage came back to the driver"


async def wait_for_pid(marker: Path, timeout: float = 60) -> int:
    with anyio.fail_after(timeout):
        while not marker.exists() or not marker.read_text():
            await anyio.sleep(0.05)
    return int(marker.read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_workflow_runs_end_to_end_on_ray_tasks() -> None:
    kernel = load_kernel(config(mode="tasks", num_cpus=0.5, max_in_flight=2))
    assert isinstance(kernel.executor, RayExecutor)
    check_diamond(await run_workflow(kernel, diamond().build()))
    assert not kernel._deployments, "no provider was created in the driver: the agents ran on Ray workers"
    await kernel.aclose()


async def test_workflow_runs_end_to_end_on_a_pool_of_actors() -> None:
    kernel = load_kernel(config(mode="actors", actors=2, num_cpus=0.25))
    check_diamond(await run_workflow(kernel, diamond().build()))
    executor = kernel.executor
    assert isinstance(executor, RayExecutor) and len(executor._actors) == 2
    pids = {await actor.pid.remote() for actor in executor._actors}
    assert len(pids) == 2 and os.getpid() not in pids
    if sys.platform.startswith("linux"):  # Ray made the actors' loops; taskloom gave them precise timers
        assert [await actor.precise_timers.remote() for actor in executor._actors] == [True, True]
    await kernel.aclose()
    assert executor._actors == []


def probe(log: Path, **options: Any) -> dict[str, Any]:
    return {"provider": "probe", "log": str(log), **options}


@pytest.mark.parametrize(("mode", "mapped"), [("tasks", True), ("actors", True), ("actors", False)])
async def test_a_custom_resource_serialises_tasks_on_the_cluster(tmp_path: Path, mode: str, mapped: bool) -> None:
    # The cluster has one "browser"; the workflow declares two, so its own scheduler lets both
    # tasks start at once: only Ray (through resource_map) can make them take turns.
    log = tmp_path / "calls.jsonl"
    ray_cfg: dict[str, Any] = {"mode": mode, "actors": 1, "num_cpus": 0.25}
    if mapped:
        ray_cfg["resource_map"] = {"browser": "browser"}
    kernel = load_kernel(config(models={"p": probe(log, hold=1.5)}, **ray_cfg))
    wf = Workflow("browsers", resources={"browser": 2}).agent("a", model="p", limits={"max_turns": 1})
    wf.task("one", agent="a", prompt="one", resources={"browser": 1})
    wf.task("two", agent="a", prompt="two", resources={"browser": 1})
    result = await run_workflow(kernel, wf.build())
    assert result.ok, result.run.error
    assert {t: r.output for t, r in result.tasks.items()} == {"one": "<one>", "two": "<two>"}
    overlap = max_overlap(read_log(log))
    if mapped:
        assert overlap == 1, "two tasks that each need the cluster's only browser ran at the same time"
    else:  # the control: without resource_map nothing stops them
        assert overlap == 2
    await kernel.aclose()


@pytest.mark.parametrize(("mode", "limit"), [("tasks", 1), ("actors", 2)])
async def test_max_in_flight_bounds_the_attempts_running_on_the_cluster(tmp_path: Path, mode: str, limit: int) -> None:
    log = tmp_path / "calls.jsonl"
    kernel = load_kernel(
        config(models={"p": probe(log, hold=0.8)}, mode=mode, actors=1, num_cpus=0.25, max_in_flight=limit)
    )
    wf = Workflow("in-flight").agent("a", model="p", limits={"max_turns": 1})
    for n in range(5):
        wf.task(f"t{n}", agent="a", prompt=f"t{n}")
    result = await run_workflow(kernel, wf.build())
    assert result.ok, result.run.error
    events = read_log(log)
    assert len([e for e in events if e["event"] == "end"]) == 5
    assert max_overlap(events) == limit, f"max_in_flight = {limit}"
    await kernel.aclose()


async def test_without_max_in_flight_an_actor_runs_every_ready_attempt_at_once(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"  # the control of the test above
    kernel = load_kernel(config(models={"p": probe(log, hold=0.8)}, mode="actors", actors=1, num_cpus=0.25))
    wf = Workflow("unbounded").agent("a", model="p", limits={"max_turns": 1})
    for n in range(5):
        wf.task(f"t{n}", agent="a", prompt=f"t{n}")
    result = await run_workflow(kernel, wf.build())
    assert result.ok, result.run.error
    assert max_overlap(read_log(log)) == 5
    await kernel.aclose()


@pytest.mark.parametrize("mode", ["tasks", "actors"])
async def test_runtime_env_reaches_tasks_and_actors_on_an_existing_cluster(tmp_path: Path, mode: str) -> None:
    # The cluster was started by the fixture, so the executor gives runtime_env to each task
    # or actor (Ray merges it with the job's, which registers the test providers).
    log = tmp_path / "calls.jsonl"
    runtime_env = {"env_vars": {"TASKLOOM_PROBE": f"per-{mode}"}}
    models = {"p": probe(log, echo_env="TASKLOOM_PROBE")}
    kernel = load_kernel(config(models=models, mode=mode, actors=1, num_cpus=0.25, runtime_env=runtime_env))
    wf = Workflow("env").agent("a", model="p", limits={"max_turns": 1})
    wf.task("x", agent="a", prompt="x")
    result = await run_workflow(kernel, wf.build())
    assert result.ok, result.run.error
    assert result.tasks["x"].output == f"<x> TASKLOOM_PROBE=per-{mode}"
    assert os.environ.get("TASKLOOM_PROBE") is None, "the variable was set on the worker only"
    await kernel.aclose()


@pytest.mark.parametrize("mode", ["tasks", "actors"])
async def test_an_exception_raised_on_the_worker_is_reported_with_its_message(mode: str) -> None:
    models = {"b": {"provider": "broken", "message": f"no browser left in the pool ({mode})"}}
    kernel = load_kernel(config(models=models, mode=mode, actors=1, num_cpus=0.25))
    wf = Workflow("raises").agent("a", model="b")
    wf.task("x", agent="a", prompt="x", retries=0)
    result = await run_workflow(kernel, wf.build())
    assert not result.ok
    record = result.tasks["x"]
    assert record.state == "failed"
    assert record.error == (
        f"RemoteTaskError: task 'x' attempt 1 raised on its Ray worker: "
        f"RuntimeError: no browser left in the pool ({mode})"
    )
    await kernel.aclose()


@pytest.mark.parametrize("mode", ["tasks", "actors"])
async def test_a_terminal_provider_error_on_the_worker_is_reported_with_its_message(mode: str) -> None:
    message = f"the API key was revoked ({mode})"
    models = {"e": {"provider": "scripted", "responses": [{"error": "auth", "message": message}]}}
    kernel = load_kernel(config(models=models, mode=mode, actors=1, num_cpus=0.25))
    wf = Workflow("terminal").agent("a", model="e")
    wf.task("x", agent="a", prompt="x", retries=0)
    result = await run_workflow(kernel, wf.build())
    assert not result.ok
    record = result.tasks["x"]
    assert record.state == "failed" and record.attempts == 1
    assert "AuthenticationError" in (record.error or "") and message in (record.error or ""), record.error
    await kernel.aclose()


@pytest.mark.parametrize(("mode", "transport"), [("tasks", "channels"), ("actors", "channels"), ("actors", "calls")])
async def test_a_worker_killed_mid_task_is_retried_by_the_engine(tmp_path: Path, mode: str, transport: str) -> None:
    marker = tmp_path / "pid"
    kernel = load_kernel(config(marker, mode=mode, actors=1, num_cpus=0.5, transport=transport))
    wf = Workflow("kill").agent("a", model="s").agent("slow", model="m")
    wf.task("first", agent="a", prompt="first")
    wf.task("victim", agent="slow", prompt="work on {{ outputs.first }}", needs=["first"], retries=1, backoff=0)
    events: list[str] = []
    kernel.emit = lambda event: events.append(f"{event.kind}:{event.task_id}:{event.data.get('error', '')}")  # type: ignore[method-assign]
    kernel.has_sinks = True
    results: list[WorkflowResult] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _collect(results, run_workflow(kernel, wf.build())))
        pid = await wait_for_pid(marker)
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
    (result,) = results
    assert result.ok, result.run.error
    victim = result.tasks["victim"]
    assert victim.state == "succeeded" and victim.output == "recovered"
    assert victim.attempts == 2
    assert result.tasks["first"].attempts == 1
    retries = [e for e in events if e.startswith("task.retry:victim")]
    assert len(retries) == 1 and "WorkerLost" in retries[0] and "the Ray worker running it died" in retries[0]
    await kernel.aclose()


async def test_a_timed_out_attempt_is_cancelled_on_its_worker(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    kernel = load_kernel(config(marker, mode="tasks", num_cpus=0.5))
    wf = Workflow("timeout").agent("slow", model="m")
    wf.task("stuck", agent="slow", prompt="hang", timeout=3)
    result = await run_workflow(kernel, wf.build())
    assert not result.ok
    assert result.tasks["stuck"].error == "timed out after 3 s"
    pid = int(marker.read_text())
    with anyio.fail_after(15):
        while alive(pid):  # ray.cancel(force=True) kills the worker that runs the attempt
            await anyio.sleep(0.1)
    await kernel.aclose()


@pytest.mark.parametrize("transport", ["channels", "calls"])
async def test_a_dependant_on_an_actor_starts_before_a_slow_task_sent_with_its_dependency(
    tmp_path: Path, transport: str
) -> None:
    # "slow" and "fast" are ready together, so they reach the actor in one batch; "after"
    # needs only "fast" and must not wait for the batch (for "slow") to finish.
    log = tmp_path / "calls.jsonl"
    models = {"slow": probe(log, hold=3), "fast": probe(log)}
    kernel = load_kernel(config(models=models, mode="actors", actors=1, num_cpus=0.25, transport=transport))
    wf = Workflow("batch").agent("s", model="slow", limits={"max_turns": 1}).agent("f", model="fast")
    wf.task("slow", agent="s", prompt="slow")
    wf.task("fast", agent="f", prompt="fast")
    wf.task("after", agent="f", prompt="after {{ outputs.fast }}", needs=["fast"])
    result = await run_workflow(kernel, wf.build())
    assert result.ok, result.run.error
    events = {(e["event"], e["prompt"]): e for e in read_log(log)}
    assert events[("start", "slow")]["pid"] == events[("start", "fast")]["pid"] != os.getpid()
    assert events[("end", "after <fast>")]["t"] < events[("end", "slow")]["t"] - 1, (
        "the dependant waited for the slow task sent in the same batch as its dependency"
    )
    await kernel.aclose()


@pytest.mark.parametrize("transport", ["channels", "calls"])
async def test_a_timed_out_attempt_on_an_actor_is_cancelled_there_and_the_actor_stays_usable(
    tmp_path: Path, transport: str
) -> None:
    log, hang = tmp_path / "calls.jsonl", tmp_path / "hang.pid"
    models = {"p": probe(log, hang_marker=str(hang))}
    kernel = load_kernel(config(models=models, mode="actors", actors=1, num_cpus=0.25, transport=transport))
    wf = Workflow("actor-timeout").agent("a", model="p", limits={"max_turns": 1})
    wf.task("stuck", agent="a", prompt="stuck [hang]", timeout=2)
    wf.task("free", agent="a", prompt="free")
    result = await run_workflow(kernel, wf.build())
    assert not result.ok
    assert result.tasks["stuck"].error == "timed out after 2 s"
    assert result.tasks["free"].output == "<free>"
    with anyio.fail_after(15):
        while not any(e["event"] == "cancelled" for e in read_log(log)):
            await anyio.sleep(0.1)
    (cancelled,) = [e for e in read_log(log) if e["event"] == "cancelled"]
    assert cancelled["prompt"] == "stuck [hang]" and cancelled["pid"] == int(hang.read_text())
    again = await run_workflow(kernel, Workflow("again").agent("a", model="p").task("x", agent="a", prompt="x").build())
    assert again.ok and again.tasks["x"].output == "<x>", "the actor that ran the cancelled attempt still works"
    await kernel.aclose()


async def test_an_actor_pool_the_cluster_cannot_place_fails_with_a_clear_error() -> None:
    # No node has a "tpu": Ray never starts the actor, and the attempt gives up after restart_timeout.
    kernel = load_kernel(config(mode="actors", actors=1, num_cpus=0.25, resources={"tpu": 1}, restart_timeout=2))
    wf = Workflow("unplaceable").agent("a", model="s")
    wf.task("x", agent="a", prompt="x", retries=0)
    result = await run_workflow(kernel, wf.build())
    assert not result.ok
    error = result.tasks["x"].error or ""
    assert error.startswith("WorkerLost: no actor of the pool is alive"), error
    assert "restart_timeout = 2 s" in error and "[plugins.ray] num_cpus, num_gpus, resources" in error
    await kernel.aclose()


async def test_an_interrupted_run_resumes_with_the_ray_executor(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    kernel = load_kernel(config(marker, mode="tasks", num_cpus=0.5))
    wf = Workflow("resume").agent("a", model="s").agent("slow", model="m")
    wf.task("first", agent="a", prompt="first")
    wf.task("second", agent="slow", prompt="after {{ outputs.first }}", needs=["first"])
    wf.task("third", agent="a", prompt="end {{ outputs.second }}", needs=["second"])
    results: list[WorkflowResult] = []
    with anyio.CancelScope() as scope:  # the driver is stopped (Ctrl-C) while "second" runs
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _collect(results, run_workflow(kernel, wf.build(), run_id="r-1")))
            await wait_for_pid(marker)
            scope.cancel()
    run = await kernel.store.get_run("r-1")
    assert run is not None and run.status == "interrupted"
    resumed = await resume_workflow(kernel, "r-1")
    assert resumed.ok, resumed.run.error
    assert resumed.tasks["first"].attempts == 1, "a finished task is not rerun"
    assert resumed.tasks["second"].output == "recovered"
    assert resumed.tasks["third"].output == "<end recovered>"
    await kernel.aclose()


async def _collect(results: list[WorkflowResult], coro: Any) -> None:
    results.append(await coro)


class Unreadable:
    """Stands in for the config's object reference: any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the worker read the config reference ({name}) although it had the kernel")


async def test_a_ray_task_reads_the_config_by_reference_only_to_build_its_kernel() -> None:
    import ray
    from taskloom.workflow.executor import TaskSpec
    from taskloom.workflow.spec import AgentSpec
    from taskloom_ray import worker

    data = worker.worker_config(config(), None)
    key = f"test-by-reference-{os.getpid()}"
    spec = TaskSpec(run_id="r1", task_id="t1", agent=AgentSpec(name="a", model="s"), prompt="hi").model_dump(
        mode="json"
    )
    try:
        # No kernel for the key in this process yet: the reference is read, the kernel built.
        first = await anyio.to_thread.run_sync(worker.run_task, key, [ray.put(data)], spec)
        assert first["ok"] and first["output"] == "<hi>", first
        assert key in worker._kernels
        # The kernel is there: the next task's reference is never read.
        again = await anyio.to_thread.run_sync(worker.run_task, key, [Unreadable()], spec)
        assert again["ok"] and again["output"] == "<hi>", again
    finally:
        kernel = worker._kernels.pop(key, None)
        if kernel is not None:
            await kernel.aclose()
