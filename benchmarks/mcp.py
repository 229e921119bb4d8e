"""MCP bridge overhead: ``mcp-server-time``'s ``get_current_time`` through an agent's tool
dispatch, against the same call through a raw SDK ``ClientSession.call_tool`` on an already
open session.

The agent path is the agent loop's own per-call dispatch (``taskloom.agent._run_tool_call``:
policy check, argument check against the tool's JSON Schema, the hop to the MCP bridge's
event-loop thread, result mapping, ledger record, event), on a kernel with the built-in
plugins. The SDK path is ``session.call_tool`` over stdio to a second server process. Both
servers are started and warmed up first; rounds of calls alternate between the two paths so
machine noise hits both alike.

A third path, for the breakdown only: the bridge's own session called with
``ClientSession.call_tool`` on the bridge's event-loop thread, timed there (no hop, no
taskloom code); the agent path minus this one is what taskloom adds on top of its session.

Last line: ``mcp_vs_sdk=<R>``: per round, median per-call time through taskloom over the
median through the SDK; R is the median over the rounds (target <= 1.10).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

# This file is named mcp.py: keep its folder off sys.path so `import mcp` finds the SDK.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.modules.pop("mcp", None)

import anyio  # noqa: E402
from taskloom import Agent, load_kernel  # noqa: E402
from taskloom.types import RequestMeta, ToolCall  # noqa: E402

ROUNDS = 12
CALLS = 60
WARMUP = 40
SERVER = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}
ARGS = {"timezone": "UTC"}


def agent_dispatch(kernel: Any) -> Any:
    """One call through the agent loop's dispatch (falls back to the registry's)."""
    name = "time.get_current_time"
    try:
        from taskloom.agent import _Run, _run_tool_call

        agent = Agent(name="bench", model="", tools=[name])
        state = _Run(kernel, agent, RequestMeta(agent="bench"), None)
        tools = {name: kernel.tools.get(name)}

        async def one(i: int) -> None:
            result = await _run_tool_call(state, tools, ToolCall(id=f"c{i}", name=name, arguments=ARGS))
            if result.is_error:
                raise RuntimeError(result.content)
            state.tool_log.clear()

        return one
    except ImportError:

        async def fallback(i: int) -> None:
            result = await kernel.tools.call(ToolCall(id=f"c{i}", name=name, arguments=ARGS))
            if result.is_error:
                raise RuntimeError(result.content)

        return fallback


async def main() -> None:
    import taskloom_mcp
    from mcp import ClientSession, StdioServerParameters, stdio_client

    kernel = load_kernel(
        {
            "taskloom": {"store": "memory", "cache": "memory"},
            "plugins": {"mcp": {"servers": {"time": SERVER}, "cache_tools": False}},
        }
    )
    bridge = taskloom_mcp.bridge_of(kernel)
    if bridge is None or "time.get_current_time" not in kernel.tools:
        raise SystemExit(f"the mcp plugin did not register time.get_current_time: {kernel.plugins.failed}")
    startup = bridge.startup_s.get("time")
    taskloom_call = agent_dispatch(kernel)

    params = StdioServerParameters(command=SERVER["command"], args=SERVER["args"])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()

        async def sdk_call(i: int) -> None:
            result = await session.call_tool("get_current_time", ARGS)
            if result.is_error:
                raise RuntimeError(result.content)

        async def timed(fn: Any, n: int) -> list[float]:
            out = []
            for i in range(n):
                start = time.perf_counter()
                await fn(i)
                out.append(time.perf_counter() - start)
            return out

        own_session = bridge.connections["time"]._session

        async def own_call(i: int) -> None:  # runs on the bridge's loop
            result = await own_session.call_tool("get_current_time", ARGS)
            if result.is_error:
                raise RuntimeError(result.content)

        await timed(taskloom_call, WARMUP)
        await timed(sdk_call, WARMUP)
        await bridge.hub.call(timed(own_call, WARMUP))
        ours: list[float] = []
        sdk: list[float] = []
        own: list[float] = []
        ratios: list[float] = []
        for r in range(ROUNDS):
            first, second = (taskloom_call, sdk_call) if r % 2 == 0 else (sdk_call, taskloom_call)
            a = await timed(first, CALLS)
            b = await timed(second, CALLS)
            round_ours, round_sdk = (a, b) if first is taskloom_call else (b, a)
            ours.extend(round_ours)
            sdk.extend(round_sdk)
            ratios.append(statistics.median(round_ours) / statistics.median(round_sdk))
            own.extend(await bridge.hub.call(timed(own_call, CALLS // 2)))

    await kernel.aclose()
    taskloom_mcp.close(kernel)
    m_ours, m_sdk = statistics.median(ours), statistics.median(sdk)
    if startup is not None:
        print(f"server start + initialize + tools/list at kernel assembly: {startup * 1000:.0f} ms")
    print(f"calls per path: {len(ours)}")
    print(
        f"agent dispatch -> MCP bridge: median {m_ours * 1e6:.0f} us  (p90 {statistics.quantiles(ours, n=10)[-1] * 1e6:.0f} us)"
    )
    print(
        f"raw SDK ClientSession.call_tool: median {m_sdk * 1e6:.0f} us  (p90 {statistics.quantiles(sdk, n=10)[-1] * 1e6:.0f} us)"
    )
    print(f"overhead per call: {(m_ours - m_sdk) * 1e6:.0f} us")
    m_own = statistics.median(own)
    print(
        f"breakdown: the bridge's session called on its own loop: median {m_own * 1e6:.0f} us; "
        f"agent dispatch adds {(m_ours - m_own) * 1e6:.0f} us to it (thread hop and taskloom's code)"
    )
    print(f"per-round ratios: {' '.join(f'{r:.2f}' for r in ratios)}")
    # The median of the per-round ratios: each round pair shares the machine's load of the moment.
    print(f"mcp_vs_sdk={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    anyio.run(main)
