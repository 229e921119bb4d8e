"""Sandbox latency: time from a ``python`` tool call to its result for ``print(1)``.

Goes through the kernel's tool dispatch (argument validation, timeout) into the sandbox
plugin: a fresh working directory, bubblewrap with new user/PID/IPC/UTS/network
namespaces, prlimit, the system Python, output capture, file listing, clean-up.
The one-time bubblewrap probe happens in a warm-up call that is not counted.

Also prints, for comparison, a bare ``python3 -c 'print(1)'`` start on the host (the floor)
and the same tool call with ``isolation = "none"``.

Last line: ``sandbox_ms=<median ms>`` (target: <= 60)

    python benchmarks/sandbox.py [--runs 50]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

import anyio
from taskloom import load_kernel


def kernel(isolation: str) -> Any:
    return load_kernel(
        {
            "taskloom": {"plugins": ["sandbox", "memory-cache", "memory-store", "local-executor"], "store": "memory"},
            "plugins": {"sandbox": {"isolation": isolation}},
        }
    )


async def measure(isolation: str, runs: int) -> list[float]:
    tool = kernel(isolation).tools.get("python")
    warm = await tool.run({"code": "print(1)"})
    if warm.is_error or "1" not in warm.content:
        sys.exit(f"the sandbox does not work here ({isolation}): {warm.content}")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = await tool.run({"code": "print(1)"})
        times.append((time.perf_counter() - start) * 1000)
        assert not result.is_error, result.content
    return times


def bare(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(["/usr/bin/python3", "-c", "print(1)"], check=True, capture_output=True)
        times.append((time.perf_counter() - start) * 1000)
    return times


def summary(name: str, times: list[float]) -> float:
    median = statistics.median(times)
    p90 = statistics.quantiles(times, n=10)[-1] if len(times) >= 10 else max(times)
    print(f"{name:<28} median {median:6.1f} ms   p90 {p90:6.1f} ms   min {min(times):6.1f} ms")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    summary("host python3 (no sandbox)", bare(args.runs))
    summary('tool, isolation = "none"', anyio.run(measure, "none", args.runs))
    median = summary('tool, isolation = "bwrap"', anyio.run(measure, "bwrap", args.runs))
    print(f"sandbox_ms={median:.0f}")


if __name__ == "__main__":
    main()
