"""``taskloom run``, ``taskloom plan`` and ``taskloom resume``.

Exit codes: 0 the run succeeded, 1 it failed (or its budget ran out), 2 the workflow file
or the config is invalid (or the run cannot be resumed), 130 interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from .cli import echo_json, get_kernel, run_async
from .errors import ConfigError

EXIT = {"succeeded": 0, "interrupted": 130}


def install(main: click.Group) -> None:
    main.add_command(run)
    main.add_command(plan)
    main.add_command(resume)


def _inputs(spec: Any, pairs: tuple[str, ...], inputs_file: str | None) -> dict[str, Any]:
    """``--inputs file.json`` then each ``--input key=value``. A value is a string, unless
    the input's default is not a string: then it is parsed as JSON (numbers, booleans...)."""
    values: dict[str, Any] = {}
    if inputs_file:
        try:
            data = json.loads(Path(inputs_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise click.BadParameter(f"cannot read {inputs_file}: {exc}", param_hint="--inputs") from None
        if not isinstance(data, dict):
            raise click.BadParameter(f"{inputs_file} must hold a JSON object", param_hint="--inputs")
        values.update(data)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--input")
        declared = spec.workflow.inputs.get(key)
        value: Any = raw
        if declared is not None and declared.default is not None and not isinstance(declared.default, str):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                raise click.BadParameter(
                    f"{key} expects JSON like its default {declared.default!r}, got {raw!r}", param_hint="--input"
                ) from None
        values[key] = value
    return values


def _money(cost: Any) -> str:
    if not cost.priced:
        return "unpriced"
    return f"${cost.total:.6f}" if cost.total else "$0"


def _show(result: Any) -> None:
    for record in [*result.tasks.values(), *result.compensations]:
        colour = {"succeeded": "green", "failed": "red", "skipped": "yellow", "compensated": "magenta"}.get(
            record.state, "blue"
        )
        attempts = f"{record.attempts} attempt{'s' if record.attempts != 1 else ''}"
        head = f"== {record.task_id} [{record.state}] {attempts} · {record.usage.total_tokens} tokens · {_money(record.cost)}"
        click.echo(click.style(head, fg=colour, bold=True))
        if record.state in ("succeeded", "compensated"):
            output = record.output
            click.echo(output if isinstance(output, str) else json.dumps(output, indent=2, ensure_ascii=False))
        elif record.error:
            click.echo(record.error)
    u = result.usage
    click.echo(
        f"run {result.run_id} {result.status} · {len(result.tasks)} tasks · {u.total_tokens} tokens "
        f"(input {u.input_tokens}, output {u.output_tokens}) · {_money(result.cost)}"
    )
    if result.run.error and result.status != "succeeded":
        click.echo(f"reason: {result.run.error}", err=True)
    if result.status not in ("succeeded",):
        if result.stored:
            click.echo(f"resume with: taskloom resume {result.run_id}", err=True)
        else:
            click.echo("the run store did not record this run: run it again once the store works", err=True)


def _finish(ctx: click.Context, result: Any, as_json: bool) -> None:
    if as_json:
        echo_json(result.to_dict())
    else:
        _show(result)
    ctx.exit(EXIT.get(result.status, 1))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "pairs", multiple=True, metavar="KEY=VALUE", help="A workflow input (repeatable).")
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False), help="Inputs from a JSON object file.")
@click.option("--run-id", default=None, help="Id for the run (default: time and random suffix).")
@click.option("--json", "as_json", is_flag=True, help="Print run id, status, tasks and totals as JSON.")
@click.pass_context
def run(
    ctx: click.Context, file: str, pairs: tuple[str, ...], inputs_file: str | None, run_id: str | None, as_json: bool
) -> None:
    """Run the workflow in FILE (TOML or JSON) and print each task's result."""
    from .workflow import check_workflow, load_workflow, run_workflow

    spec = load_workflow(file)
    inputs = _inputs(spec, pairs, inputs_file)
    kernel = get_kernel(ctx)
    check_workflow(spec, kernel)
    spec.resolve_inputs(inputs)
    result = run_async(ctx, lambda k: run_workflow(k, spec, inputs, run_id=run_id, handle_signals=True))
    _finish(ctx, result, as_json)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "pairs", multiple=True, metavar="KEY=VALUE", help="A workflow input (repeatable).")
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False), help="Inputs from a JSON object file.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
def plan(ctx: click.Context, file: str, pairs: tuple[str, ...], inputs_file: str | None, as_json: bool) -> None:
    """Check FILE and show its levels, critical path, parallelism and estimated cost."""
    from .workflow import check_workflow, load_workflow, plan_workflow

    spec = load_workflow(file)
    inputs = _inputs(spec, pairs, inputs_file)
    kernel = get_kernel(ctx)
    graph = check_workflow(spec, kernel)
    result = plan_workflow(spec, graph, kernel, inputs)
    data = result.to_dict()
    if as_json:
        echo_json(data)
        return
    click.echo(f"workflow {result.workflow}: {result.tasks} tasks, {len(result.levels)} levels")
    for n, level in enumerate(result.levels):
        click.echo(f"  level {n}: {', '.join(level)}")
    unit = "" if any(t.estimate is None for t in graph.tasks) else " s"
    click.echo(f"critical path: {' -> '.join(result.critical_path)} (length {result.critical_length:g}{unit})")
    click.echo(f"max useful parallelism: {result.max_parallelism}")
    if result.compensation_tasks:
        click.echo(f"compensation tasks: {', '.join(result.compensation_tasks)}")
    est = data["estimate"]
    cost = f"${Decimal(est['cost_usd']):.6f}" if est["priced"] else "unpriced"
    click.echo(
        f"estimate: {est['input_tokens']} input + {est['output_tokens']} output tokens, {cost} (one turn per task)"
    )


@click.command()
@click.argument("run_id")
@click.option(
    "--budget-usd", type=str, default=None, help="New USD budget for the whole run (default: the workflow's)."
)
@click.option("--budget-tokens", type=int, default=None, help="New token budget for the whole run.")
@click.option("--json", "as_json", is_flag=True, help="Print run id, status, tasks and totals as JSON.")
@click.pass_context
def resume(ctx: click.Context, run_id: str, budget_usd: str | None, budget_tokens: int | None, as_json: bool) -> None:
    """Resume run RUN_ID: rerun only the tasks that did not succeed."""
    from .workflow import resume_workflow
    from .workflow.spec import BudgetSpec

    budget = None
    if budget_usd is not None or budget_tokens is not None:
        try:
            budget = BudgetSpec(usd=Decimal(budget_usd) if budget_usd is not None else None, tokens=budget_tokens)
        except Exception as exc:
            raise ConfigError(f"--budget-usd/--budget-tokens: {exc}") from None
    get_kernel(ctx)
    result = run_async(ctx, lambda k: resume_workflow(k, run_id, handle_signals=True, budget=budget))
    _finish(ctx, result, as_json)
