"""``taskloom runs``, ``taskloom runs show``, ``taskloom cost`` and ``taskloom cache``.

They read the active run store and cache (``kernel.store``, ``kernel.cache``) through the
protocols, so they work on any store, not only this plugin's.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any, get_args

import click
from taskloom.cli import echo_json, run_async

from .report import GroupBy, RunDetail, RunSummary, TaskNode, cost_report, quantize, run_detail, summarize_runs


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _money(value: Decimal, unpriced: int = 0, places: int = 4) -> str:
    text = f"${quantize(value, places)}"
    return f"{text}+?" if unpriced else text


def _console() -> Any:
    from rich.console import Console

    return Console(soft_wrap=True)


# ---------------------------------------------------------------- runs


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=50, show_default=True, help="How many of the latest runs.")
@click.pass_context
def runs(ctx: click.Context, as_json: bool, limit: int) -> None:
    """List recent runs: id, workflow, status, start, duration, tokens, cost."""
    if ctx.invoked_subcommand is not None:
        return
    where: list[str] = []

    async def load(kernel: Any) -> list[RunSummary]:
        store = kernel.store
        where.append(str(getattr(store, "path", "") or kernel.settings.taskloom.store or type(store).__name__))
        return await summarize_runs(store, limit)

    summaries = run_async(ctx, load)
    if as_json:
        echo_json([s.as_dict() for s in summaries])
        return
    if not summaries:
        click.echo(f"no runs in the run store ({where[0]})")
        return
    from rich.table import Table

    table = Table("id", "workflow", "status", "started", "duration", "tokens", "cost", box=None)
    for s in summaries:
        d = s.as_dict()
        colour = {"succeeded": "green", "running": "cyan"}.get(s.run.status, "red")
        table.add_row(
            s.run.id,
            s.run.workflow,
            f"[{colour}]{s.run.status}[/{colour}]",
            _when(s.run.started_at),
            _secs(d["duration_s"]),
            f"{s.totals.tokens:,}",
            _money(s.totals.cost, s.totals.unpriced),
        )
    _console().print(table)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Show one run's task tree: state, attempts, timing, tokens and cost of each task."""
    detail = run_async(ctx, lambda kernel: run_detail(kernel.store, run_id))
    if as_json:
        echo_json(detail.as_dict())
        return
    _print_detail(detail)


def _print_detail(detail: RunDetail) -> None:
    from rich.tree import Tree

    run, totals = detail.summary.run, detail.summary.totals
    d = detail.summary.as_dict()
    head = (
        f"[bold]{run.id}[/bold]  {run.workflow}  {run.status}  started {_when(run.started_at)}  "
        f"{_secs(d['duration_s'])}  {totals.tokens:,} tokens  {_money(totals.cost, totals.unpriced)}"
    )
    tree = Tree(head)
    if run.error:
        tree.add(f"[red]error: {run.error}[/red]")
    running = run.status == "running"

    def add(parent: Any, node: TaskNode) -> None:
        r, t = node.record, node.totals
        data = node.as_dict(running)
        colour = {"succeeded": "green", "running": "cyan", "pending": "dim", "skipped": "dim"}.get(r.state, "red")
        label = "↩ " if r.compensation_of else ""
        text = (
            f"{label}[bold]{r.task_id}[/bold] [{colour}]{r.state}[/{colour}]  attempts {r.attempts}  "
            f"{_secs(data['duration_s'])}  {t.tokens:,} tokens  {_money(t.cost, t.unpriced)}"
        )
        if r.agent:
            text += f"  agent {r.agent}"
        if len(node.needs) > 1:
            text += f"  needs {', '.join(node.needs)}"
        if r.error:
            text += f"\n[red]{r.error}[/red]"
        branch = parent.add(text)
        for child in node.children:
            add(branch, child)

    for node in detail.roots:
        add(tree, node)
    from rich.console import Console

    Console().print(tree)


# ---------------------------------------------------------------- cost


@click.command()
@click.argument("run_id")
@click.option(
    "--by", "by", type=click.Choice(get_args(GroupBy)), default="task", show_default=True, help="What each row is."
)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option(
    "--places",
    type=click.IntRange(2, 12),
    default=6,
    show_default=True,
    help="Decimal places of each row (rounded half to even); the total is the sum of the rows.",
)
@click.pass_context
def cost(ctx: click.Context, run_id: str, by: GroupBy, fmt: str, places: int) -> None:
    """The billing report of a run: cost per task, agent, model or tool, in USD."""
    report = run_async(ctx, lambda kernel: cost_report(kernel.store, run_id, by, places))
    if fmt == "json":
        echo_json(report.as_dict())
        return
    if fmt == "csv":
        click.echo(report.to_csv(), nl=False)
        return
    from rich.table import Table

    table = Table(title=f"run {report.run_id} ({report.workflow}), cost by {by}", box=None, show_footer=True)
    table.add_column(by, no_wrap=True)
    for name in ("model calls", "tool calls", "input tokens", "output tokens"):
        table.add_column(name, justify="right")
    table.add_column("cost (USD)", justify="right", no_wrap=True)
    for row in report.rows:
        t = row.totals
        table.add_row(
            row.key,
            str(t.model_calls),
            str(t.tool_calls),
            f"{t.input_tokens:,}",
            f"{t.output_tokens:,}",
            f"{row.cost}{'+?' if t.unpriced else ''}",
        )
    t = report.totals
    table.columns[0].footer = "TOTAL"
    for column, value in zip(
        table.columns[1:5], (t.model_calls, t.tool_calls, t.input_tokens, t.output_tokens), strict=True
    ):
        column.footer = f"{value:,}"
    table.columns[5].footer = f"{report.total}{'+?' if t.unpriced else ''}"
    _console().print(table)
    if t.unpriced:
        click.echo(
            f"{t.unpriced} model call(s) are unpriced (no cost model knows the model): "
            "costs marked +? are lower bounds",
            err=True,
        )


# ---------------------------------------------------------------- cache


@click.group()
def cache() -> None:
    """Inspect or clear the active response cache."""


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def cache_stats(ctx: click.Context, as_json: bool) -> None:
    """Hits, misses, evictions, entries and bytes (of every process sharing the cache)."""

    async def stats(kernel: Any) -> dict[str, Any] | None:
        backend = kernel.cache
        if backend is None:
            return None
        ready = getattr(backend, "ready", None)  # a cache that opens its file off the loop
        if ready is not None:
            await ready()
        out: dict[str, Any] = {"backend": kernel.settings.taskloom.cache, **backend.stats()}
        path = getattr(backend, "path", None)
        if path is not None:
            out["path"] = str(path)
        lookups = out.get("hits", 0) + out.get("misses", 0)
        out["hit_rate"] = round(out.get("hits", 0) / lookups, 4) if lookups else None
        return out

    data = run_async(ctx, stats)
    if data is None:
        raise click.ClickException('no response cache is active ([taskloom] cache = "none")')
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        click.echo(f"{key:<12} {value:,}" if isinstance(value, int) else f"{key:<12} {value}")


@cache.command("clear")
@click.option("--prefix", default="", help="Only keys starting with this (a model alias followed by ':').")
@click.pass_context
def cache_clear(ctx: click.Context, prefix: str) -> None:
    """Remove cached responses (all of them, or those whose key starts with --prefix)."""

    async def clear(kernel: Any) -> int | None:
        backend = kernel.cache
        if backend is None:
            return None
        count: int = await backend.invalidate(prefix)
        return count

    count = run_async(ctx, clear)
    if count is None:
        raise click.ClickException('no response cache is active ([taskloom] cache = "none")')
    click.echo(f"removed {count} cached response(s)" + (f" with prefix {prefix!r}" if prefix else ""))


COMMANDS: list[click.Command] = [runs, cost, cache]
