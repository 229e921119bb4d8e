"""Benchmark (llamacpp part of ``benchmarks/providers.py``): a 32-token generation through
the taskloom llamacpp provider divided by the same generation with raw ``llama_cpp.Llama``
on the same loaded model, prompt and sampling settings (greedy). Median of several runs,
alternating the two so background load hits both alike.

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

    async def run() -> None:
        raw_times: list[float] = []
        plugin_times: list[float] = []
        for _ in range(2):  # warm up both paths
            reset()
            raw()
            reset()
            await plugin()
        for _ in range(args.runs):
            reset()
            start = time.perf_counter()
            n_raw = raw()
            raw_times.append(time.perf_counter() - start)
            reset()
            start = time.perf_counter()
            n_plugin = await plugin()
            plugin_times.append(time.perf_counter() - start)
            assert n_raw == n_plugin == TOKENS, (n_raw, n_plugin)
        raw_med = statistics.median(raw_times)
        plugin_med = statistics.median(plugin_times)
        print(f"raw llama_cpp.Llama: median {raw_med * 1000:.1f} ms for {TOKENS} tokens ({args.runs} runs)")
        print(f"taskloom llamacpp:   median {plugin_med * 1000:.1f} ms for {TOKENS} tokens ({args.runs} runs)")
        print(f"llamacpp_vs_raw={plugin_med / raw_med:.3f}")

    anyio.run(run)


if __name__ == "__main__":
    main()
