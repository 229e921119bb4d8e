"""SQLite plugin benchmark: the response cache and the run store, from async code.

* cache hit latency: median of ``await cache.get(key)`` over 20,000 hits on a file of
  2,000 entries of 2 KiB (values read from the file, not from a Python dict); the median
  of ``--repeats`` such runs;
* cache writes per second: ``await cache.set(...)`` of 5,000 2 KiB values one after
  another, each returning once its value is committed (visible to other processes), and
  from 32 concurrent tasks; the median of ``--repeats`` runs;
* store overhead: the 10,000-task DAG of ``benchmarks/dag.py`` (100 layers x 100, each
  task an agent call to the scripted provider that sleeps 5-50 ms, the "full stack"
  configuration) with the SQLite store against the memory store: makespan, best of
  ``--rounds``. Every task is checkpointed (twice), every model call recorded and every
  event kept (``record_events``, on by default). Memory and SQLite runs alternate within
  the invocation, so a change in load (or in the engine) moves both sides. Also printed,
  not in the last line: the same DAG with events off, and with zero-duration tasks, where
  nothing hides the store's CPU cost (its worst case), with events on and off.

Last line: ``cache_hit_us=<N> cache_writes_per_s=<N> store_overhead_pct=<N>``

    python benchmarks/sqlite.py [--quick] [--rounds 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dag
from taskloom import load_kernel
from taskloom.testing import register_plugin
from taskloom.workflow import run_workflow
from taskloom_sqlite.cache import SqliteCache

VALUE = bytes(range(256)) * 8  # 2 KiB, about one cached chat response


async def cache_hit_us(folder: Path, entries: int = 2000, gets: int = 20_000) -> float:
    cache = SqliteCache(folder / f"hits-{time.monotonic_ns()}.sqlite", max_entries=entries * 2)
    assert await cache.ready()
    keys = [f"gpt:{i:064x}" for i in range(entries)]
    for key in keys:
        await cache.set(key, VALUE)
    samples = []
    clock = time.perf_counter_ns
    for i in range(gets):
        key = keys[(i * 7919) % entries]
        start = clock()
        value = await cache.get(key)
        samples.append(clock() - start)
        assert value is not None
    await cache.aclose()
    return statistics.median(samples) / 1000


async def cache_writes_per_s(folder: Path, n: int = 5000, concurrency: int = 1) -> float:
    cache = SqliteCache(folder / f"writes-{concurrency}-{time.monotonic_ns()}.sqlite", max_entries=n * 2)
    assert await cache.ready()
    per_task = n // concurrency

    async def writer(w: int) -> None:
        for i in range(per_task):
            await cache.set(f"gpt:{w}:{i}", VALUE)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for w in range(concurrency):
            tg.start_soon(writer, w)
    elapsed = time.perf_counter() - start
    assert cache.stats()["entries"] == per_task * concurrency
    await cache.aclose()
    return per_task * concurrency / elapsed


def dag_config(executor: str, store: str, folder: Path, events: bool = True) -> dict[str, Any]:
    config = dag.config(executor)
    config["taskloom"]["store"] = store
    # The plugin is enabled in both runs (its event sink makes the engine build events),
    # so the only difference measured is the store itself.
    config["taskloom"]["plugins"].append("sqlite")
    if store == "sqlite":
        config["plugins"] = {
            "sqlite": {"store_path": str(folder / f"runs-{time.monotonic_ns()}.sqlite"), "record_events": events}
        }
    return config


async def dag_seconds(
    store: str, folder: Path, layers: int, width: int, executor: str, zero: bool, events: bool = True
) -> float:
    spec, _ = dag.layered_dag(layers, width, seed=7, zero=zero)
    kernel = load_kernel(dag_config(executor, store, folder, events))
    ready = getattr(kernel.store, "ready", None)
    if ready is not None:
        await ready()  # open the file before the clock starts
    dag._settle_heap()
    start = time.perf_counter()
    result = await run_workflow(kernel, spec)
    elapsed = time.perf_counter() - start
    assert result.ok, result.run.error
    if store == "sqlite":
        await kernel.store.flush()
        calls = len(await kernel.store.get_calls(result.run.id))
        assert calls == layers * width, f"{calls} calls recorded, expected {layers * width}"
        if events:
            assert len(await kernel.store.get_events(result.run.id)) >= layers * width, "events were kept"
    await kernel.aclose()
    return elapsed


async def store_overhead(
    folder: Path, layers: int, width: int, rounds: int, zero: bool, events: bool = True
) -> tuple[float, float]:
    best = {"memory": float("inf"), "sqlite": float("inf")}
    for _ in range(rounds):
        for store in ("memory", "sqlite"):
            seconds = await dag_seconds(store, folder, layers, width, "local", zero, events)
            best[store] = min(best[store], seconds)
    return best["memory"], best["sqlite"]


async def main(quick: bool, rounds: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="taskloom-bench-") as tmp:
        folder = Path(tmp)
        hits = [await cache_hit_us(folder) for _ in range(repeats)]
        hit = statistics.median(hits)
        print(
            f"cache hit: median {hit:.1f} us (median of {repeats} runs of 20,000 gets of 2 KiB values, "
            f"2,000 entries on disk; runs {min(hits):.1f}-{max(hits):.1f} us)"
        )
        seq = [await cache_writes_per_s(folder) for _ in range(repeats)]
        sequential = statistics.median(seq)
        conc = [await cache_writes_per_s(folder, concurrency=32) for _ in range(repeats)]
        concurrent = statistics.median(conc)
        print(
            f"cache writes (each awaited set committed): {sequential:,.0f}/s one after another "
            f"(runs {min(seq):,.0f}-{max(seq):,.0f}), {concurrent:,.0f}/s from 32 tasks "
            f"(runs {min(conc):,.0f}-{max(conc):,.0f}); medians of {repeats} runs of 5,000"
        )
        layers, width = (30, 100) if quick else (100, 100)
        tasks = layers * width
        with register_plugin(dag.BenchPlugin(), "bench"):
            mem, sql = await store_overhead(folder, layers, width, rounds, zero=False)
            pct = (sql - mem) / mem * 100
            print(
                f"store, {tasks:,}-task DAG (tasks 5-50 ms, full stack, events kept): memory {mem:.3f} s, "
                f"sqlite {sql:.3f} s, overhead {pct:+.1f}%"
            )
            if not quick:
                nmem, nsql = await store_overhead(folder, layers, width, rounds, zero=False, events=False)
                print(
                    f"store, {tasks:,}-task DAG (tasks 5-50 ms, full stack, events off): memory {nmem:.3f} s, "
                    f"sqlite {nsql:.3f} s, overhead {(nsql - nmem) / nmem * 100:+.1f}%"
                )
            for events in (True, False):
                zmem, zsql = await store_overhead(folder, layers, width, rounds, zero=True, events=events)
                zpct = (zsql - zmem) / zmem * 100
                print(
                    f"store, {tasks:,}-task DAG (zero-duration tasks, worst case, events {'kept' if events else 'off'}):"
                    f" memory {zmem:.3f} s, sqlite {zsql:.3f} s, overhead {zpct:+.1f}% "
                    f"({(zsql - zmem) / tasks * 1e6:.0f} us per task)"
                )
    print(f"cache_hit_us={hit:.1f} cache_writes_per_s={sequential:.0f} store_overhead_pct={pct:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A 3,000-task DAG instead of 10,000.")
    parser.add_argument("--rounds", type=int, default=2, help="Runs of each DAG; the best counts.")
    parser.add_argument("--repeats", type=int, default=5, help="Runs of each cache measure; the median counts.")
    args = parser.parse_args()
    anyio.run(main, args.quick, args.rounds, args.repeats)
