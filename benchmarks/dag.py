"""Workflow scheduler benchmark: random layered DAGs.

Each task depends on two random tasks of the layer above and "works" for a seeded
5–50 ms (the delay is written in its prompt). Two ways to do the work, both through the
real engine (checks, scheduler, executor protocol, memory run store with two checkpoints
per task):

* ``scheduler``: an executor that sleeps for the delay: measures the scheduling policy;
* ``full stack``: the built-in local executor running the agent loop and the gateway
  against the scripted provider, which sleeps for the delay before answering.

Prints, with unlimited concurrency:
* makespan / critical path for 1,000 tasks (20 layers x 50) and 10,000 (100 x 100);
* the scheduler's own overhead per task: the 10k DAG with zero-duration tasks on an
  executor that returns at once (scheduling, templating, checkpoints), wall time divided
  by tasks, best of three;
* peak memory of the process (max RSS) in MiB.

The last line reports the ``scheduler`` ratios.

Last line: ``dag1k_ratio=<R> dag10k_ratio=<R> overhead_us_per_task=<N> peak_mib=<N>``

    python benchmarks/dag.py [--seed 7] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
from taskloom import hookimpl, load_kernel
from taskloom.testing import ScriptedProvider, register_plugin
from taskloom.types import ModelRequest, ModelResponse
from taskloom.workflow import TaskOutcome, TaskSpec, Workflow, check_workflow, run_workflow
from taskloom.workflow.planner import critical_path


class SleepyScripted(ScriptedProvider):
    """The scripted provider, answering after the delay named in the prompt (``sleep=0.023``)."""

    async def complete(self, request: ModelRequest) -> ModelResponse:
        prompt = request.messages[-1].text
        delay = float(prompt.rsplit("sleep=", 1)[1].split()[0])
        await anyio.sleep(delay)
        return await super().complete(request)


class InstantExecutor:
    """Returns at once: what is left is the scheduler's own cost."""

    async def run(self, spec: TaskSpec, kernel: Any, budget: Any = None) -> TaskOutcome:
        return TaskOutcome(ok=True, output="ok", text="ok")

    async def aclose(self) -> None:
        return None


class SleepExecutor:
    """Sleeps for the delay in the prompt: the task's work, minus the agent stack."""

    async def run(self, spec: TaskSpec, kernel: Any, budget: Any = None) -> TaskOutcome:
        await anyio.sleep(float(spec.prompt.rsplit("sleep=", 1)[1]))
        return TaskOutcome(ok=True, output="ok", text="ok")

    async def aclose(self) -> None:
        return None


class BenchPlugin:
    @hookimpl
    def taskloom_register_providers(self, register: Callable[..., None], settings: Any) -> None:
        register("bench-scripted", lambda config, settings: SleepyScripted(config.alias, default="done"))

    @hookimpl
    def taskloom_register_executors(self, register: Callable[..., None], settings: Any) -> None:
        register("instant", lambda settings: InstantExecutor())
        register("sleep", lambda settings: SleepExecutor())


def layered_dag(layers: int, width: int, seed: int, zero: bool = False) -> tuple[Any, list[float]]:
    rng = random.Random(seed)
    wf = Workflow(f"dag-{layers}x{width}").agent("worker", model="bench", limits={"max_turns": 1})
    durations: list[float] = []
    for layer in range(layers):
        for k in range(width):
            d = 0.0 if zero else round(rng.uniform(0.005, 0.050), 4)
            durations.append(d)
            needs = [f"t{layer - 1}_{j}" for j in rng.sample(range(width), 2)] if layer else []
            wf.task(
                f"t{layer}_{k}", agent="worker", prompt=f"task {layer}.{k} sleep={d}", needs=needs, estimate=d or None
            )
    return wf.build(), durations


def config(executor: str) -> dict[str, Any]:
    return {
        "taskloom": {
            "store": "memory",
            "cache": "none",
            "executor": executor,
            "plugins": ["bench", "memory-store", "local-executor", "prices"],
        },
        "models": {"bench": {"provider": "bench-scripted"}},
    }


def _settle_heap() -> None:
    """Collect, then freeze the objects built so far (the DAG itself), so the collector's
    full passes during the run do not walk them (``gc.freeze``, as latency-sensitive
    Python services do)."""
    gc.collect()
    gc.freeze()


async def makespan_ratio(layers: int, width: int, seed: int, executor: str) -> tuple[float, float, float]:
    spec, _ = layered_dag(layers, width, seed)
    kernel = load_kernel(config(executor))
    graph = check_workflow(spec, kernel)
    _, critical, _, _ = critical_path(graph)
    _settle_heap()
    start = time.perf_counter()
    result = await run_workflow(kernel, spec)
    makespan = time.perf_counter() - start
    gc.unfreeze()
    assert result.ok, result.run.error
    await kernel.aclose()
    return makespan, critical, makespan / critical


async def overhead(layers: int, width: int, seed: int, repeat: int = 3) -> float:
    spec, _ = layered_dag(layers, width, seed, zero=True)
    best = float("inf")
    for _ in range(repeat):
        kernel = load_kernel(config("instant"))
        _settle_heap()
        start = time.perf_counter()
        result = await run_workflow(kernel, spec)
        best = min(best, time.perf_counter() - start)
        gc.unfreeze()
        assert result.ok, result.run.error
        await kernel.aclose()
    return best / len(spec.tasks) * 1e6


def peak_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


async def main(seed: int, quick: bool) -> None:
    big = (30, 100) if quick else (100, 100)
    ratios: dict[str, tuple[float, float]] = {}
    with register_plugin(BenchPlugin(), "bench"):
        for label, executor in (("scheduler", "sleep"), ("full stack", "local")):
            m1, c1, r1 = await makespan_ratio(20, 50, seed, executor)
            print(f"{label:>10}: dag 1k  (20 x 50):   makespan {m1:.3f} s, critical path {c1:.3f} s, ratio {r1:.3f}")
            m2, c2, r2 = await makespan_ratio(*big, seed, executor)
            print(
                f"{label:>10}: dag 10k ({big[0]} x {big[1]}): makespan {m2:.3f} s, critical path {c2:.3f} s, ratio {r2:.3f}"
            )
            ratios[label] = (r1, r2)
        r1, r2 = ratios["scheduler"]
        us = await overhead(100, 100, seed)
        print(f"scheduler overhead: {us:.1f} us per task (10,000 zero-duration tasks, instant executor)")
        mib = peak_mib()
        print(f"peak memory (max RSS): {mib:.1f} MiB")
    print(f"dag1k_ratio={r1:.3f} dag10k_ratio={r2:.3f} overhead_us_per_task={us:.1f} peak_mib={mib:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="A 3,000-task DAG instead of 10,000.")
    args = parser.parse_args()
    anyio.run(main, args.seed, args.quick)
