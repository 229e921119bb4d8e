"""Ray executor benchmark: the 1,000-task random layered DAG on a local Ray cluster.

The DAG and the sleeping scripted provider are those of ``benchmarks/dag.py`` (20 layers x
50 tasks, each needing two random tasks of the layer above, each "working" for a seeded
5–50 ms inside the provider). Here every attempt runs on Ray: the driver's scheduler
submits it, a Ray worker rebuilds the kernel from the config (once per process) and runs
the agent loop, the outcome comes back and is checkpointed in the driver's memory store.

The local cluster gets many logical CPUs (``--cpus``, default 64) on however many cores the
machine has: the tasks sleep, so they need no core while they wait.

Prints, for ``--mode actors`` (async actors, attempts and outcomes through Ray's channels;
the default), ``calls`` (the same actors, one Ray call per batch: ``transport = "calls"``)
and ``tasks`` (one Ray task per attempt):
* makespan / critical path of the 1k DAG: the median of ``--runs`` runs (default 5) after a
  warm-up run that starts the workers, with the CPU time the driver and the actors used
  per attempt;
* per-task executor overhead: a chain of zero-duration tasks (each needs the one before)
  on Ray minus the same chain on the local executor, divided by its length: the latency
  one attempt adds by going through Ray (submit, serialise, run on the worker, return);
* in the actor modes, the CPU the driver and the actors use per second while one attempt
  waits 2 s, and while nothing runs;
* beside each mode, the share of CPU time the hypervisor gave to other guests meanwhile
  (``steal`` in /proc/stat; see ``benchmarks/dag.py``).

Last line: ``ray_dag1k_ratio=<R> ray_overhead_ms_per_task=<N>`` (for ``actors``, or the one ``--mode``).

    python benchmarks/ray.py [--seed 7] [--mode actors|calls|tasks|all] [--cpus 64]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

# This file is named ray.py: keep its folder off sys.path so `import ray` finds Ray.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import anyio  # noqa: E402
from taskloom import load_kernel  # noqa: E402
from taskloom.eventloop import run  # noqa: E402
from taskloom.testing import register_plugin  # noqa: E402
from taskloom.workflow import Workflow, check_workflow, run_workflow  # noqa: E402
from taskloom.workflow.planner import critical_path  # noqa: E402

DAG_FILE = str(_HERE / "dag.py")


def load_dag_module() -> ModuleType:
    """benchmarks/dag.py (its DAG generator and sleeping scripted provider)."""
    mod = sys.modules.get("taskloom_bench_dag")
    if mod is None:
        spec = importlib.util.spec_from_file_location("taskloom_bench_dag", DAG_FILE)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["taskloom_bench_dag"] = mod
        spec.loader.exec_module(mod)
    return mod


def worker_setup() -> None:
    """Ray worker_process_setup_hook (pickled by value from __main__): the bench provider
    becomes a plugin of the kernels this worker builds."""
    mod = load_dag_module()
    if getattr(mod, "registration", None) is None:
        mod.registration = register_plugin(mod.BenchPlugin(), "bench")  # kept: the plugin stays while it lives
        mod.registration.__enter__()


ACTORS = 1


def config(executor: str, mode: str) -> dict[str, Any]:
    ray = {"mode": "actors", "actors": ACTORS, "actor_concurrency": 200, "num_cpus": 0}
    if mode == "calls":
        ray["transport"] = "calls"
    elif mode == "tasks":
        ray.update(mode="tasks", num_cpus=1)
    return {
        "taskloom": {
            "store": "memory",
            "cache": "none",
            "executor": executor,
            "plugins": ["bench", "memory-store", "local-executor", "prices", "ray"],
        },
        "models": {"bench": {"provider": "bench-scripted"}},
        "plugins": {"ray": ray},
    }


def chain(n: int) -> Any:
    wf = Workflow(f"chain-{n}").agent("worker", model="bench", limits={"max_turns": 1})
    for i in range(n):
        wf.task(f"c{i}", agent="worker", prompt=f"step {i} sleep=0", needs=[f"c{i - 1}"] if i else [])
    return wf.build()


async def timed(kernel: Any, spec: Any, pids: list[int] | None = None) -> float:
    """Wall time of one run; with ``pids``, also adds the CPU time of this process and of
    those processes during the run to ``CPU["driver"]`` and ``CPU["actors"]``."""
    gc.collect()
    actors = [cpu_seconds(pid) or 0.0 for pid in pids or []]
    cpu = time.process_time()
    start = time.perf_counter()
    result = await run_workflow(kernel, spec)
    wall = time.perf_counter() - start
    if pids is not None:
        CPU["driver"] += time.process_time() - cpu
        CPU["actors"] += sum((cpu_seconds(pid) or 0.0) - before for pid, before in zip(pids, actors, strict=True))
    assert result.ok, result.run.error
    return wall


CPU = {"driver": 0.0, "actors": 0.0}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def actor_pids(kernel: Any) -> list[int]:
    """The pool's actor processes (actors mode), for their CPU time."""
    actors = getattr(kernel.executor, "_actors", [])
    return [await actor.pid.remote() for actor in actors]


async def idle_cpu(kernel: Any, pids: list[int]) -> str:
    """CPU the driver and the actors use per second while one attempt waits 2 s (they
    poll their channels, slowly), and then while nothing runs (the actors stopped polling)."""
    wf = Workflow("one-long-task").agent("worker", model="bench", limits={"max_turns": 1})
    wf.task("long", agent="worker", prompt="wait sleep=2")
    spec = wf.build()
    cpu, actors = time.process_time(), sum(cpu_seconds(pid) or 0.0 for pid in pids)
    wall = await timed(kernel, spec)
    waiting = (time.process_time() - cpu) / wall, (sum(cpu_seconds(pid) or 0.0 for pid in pids) - actors) / wall
    await anyio.sleep(1.0)  # past the actors' idle time: they stop polling
    cpu, actors = time.process_time(), sum(cpu_seconds(pid) or 0.0 for pid in pids)
    await anyio.sleep(2.0)
    idle = (time.process_time() - cpu) / 2.0, (sum(cpu_seconds(pid) or 0.0 for pid in pids) - actors) / 2.0
    return (
        f"CPU per second while an attempt waits: driver {waiting[0] * 1e3:.0f} ms, actors {waiting[1] * 1e3:.0f} ms; "
        f"with nothing to run: driver {idle[0] * 1e3:.0f} ms, actors {idle[1] * 1e3:.0f} ms"
    )


async def bench_mode(mode: str, seed: int, chain_len: int, runs: int) -> tuple[float, float, float, float, str]:
    dag = load_dag_module()
    spec, _ = dag.layered_dag(20, 50, seed)
    kernel = load_kernel(config("ray", mode))
    _, critical, _, _ = critical_path(check_workflow(spec, kernel))
    cold = await timed(kernel, spec)  # starts the workers, builds their kernels
    pids = await actor_pids(kernel)
    CPU.update(driver=0.0, actors=0.0)
    walls = [await timed(kernel, spec, pids) for _ in range(runs)]
    makespan = statistics.median(walls)
    attempts = runs * len(spec.tasks)
    ratios = ", ".join(f"{wall / critical:.3f}" for wall in walls)
    cpu = f"driver {CPU['driver'] / attempts * 1e3:.2f} ms"
    if pids:
        cpu += f", actors {CPU['actors'] / attempts * 1e3:.2f} ms"
    detail = f"warm runs {ratios}; CPU per attempt: {cpu}"
    if pids:
        detail += "; " + await idle_cpu(kernel, pids)
    local = load_kernel(config("local", mode))
    await timed(local, chain(chain_len))  # warm-up
    local_wall = await timed(local, chain(chain_len))
    await local.aclose()
    ray_wall = await timed(kernel, chain(chain_len))
    await kernel.aclose()  # the actors; the cluster is shut down at the end
    overhead_ms = (ray_wall - local_wall) / chain_len * 1e3
    return makespan / critical, overhead_ms, cold / critical, critical, detail


async def main(seed: int, modes: list[str], cpus: int, chain_len: int, runs: int) -> None:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read by Ray at import: stay on 127.0.0.1
    import ray

    start = time.perf_counter()
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"worker_process_setup_hook": worker_setup},
    )
    print(
        f"local Ray cluster: {cpus} logical CPUs on {os.cpu_count()} cores, started in {time.perf_counter() - start:.1f} s"
    )
    dag = load_dag_module()
    results: dict[str, tuple[float, float]] = {}
    try:
        with register_plugin(dag.BenchPlugin(), "bench"):
            for mode in modes:
                steal = dag.CpuSteal()
                ratio, overhead_ms, cold_ratio, critical, detail = await bench_mode(mode, seed, chain_len, runs)
                results[mode] = (ratio, overhead_ms)
                print(
                    f"mode {mode:6}: dag 1k (20 x 50) ratio {ratio:.3f}, median of {runs} (critical path "
                    f"{critical:.3f} s; first, cold run {cold_ratio:.3f}; {detail}), overhead {overhead_ms:.2f} ms "
                    f"per task ({chain_len}-task chain vs the local executor; {steal})",
                    flush=True,
                )
    finally:
        ray.shutdown()
    ratio, overhead_ms = results[modes[0]]
    print(f"ray_dag1k_ratio={ratio:.3f} ray_overhead_ms_per_task={overhead_ms:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mode", choices=["actors", "calls", "tasks", "all"], default="all")
    parser.add_argument("--cpus", type=int, default=64, help="Logical CPUs of the local Ray cluster.")
    parser.add_argument("--actors", type=int, default=ACTORS, help="Actors in the pool (mode actors).")
    parser.add_argument("--chain", type=int, default=200, help="Length of the zero-duration chain.")
    parser.add_argument("--runs", type=int, default=5, help="Warm runs of the DAG (the ratio is their median).")
    args = parser.parse_args()
    ACTORS = args.actors
    modes = ["actors", "calls", "tasks"] if args.mode == "all" else [args.mode]
    run(main, args.seed, modes, args.cpus, args.chain, args.runs)
