"""Kernel overhead per model call and per agent run with one tool round.

All built-in plugins enabled (memory cache, prices, limits, console, jsonl, memory store);
the provider is the zero-latency scripted provider, so what is measured is the kernel:
policy, routing, cache lookup and store, retry/breaker bookkeeping, pricing, ledger and
events (and for the agent: the loop, tool validation and dispatch).

Each figure is the median of several rounds; each round is the mean over many calls.
Every request is different, so the cache misses and stores (the full path).
Last line: ``gateway_us=<N> agent_tool_round_us=<N>``.
"""

from __future__ import annotations

import statistics
import time

import anyio
from taskloom import Agent, hookimpl, load_kernel, run_agent
from taskloom.testing import register_plugin
from taskloom.types import Message, ModelRequest

ROUNDS = 7
CALLS = 2000
AGENT_RUNS = 500


class BenchTools:
    @hookimpl
    def taskloom_register_tools(self, register, settings):  # type: ignore[no-untyped-def]
        async def add(a: int, b: int) -> int:
            """Add two integers."""
            return a + b

        register(add)


async def main() -> None:
    config = {
        "taskloom": {"store": "memory", "cache": "memory", "default_model": "fake"},
        "models": {"fake": {"provider": "scripted", "default": "ok"}},
        "plugins": {"console": {"mode": "never"}},
    }
    with register_plugin(BenchTools(), "bench-tools"):
        kernel = load_kernel(config)
    enabled = sorted(kernel.plugins.enabled)
    print(f"plugins enabled: {', '.join(enabled)}")
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

    g = statistics.median(gateway_rounds)
    a = statistics.median(agent_rounds)
    print(f"gateway rounds (us/call): {', '.join(f'{x:.1f}' for x in gateway_rounds)}")
    print(f"agent rounds (us/run):    {', '.join(f'{x:.1f}' for x in agent_rounds)}")
    print(f"gateway_us={g:.1f} agent_tool_round_us={a:.1f}")


if __name__ == "__main__":
    anyio.run(main)
