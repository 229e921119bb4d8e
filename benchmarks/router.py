"""Benchmark of the tier router (taskloom-router).

1. **Decision latency**: the median time of one routing decision through the kernel's
   ``taskloom_route`` hook (pluggy call, scoring, balancing, the decision record).
2. **Simulated workload**: 1,000 seeded tasks over the task types, each run as an agent
   with ``model = "auto"`` through the real kernel, gateway, prices plugin and router
   (escalation on: the chain holds the next tier, and ``run_escalating`` re-runs a run
   whose answer is "UNABLE"), against the same tasks always on the top tier.

What the simulation declares (these are assumptions, not measurements):

* tiers and their real list prices (USD per 1M tokens, input/output), from the kernel's
  price table: weak = gpt-4.1-nano (0.10/0.40), base = gpt-4.1-mini (0.40/1.60),
  strong = gpt-4.1 (2.00/8.00);
* the tier bounds a deployment of these models would declare (``max_score``): weak up to
  4.5, base up to 7.5, strong the rest (``--even`` uses the router's default even split,
  4 / 7 / 10, instead);
* each task has a hidden difficulty d = the task type's base difficulty + 1 per prompt-size
  step + Gaussian noise (sd 1.2), clamped to 1-10; the router sees only the task type,
  the prompt and the request shape, never d;
* the chance a tier answers correctly falls with difficulty past its capability:
  p = 0.99 - slope * max(0, d - cap), floor 0.02, with (cap, slope) weak (3.5, 0.20),
  base (6.5, 0.15), strong (9.0, 0.08);
* a wrong answer is, by seeded draw, a terminal provider error (40%: the gateway moves
  to the next tier of the chain), "UNABLE" (30%: the agent says it could not do it, the
  run is re-run one tier up), or a silently wrong answer (30%: nobody notices; it counts
  as a failure and is never escalated);
* the draw for (task, tier) is the same in both runs, so always-top sees exactly the
  strong tier's outcomes.

Prints a table and, last, ``route_us=<N> cost_saving_pct=<N> success_vs_top_pct=<N>``.
Run: ``python benchmarks/router.py [--tasks 1000] [--seed 7] [--even] [--static]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED)

from taskloom import Agent, Message, ModelRequest, ModelResponse, hookimpl, load_kernel, run_agent  # noqa: E402
from taskloom.errors import BadRequest  # noqa: E402
from taskloom.testing import ScriptedProvider, register_plugin  # noqa: E402
from taskloom.types import RequestMeta, Usage  # noqa: E402

TIERS = {"weak": "gpt-4.1-nano", "base": "gpt-4.1-mini", "strong": "gpt-4.1"}
CAPABILITY = {"weak": (3.5, 0.20), "base": (6.5, 0.15), "strong": (9.0, 0.08)}
MAX_SCORE = {"weak": 4.5, "base": 7.5, "strong": 10.0}
# task type: (share of the workload, base difficulty, prompt tokens range, output tokens)
TASKS: dict[str, tuple[float, float, tuple[int, int], int]] = {
    "classification": (0.20, 2.0, (80, 600), 10),
    "extraction": (0.15, 3.0, (200, 3000), 150),
    "summarisation": (0.15, 3.0, (500, 6000), 250),
    "question_answering": (0.15, 4.0, (100, 1500), 200),
    "code_generation": (0.12, 6.0, (200, 2500), 600),
    "planning": (0.08, 6.0, (200, 1500), 500),
    "math": (0.07, 7.0, (80, 600), 400),
    "multi_step_reasoning": (0.08, 8.0, (300, 3000), 700),
}
SIZE_STEPS = (300, 1000, 4000, 16000)
# Adaptive mode as the benchmark runs it: a cell's tier moves up once detected failures
# (errors, "UNABLE") keep its success rate under 80% over at least 8 outcomes.
ADAPTIVE = {"enabled": True, "min_samples": 8, "target_success": 0.8, "explore": 0.05}


class Task:
    def __init__(self, i: int, rng: random.Random) -> None:
        names = list(TASKS)
        self.id = f"t{i}"
        self.type = rng.choices(names, weights=[TASKS[n][0] for n in names])[0]
        _, base, (lo, hi), out = TASKS[self.type]
        self.prompt_tokens = int(lo * (hi / lo) ** rng.random())
        self.output_tokens = max(5, int(out * rng.uniform(0.6, 1.4)))
        steps = sum(self.prompt_tokens >= s for s in SIZE_STEPS)
        self.difficulty = min(10.0, max(1.0, base + steps * 1.0 + rng.gauss(0, 1.2)))
        self.prompt = ("lorem " * (self.prompt_tokens * 4 // 6 + 1))[: self.prompt_tokens * 4]


def draw(seed: int, task: str, tier: str) -> tuple[float, float]:
    digest = hashlib.sha256(f"{seed}:{task}:{tier}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:16], "big") / 2**64


def p_success(tier: str, d: float) -> float:
    cap, slope = CAPABILITY[tier]
    return max(0.02, 0.99 - slope * max(0.0, d - cap))


class SimulatedTier(ScriptedProvider):
    """A scripted deployment whose answer is drawn from the declared success model."""

    def __init__(self, tier: str, model: str, seed: int, tasks: dict[str, Task]) -> None:
        super().__init__(tier, model=model)
        self.tier, self.seed, self.tasks = tier, seed, tasks

    async def complete(self, request: ModelRequest) -> ModelResponse:
        task = self.tasks[str(request.metadata.task_id)]
        ok_draw, mode_draw = draw(self.seed, task.id, self.tier)
        usage = Usage(input_tokens=task.prompt_tokens, output_tokens=task.output_tokens)
        if ok_draw < p_success(self.tier, task.difficulty):
            text = "OK"
        elif mode_draw < 0.4:
            raise BadRequest(f"{self.tier}: simulated terminal failure", model=self.model)
        elif mode_draw < 0.7:
            text, usage = "UNABLE: this is beyond me", Usage(input_tokens=task.prompt_tokens, output_tokens=20)
        else:
            text = "WRONG"
        return ModelResponse(message=Message.assistant(text), usage=usage, model=self.model, provider="simulated")


class SimulatedPlugin:
    def __init__(self, seed: int, tasks: dict[str, Task]) -> None:
        self.seed, self.tasks = seed, tasks

    @hookimpl
    def taskloom_register_providers(self, register: Callable[..., None], settings: Any) -> None:
        register("simulated", lambda config, settings: SimulatedTier(config.alias, config.model, self.seed, self.tasks))


def make_kernel(seed: int, tasks: dict[str, Task], router: dict[str, Any] | None = None, even: bool = False) -> Any:
    models = {
        tier: {"provider": "simulated", "model": model, "retry": {"attempts": 1}} for tier, model in TIERS.items()
    }
    config = {
        "taskloom": {"plugins": ["router", "prices", "memory-store", "sim"], "store": "memory", "cache": "none"},
        "models": models,
        "plugins": {
            "router": {
                "seed": seed,
                "tiers": [
                    {"name": t, "deployments": [t], **({} if even else {"max_score": MAX_SCORE[t]})} for t in TIERS
                ],
                "escalation": {"max_tiers": 1, "max_retries": 2},
                **(router or {}),
            }
        },
    }
    with register_plugin(SimulatedPlugin(seed, tasks), "sim"):
        kernel = load_kernel(config)
    failed = [f"{i.name}: {i.reason}" for i in kernel.plugins.failed]
    if failed:
        sys.exit("plugins failed: " + "; ".join(failed))
    return kernel


def route_latency(kernel: Any, n: int = 20000) -> float:
    from taskloom.types import Event

    router = kernel.plugins.infos["router"].obj
    request = ModelRequest(
        model="auto",
        messages=[
            Message.system("You are a helpful assistant."),
            Message.user("Extract the invoice number and total. " * 20),
        ],
        metadata=RequestMeta(task_type="extraction", agent="bench", run_id="r"),
    )
    settle = Event(kind="model.call", agent="bench", run_id="r", data={"alias": "weak", "cached": True})
    samples = []
    route = kernel.route
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        route(request)
        samples.append(clock() - start)
        router.taskloom_event(settle)
    return statistics.median(samples) / 1000


async def workload(kernel: Any, tasks: list[Task], auto: bool) -> tuple[int, Decimal, Counter[str], int]:
    from taskloom_router import run_escalating

    ok = 0
    cost = Decimal(0)
    answered_by: Counter[str] = Counter()
    escalations = 0
    for task in tasks:
        meta = RequestMeta(task_id=task.id, run_id="auto" if auto else "top")
        if auto:
            run = await run_escalating(
                kernel, Agent(name="worker", model="auto", task_type=task.type), task.prompt, meta=meta
            )
            result, spent, escalations = run.result, run.cost, escalations + run.escalations
        else:
            result = await run_agent(
                kernel, Agent(name="worker", model="strong", task_type=task.type), task.prompt, meta=meta
            )
            spent = result.cost.total
        cost += spent
        ok += result.ok and result.text == "OK"
        answered_by[result.models[-1] if result.models else "-"] += 1
    return ok, cost, answered_by, escalations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--static", action="store_true", help="Adaptive mode off (thresholds from the score alone).")
    parser.add_argument("--even", action="store_true", help="Tier bounds split evenly (4/7/10), not declared.")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tasks = [Task(i, rng) for i in range(args.tasks)]
    by_id = {t.id: t for t in tasks}

    kernel = make_kernel(args.seed, by_id)
    route_us = route_latency(kernel)
    adaptive = {} if args.static else {"adaptive": ADAPTIVE}
    kernel = make_kernel(args.seed, by_id, adaptive, even=args.even)
    router = kernel.plugins.infos["router"].obj

    t0 = time.perf_counter()
    top_ok, top_cost, _, _ = anyio.run(workload, kernel, tasks, False)
    auto_ok, auto_cost, answered, escalations = anyio.run(workload, kernel, tasks, True)
    elapsed = time.perf_counter() - t0

    saving = float((1 - auto_cost / top_cost) * 100) if top_cost else 0.0
    success_vs_top = 100.0 * auto_ok / top_ok if top_ok else 0.0
    stats = router.stats.as_dict(router.tier_names)
    print(f"tasks: {len(tasks)}  seed: {args.seed}  types: {dict(Counter(t.type for t in tasks))}")
    print(f"routing decision median: {route_us:.1f} us")
    print(f"always top (gpt-4.1):  success {top_ok}/{len(tasks)}  cost ${top_cost:.4f}")
    print(
        f"router (escalation on, adaptive {'off' if args.static else 'on'}, bounds {'even' if args.even else 'declared'}):"
        f" success {auto_ok}/{len(tasks)}  cost ${auto_cost:.4f}"
    )
    print(f"  first decisions per tier: {stats['decisions']}")
    print(f"  final answers by tier: {dict(answered)}")
    print(f"  escalations: re-runs {escalations}, by reason {stats['escalations_by_reason']}")
    print(f"  workload wall time: {elapsed:.1f} s for both runs")
    print(f"route_us={route_us:.1f} cost_saving_pct={saving:.1f} success_vs_top_pct={success_vs_top:.1f}")


if __name__ == "__main__":
    main()
