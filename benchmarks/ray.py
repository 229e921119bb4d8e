"""Ray executor benchmark: the 1,000-task random layered DAG on a local Ray cluster.

The DAG and the sleeping scripted provider are those of ``benchmarks/dag.py`` (20 layers x
50 tasks, each needing two random tasks of the layer above, each "working" for a seeded
5–50 ms inside the provider). Here every attempt runs on Ray: the driver's scheduler
submits it, a Ray worker rebuilds the kernel from the config (once per process) and runs
the agent loop, the outcome comes back and is checkpointed in the driver's memory store.

The local cluster gets many logical CPUs (``--cpus``, default 64) on however many cores the
machine has: the tasks sleep, so they need no core while they wait.

Prints, for ``--mode actors`` (async actors, default) and ``tasks`` (one Ray task per attempt):
* makespan / critical path of the 1k DAG (after a warm-up run that starts the workers);
* per-task executor overhead: a chain of zero-duration tasks (each needs the one before)
  on Ray minus the same chain on the local executor, divided by its length: the latency
  one attempt adds by going through Ray (submit, serialise, run on the worker, return).

Last line: ``ray_dag1k_ratio=<R> ray_overhead_ms_per_task=<N>`` (for ``--mode``).

    python benchmarks/ray.py [--seed 7] [--mode actors|tasks|both] [--cpus 64]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
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
    return {
        "taskloom": {
            "store": "memory",
            "cache": "none",
            "executor": executor,
            "plugins": ["bench", "memory-store", "local-executor", "prices", "ray"],
        },
        "models": {"bench": {"provider": "bench-scripted"}},
        "plugins": {
            "ray": {"mode": mode, "actors": ACTORS, "actor_concurrency": 200, "num_cpus": 1 if mode == "tasks" else 0}
        },
    }


def chain(n: int) -> Any:
    wf = Workflow(f"chain-{n}").agent("worker", model="bench", limits={"max_turns": 1})
    for i in range(n):
        wf.task(f"c{i}", agent="worker", prompt=f"step {i} sleep=0", needs=[f"c{i - 1}"] if i else [])
    return wf.build()


async def timed(kernel: Any, spec: Any) -> float:
    gc.collect()
    start = time.perf_counter()
    result = await run_workflow(kernel, spec)
    wall = time.perf_counter() - start
    assert result.ok, result.run.error
    return wall


async def bench_mode(mode: str, seed: int, chain_len: int) -> tuple[float, float, float, float]:
    dag = load_dag_module()
    spec, _ = dag.layered_dag(20, 50, seed)
    kernel = load_kernel(config("ray", mode))
    _, critical, _, _ = critical_path(check_workflow(spec, kernel))
    cold = await timed(kernel, spec)  # starts the workers, builds their kernels
    makespan = await timed(kernel, spec)
    local = load_kernel(config("local", mode))
    await timed(local, chain(chain_len))  # warm-up
    local_wall = await timed(local, chain(chain_len))
    await local.aclose()
    ray_wall = await timed(kernel, chain(chain_len))
    await kernel.aclose()  # the actors; the cluster is shut down at the end
    overhead_ms = (ray_wall - local_wall) / chain_len * 1e3
    return makespan / critical, overhead_ms, cold / critical, critical


async def main(seed: int, modes: list[str], cpus: int, chain_len: int) -> None:
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
                ratio, overhead_ms, cold_ratio, critical = await bench_mode(mode, seed, chain_len)
                results[mode] = (ratio, overhead_ms)
                print(
                    f"mode {mode:6}: dag 1k (20 x 50) ratio {ratio:.3f} (critical path {critical:.3f} s; "
                    f"first, cold run {cold_ratio:.3f}), overhead {overhead_ms:.2f} ms per task "
                    f"({chain_len}-task chain vs the local executor)"
                )
    finally:
        ray.shutdown()
    ratio, overhead_ms = results[modes[0]]
    print(f"ray_dag1k_ratio={ratio:.3f} ray_overhead_ms_per_task={overhead_ms:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mode", choices=["actors", "tasks", "both"], default="both")
    parser.add_argument("--cpus", type=int, default=64, help="Logical CPUs of the local Ray cluster.")
    parser.add_argument("--actors", type=int, default=ACTORS, help="Actors in the pool (mode actors).")
    parser.add_argument("--chain", type=int, default=200, help="Length of the zero-duration chain.")
    args = parser.parse_args()
    ACTORS = args.actors
    modes = ["actors", "tasks"] if args.mode == "both" else [args.mode]
    anyio.run(main, args.seed, modes, args.cpus, args.chain)
