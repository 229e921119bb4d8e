"""Kernel overhead per model call and per agent run with one tool round.

What runs: the kernel with every built-in plugin enabled (memory cache, memory store,
prices, limits, console, jsonl, local executor, basic tools, the scripted provider) and
one benchmark tool; the provider is the zero-latency scripted provider, so what is
measured is the kernel: policy, routing, cache lookup and store, timeout, retry and
breaker bookkeeping, pricing, ledger and events (and for the agent: the loop, the tool
policy check, argument validation, dispatch, the tool ledger and events).

The sinks are as a user has them by default outside a terminal: ``console`` is enabled
but prints nothing (``mode = "never"``, which is what ``auto`` does when stderr is not a
terminal); ``jsonl`` is enabled but has no path configured. Both say so at assembly
(``taskloom_wants_events``), as does ``limits``, whose tiers would count tokens or runs
from events and which has none: with no sink that wants events, none is built (the run
prints which sinks get events). ``limits`` runs its context-window check on every
deployment of every call (``taskloom_check_kinds``: with no tiers it checks nothing else);
``prices`` prices every call (the scripted provider is local: zero dollars).

Every request is different (a serial number in the prompt), so the cache misses and
stores every time: the full path; the run checks that the cache never answered.

Each figure is the median of several rounds; each round is the mean over many calls.
``--installed`` measures with every installed plugin instead (first-party plugins such
as router or sqlite add their own hooks; they have their own benchmarks).
Last line: ``gateway_us=<N> agent_tool_round_us=<N>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
from taskloom import Agent, hookimpl, load_kernel, run_agent
from taskloom.testing import register_plugin
from taskloom.types import Message, ModelRequest

ROUNDS = 7
CALLS = 2000
AGENT_RUNS = 500
BUILTIN = [
    "memory-cache",
    "memory-store",
    "prices",
    "limits",
    "console",
    "jsonl",
    "local-executor",
    "basic-tools",
    "scripted",
]


class BenchTools:
    @hookimpl
    def taskloom_register_tools(self, register, settings):  # type: ignore[no-untyped-def]
        async def add(a: int, b: int) -> int:
            """Add two integers."""
            return a + b

        register(add)


async def main(installed: bool) -> None:
    taskloom = {"store": "memory", "cache": "memory", "default_model": "fake"}
    if not installed:
        taskloom["plugins"] = [*BUILTIN, "bench-tools"]  # type: ignore[assignment]
    config = {
        "taskloom": taskloom,
        "models": {"fake": {"provider": "scripted", "default": "ok"}},
        "plugins": {"console": {"mode": "never"}},
    }
    with register_plugin(BenchTools(), "bench-tools"):
        kernel = load_kernel(config)
    enabled = sorted(kernel.plugins.enabled)
    print(f"plugins enabled: {', '.join(enabled)}")
    print(f"sinks that get events: {', '.join(kernel.event_sinks) or 'none'}")
    print(f"action kinds some policy checks: {', '.join(sorted(kernel.checked)) or 'none'}")
    provider = kernel.provider("fake")
    gateway = kernel.gateway

    serial = iter(range(10**9))
    gateway_rounds = []
    for _ in range(ROUNDS):
        requests = [
            ModelRequest(model="fake", messages=[Message.user(f"question {next(serial)}")]) for _ in range(CALLS)
        ]
        start = time.perf_counter()
        for request in requests:
            await gateway.complete(request)
        gateway_rounds.append((time.perf_counter() - start) / CALLS * 1e6)
        provider.requests.clear()

    agent = Agent(name="bench", model="fake", tools=["add"])
    provider.default = None
    agent_rounds = []
    for _ in range(ROUNDS):
        for i in range(AGENT_RUNS):
            provider.add_tool_call("add", {"a": i, "b": 1}).add_text(f"the answer is {i + 1}")
        start = time.perf_counter()
        for i in range(AGENT_RUNS):
            result = await run_agent(kernel, agent, f"add {i} and 1 ({next(serial)})")
            assert result.ok, result.detail
        agent_rounds.append((time.perf_counter() - start) / AGENT_RUNS * 1e6)
        provider.requests.clear()

    assert kernel.cache is not None
    stats = kernel.cache.stats()
    assert stats["hits"] == 0, f"the cache answered {stats['hits']} calls: the benchmark must miss every time"
    g = statistics.median(gateway_rounds)
    a = statistics.median(agent_rounds)
    print(f"cache: {stats['misses']} misses, {stats['hits']} hits")
    print(f"gateway rounds (us/call): {', '.join(f'{x:.1f}' for x in gateway_rounds)}")
    print(f"agent rounds (us/run):    {', '.join(f'{x:.1f}' for x in agent_rounds)}")
    print(f"gateway_us={g:.1f} agent_tool_round_us={a:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--installed", action="store_true", help="enable every installed plugin, not only built-ins")
    anyio.run(main, parser.parse_args().installed)
