"""``taskloom router explain``, ``taskloom router stats`` and ``taskloom router learn``."""

from __future__ import annotations

from typing import Any

import click
from taskloom.cli import echo_json, get_kernel, run_async
from taskloom.types import Message, ModelRequest, RequestMeta, ToolSpec


@click.group("router")
def router_group() -> None:
    """The tier router: explain a decision, show statistics, learn from the run store."""


@router_group.command("explain")
@click.argument("prompt")
@click.option("--task-type", "-t", default=None, help="Task type (classification, code_generation, ...).")
@click.option("--tools", "n_tools", default=0, type=int, help="Number of tools offered.")
@click.option("--structured", is_flag=True, help="The answer must match a JSON Schema.")
@click.option("--max-tokens", default=None, type=int, help="The request's max_tokens (for the cost estimate).")
@click.option("--budget", "budget_usd", default=None, type=float, help="Remaining budget in USD.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def explain(
    ctx: click.Context,
    prompt: str,
    task_type: str | None,
    n_tools: int,
    structured: bool,
    max_tokens: int | None,
    budget_usd: float | None,
    as_json: bool,
) -> None:
    """Show the score of PROMPT, its factors, and the tier and deployment chosen."""
    from .escalation import router_of

    router = router_of(get_kernel(ctx))
    budget = {} if budget_usd is None else {"budget_remaining_usd": str(budget_usd)}
    meta = RequestMeta(task_type=task_type, **budget)
    request = ModelRequest(
        model="auto",
        messages=[Message.user(prompt)],
        tools=[ToolSpec(name=f"tool_{i}") for i in range(n_tools)],
        output_schema={"type": "object"} if structured else None,
        max_tokens=max_tokens,
        metadata=meta,
    )
    p = router.plan(request)
    data = p.as_dict(router.tier_names)
    data["thresholds"] = dict(zip(router.tier_names, router.thresholds, strict=True))
    if p.error is not None:
        data["error"] = str(p.error)
    if as_json:
        echo_json(data)
    else:
        _print_explain(data)
    if p.error is not None:
        ctx.exit(1)


def _print_explain(d: dict[str, Any]) -> None:
    click.echo(f"score {d['score']:g} -> tier {d['tier']} (deployment {d['deployment'] or '-'})")
    notes = {"task_type": d["task_type"], "prompt_tokens": f"{d['prompt_tokens']} tokens ({d['size']})"}
    for name, points in d["factors"].items():
        click.echo(f"  {name:<18} {points:+5.2f}  {notes.get(name, '')}".rstrip())
    bounds = ", ".join(f"{t} <= {b:g}" for t, b in d["thresholds"].items())
    click.echo(f"tiers: {bounds}")
    click.echo(f"chain: {' -> '.join(d['chain']) or '(none)'}")
    if d["estimated_cost_usd"] is not None:
        click.echo(f"estimated cost: ${d['estimated_cost_usd']:.6f}")
    for reason in d["reasons"]:
        click.echo(f"note: {reason}")
    for name, why in d["skipped"].items():
        click.echo(f"skipped {name}: {why}")
    if "error" in d:
        click.echo(f"error: {d['error']}", err=True)


@router_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Decisions per tier, escalations, and the estimated saving against the top tier."""
    from .escalation import router_of

    router = router_of(get_kernel(ctx))
    data = router.stats_dict()
    if as_json:
        echo_json(data)
        return
    total = sum(data["decisions"].values())
    click.echo(
        f"decisions: {total}"
        + ("" if data["state_path"] else " (this process only; set [plugins.router] state_path to keep stats)")
    )
    for tier, n in data["decisions"].items():
        share = f"{100 * n / total:.1f}%" if total else "-"
        click.echo(f"  {tier:<12} {n:>8}  {share:>6}  calls {data['calls'].get(tier, 0)}")
    by_reason = ", ".join(f"{k} {v}" for k, v in data["escalations_by_reason"].items())
    click.echo(f"escalations: {data['escalations']}" + (f" ({by_reason})" if by_reason else ""))
    click.echo(f"budget step-downs: {data['budget_step_downs']}")
    saving = "n/a" if data["saving_pct"] is None else f"{data['saving_pct']:.1f}%"
    click.echo(f"cost: ${data['cost_usd']} vs ${data['cost_if_top_tier_usd']} on the top tier (saving {saving})")
    if data["unpriced_calls"]:
        click.echo(f"unpriced calls: {data['unpriced_calls']}")


@router_group.command("learn")
@click.option("--runs", default=200, type=int, show_default=True, help="How many of the latest runs to read.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def learn(ctx: click.Context, runs: int, as_json: bool) -> None:
    """Count the outcomes recorded in the run store's finished runs (for adaptive mode).

    Each run is counted once; with [plugins.router] state_path the result is kept there.
    """
    from .escalation import router_of

    router = router_of(get_kernel(ctx))
    learned, added = run_async(ctx, lambda kernel: router.learn_from_store(kernel.store, runs))
    data = {"runs": learned, "outcomes": added, "state_path": str(router.state_path) if router.state_path else None}
    if as_json:
        echo_json(data)
        return
    click.echo(f"learned {added} outcomes from {learned} runs")
    if router.state_path is None:
        click.echo("(this process only; set [plugins.router] state_path to keep them)")
