"""Benchmark (llamacpp part of ``benchmarks/providers.py``): a 32-token generation through
the taskloom llamacpp provider divided by the same generation with raw ``llama_cpp.Llama``
on the same loaded model, prompt and sampling settings (greedy). Each run times both, in
alternating order; the figure is the median of the per-run ratios (robust to drifting
background load). The ratio of medians and of CPU time are printed too.

Prints ``llamacpp_vs_raw=<R>`` last (target ≤ 1.02).
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
from taskloom.config import ModelConfig
from taskloom.types import Message, ModelRequest
from taskloom_llamacpp.provider import LlamaCppProvider

TOKENS = 32
PROMPT = "Write a short story about a lighthouse keeper."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    provider = LlamaCppProvider.from_config(ModelConfig(alias="local", provider="llamacpp"))
    model = provider.loaded()
    llama = model.llama
    messages = [Message.user(PROMPT)]
    request = ModelRequest(model="local", messages=messages, temperature=0, max_tokens=TOKENS, seed=1)
    prompt_text, added_special = provider.render(messages)
    prompt_tokens = llama.tokenize(prompt_text.encode(), add_bos=not added_special, special=True)

    def raw() -> int:
        out = llama.create_completion(prompt_tokens, max_tokens=TOKENS, temperature=0, repeat_penalty=1.0, seed=1)
        return int(out["usage"]["completion_tokens"])  # type: ignore[index]

    async def plugin() -> int:
        response = await provider.complete(request)
        return response.usage.output_tokens

    def reset() -> None:
        llama.reset()  # no KV-cache reuse between runs: each run evaluates the prompt
        llama._ctx.kv_cache_clear()

    async def timed_raw() -> tuple[float, float]:
        reset()
        wall, cpu = time.perf_counter(), time.process_time()
        assert raw() == TOKENS
        return time.perf_counter() - wall, time.process_time() - cpu

    async def timed_plugin() -> tuple[float, float]:
        reset()
        wall, cpu = time.perf_counter(), time.process_time()
        assert await plugin() == TOKENS
        return time.perf_counter() - wall, time.process_time() - cpu

    async def run() -> None:
        for _ in range(2):  # warm up both paths
            await timed_raw()
            await timed_plugin()
        raw_times: list[tuple[float, float]] = []
        plugin_times: list[tuple[float, float]] = []
        for i in range(args.runs):
            # Alternate which goes first, so drifting background load hits both alike.
            if i % 2:
                plugin_times.append(await timed_plugin())
                raw_times.append(await timed_raw())
            else:
                raw_times.append(await timed_raw())
                plugin_times.append(await timed_plugin())
        pair_ratios = [p[0] / r[0] for p, r in zip(plugin_times, raw_times, strict=True)]
        cpu_ratio = statistics.median(p[1] for p in plugin_times) / statistics.median(r[1] for r in raw_times)
        raw_med = statistics.median(r[0] for r in raw_times)
        plugin_med = statistics.median(p[0] for p in plugin_times)
        print(f"raw llama_cpp.Llama: median {raw_med * 1000:.1f} ms for {TOKENS} tokens ({args.runs} runs)")
        print(f"taskloom llamacpp:   median {plugin_med * 1000:.1f} ms for {TOKENS} tokens ({args.runs} runs)")
        print(f"ratio of medians {plugin_med / raw_med:.3f}; CPU-time ratio {cpu_ratio:.3f}")
        print(f"llamacpp_vs_raw={statistics.median(pair_ratios):.3f}")

    anyio.run(run)


if __name__ == "__main__":
    main()
