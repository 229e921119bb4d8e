"""Workflow engine benchmark: random layered DAGs on the scripted provider.

Each task depends on two random tasks of the layer above and "works" for a seeded
5–50 ms: its prompt names the delay (``sleep=0.023``) and the scripted provider answers
after it, as a scripted step with that ``delay``. Everything else is the real engine:
checks, the scheduler, the ``local`` executor, the agent loop, the gateway (policy, cost
model, ledger) and the memory run store with two checkpoints per task. Unlimited
concurrency.

Prints:
* makespan / critical path for 1,000 tasks (20 layers x 50; median of 7 runs) and
  10,000 tasks (100 x 100; median of 5 runs);
* the scheduler's own overhead per task: the 10k DAG run with an executor that returns
  at once, wall time divided by tasks, best of three (checks, planning, scheduling,
  templating, both checkpoints of every task, events, the run's totals); and beside it
  the whole stack per task, the same DAG with zero-delay scripted answers through the
  ``local`` executor (agent loop, gateway, pricing, ledger and provider call added);
* peak memory of the process (max RSS) in MiB;
* beside each median, the share of CPU time the hypervisor gave to other guests meanwhile
  (``steal`` in /proc/stat): a contended host raises every ratio, the floor's too;
* for reference, the event loop's own floor: the tasks of each DAG's critical path slept
  one after the other with ``anyio.sleep`` and nothing else, so even this chain takes
  longer than the sum of its delays (by the kernel's timer slack); the engine cannot do
  better than this ratio.

Everything runs on ``taskloom.eventloop.run`` (as ``taskloom run`` does): asyncio with
timers that wake on time, the loop thread's timer slack at its least, and the garbage
collector paced for the run (``taskloom.collector``). ``TASKLOOM_PRECISE_TIMERS=0`` runs it
on the stock loop, whose epoll waits whole milliseconds (rounded up), so every timer fires
up to a millisecond late; ``TASKLOOM_GC_THRESHOLD=0`` leaves the collector at Python's pace.

``--quick`` runs fewer repetitions (3 and 1), never a smaller DAG.

Last line: ``dag1k_ratio=<R> dag10k_ratio=<R> overhead_us_per_task=<N> peak_mib=<N>``

    python benchmarks/dag.py [--seed 7] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
from taskloom import hookimpl, load_kernel
from taskloom.eventloop import precise_timers_enabled, run
from taskloom.testing import ScriptedProvider, Step, register_plugin
from taskloom.types import ModelRequest, ModelResponse
from taskloom.workflow import TaskOutcome, TaskSpec, Workflow, check_workflow, run_workflow
from taskloom.workflow.planner import critical_path


class SleepyScripted(ScriptedProvider):
    """The scripted provider, answering after the delay named in the prompt
    (``sleep=0.023``): each request gets a scripted step with that ``delay``."""

    def __init__(self, name: str) -> None:
        super().__init__(name, default="done")
        self.requests = deque(maxlen=8)  # type: ignore[assignment]  # a 10k-task run keeps no history

    async def complete(self, request: ModelRequest) -> ModelResponse:
        prompt = request.messages[-1].text
        delay = float(prompt.rsplit("sleep=", 1)[1].split()[0])
        # Queued here and taken at once by the scripted provider (no await in between), so
        # concurrent tasks never swap steps.
        self.queue.appendleft(Step(text="done", delay=delay))
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
        register("bench-scripted", lambda config, settings: SleepyScripted(config.alias))

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
    """Collect the garbage of what ran before, so no run starts with another's to collect.
    (The engine itself freezes what is alive when its run starts: ``taskloom.collector``.)"""
    gc.collect()


async def makespan_ratio(layers: int, width: int, seed: int, executor: str) -> tuple[float, float, float]:
    spec, _ = layered_dag(layers, width, seed)
    kernel = load_kernel(config(executor))
    graph = check_workflow(spec, kernel)
    _, critical, _, _ = critical_path(graph)
    _settle_heap()
    start = time.perf_counter()
    result = await run_workflow(kernel, spec)
    makespan = time.perf_counter() - start
    assert result.ok, result.run.error
    await kernel.aclose()
    return makespan, critical, makespan / critical


async def overhead(layers: int, width: int, seed: int, executor: str, repeat: int = 3) -> float:
    """Microseconds per task for the zero-delay DAG on ``executor``, best of ``repeat``."""
    spec, _ = layered_dag(layers, width, seed, zero=True)
    best = float("inf")
    for _ in range(repeat):
        kernel = load_kernel(config(executor))
        _settle_heap()
        start = time.perf_counter()
        result = await run_workflow(kernel, spec)
        best = min(best, time.perf_counter() - start)
        assert result.ok, result.run.error
        await kernel.aclose()
    return best / len(spec.tasks) * 1e6


def _cpu_times() -> tuple[int, int] | None:
    """(steal, total) CPU time so far from /proc/stat, in clock ticks; None without it."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    return (ticks[7], sum(ticks)) if len(ticks) == 8 else None


class CpuSteal:
    """How much of the machine's CPU time the hypervisor gave to other guests ("steal" in
    /proc/stat) since this was made. On a contended host every ratio rises with it, the
    bare chain's floor included: it tells a loaded minute from a change in the engine."""

    def __init__(self) -> None:
        self.start = _cpu_times()

    def __str__(self) -> str:
        end = _cpu_times()
        if self.start is None or end is None or end[1] <= self.start[1]:
            return "host CPU steal unknown"
        return f"host CPU steal {(end[0] - self.start[0]) / (end[1] - self.start[1]):.1%}"


def peak_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


async def floor_ratio(layers: int, width: int, seed: int) -> float:
    """Makespan / critical path of the critical path's tasks slept one after the other."""
    spec, durations = layered_dag(layers, width, seed)
    graph = check_workflow(spec)
    path, critical, _, _ = critical_path(graph)
    delays = [durations[graph.index[tid]] for tid in path]
    start = time.perf_counter()
    for delay in delays:
        await anyio.sleep(delay)
    return (time.perf_counter() - start) / critical


async def median_ratio(label: str, layers: int, width: int, seed: int, runs: int) -> float:
    ratios = []
    steal = CpuSteal()
    for n in range(runs):
        makespan, critical, ratio = await makespan_ratio(layers, width, seed, "local")
        ratios.append(ratio)
        print(f"{label} ({layers} x {width}) run {n + 1}/{runs}: makespan {makespan:.3f} s, "
              f"critical path {critical:.3f} s, ratio {ratio:.3f}", flush=True)  # fmt: skip
    median = statistics.median(ratios)
    print(f"{label}: median ratio {median:.3f} of {runs} runs (min {min(ratios):.3f}, max {max(ratios):.3f}; {steal})")
    return median


async def main(seed: int, quick: bool) -> None:
    runs_1k, runs_10k, repeat = (3, 1, 1) if quick else (7, 5, 3)
    with register_plugin(BenchPlugin(), "bench"):
        r1 = await median_ratio("dag 1k", 20, 50, seed, runs_1k)
        r2 = await median_ratio("dag 10k", 100, 100, seed, runs_10k)
        us = await overhead(100, 100, seed, "instant", repeat)
        print(
            f"scheduler overhead: {us:.1f} us per task (10,000 tasks, an executor that returns at once, best of {repeat})"
        )
        stack = await overhead(100, 100, seed, "local", repeat)
        print(
            f"whole stack: {stack:.1f} us per task (same DAG, zero-delay scripted answers through the local executor)"
        )
        mib = peak_mib()
        print(f"peak memory (max RSS): {mib:.1f} MiB")
        f1, f2 = await floor_ratio(20, 50, seed), await floor_ratio(100, 100, seed)
        loop = "precise timers" if precise_timers_enabled() else "stock asyncio loop"
        print(f"event-loop floor (the critical path slept as a bare chain, {loop}): 1k {f1:.3f}, 10k {f2:.3f}")
    print(f"dag1k_ratio={r1:.3f} dag10k_ratio={r2:.3f} overhead_us_per_task={us:.1f} peak_mib={mib:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="Fewer repetitions (same DAG sizes).")
    args = parser.parse_args()
    run(main, args.seed, args.quick)
