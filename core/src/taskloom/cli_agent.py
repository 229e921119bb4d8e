"""``taskloom ask``, ``taskloom tools`` and ``taskloom models``."""

from __future__ import annotations

import json
from typing import Any

import click

from .cli import echo_json, get_kernel, run_async
from .errors import ConfigError, TaskloomError


def install(main: click.Group) -> None:
    main.add_command(ask)
    main.add_command(tools)
    main.add_command(models)


@click.command()
@click.argument("prompt")
@click.option("--model", "-m", default="", help="Model alias (default: [taskloom] default_model).")
@click.option("--tool", "-t", "tool_names", multiple=True, help="A tool the agent may call (repeatable).")
@click.option("--tool-choice", default="auto", help="auto, required, none, or a tool name to force on the first turn.")
@click.option("--system", default=None, help="System prompt.")
@click.option("--max-turns", default=8, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print answer, usage, cost, tool calls and turns as JSON.")
@click.pass_context
def ask(
    ctx: click.Context,
    prompt: str,
    model: str,
    tool_names: tuple[str, ...],
    tool_choice: str,
    system: str | None,
    max_turns: int,
    as_json: bool,
) -> None:
    """Run one agent once on PROMPT and print its answer."""
    from .agent import Agent, AgentLimits, run_agent

    kernel = get_kernel(ctx)
    for name in tool_names:
        if name not in kernel.tools:
            raise ConfigError(_unknown_tool(kernel, name))
    agent = Agent(
        name="ask",
        model=model,
        tools=list(tool_names),
        tool_choice=tool_choice,
        system=system,
        limits=AgentLimits(max_turns=max_turns),
    )
    result = run_async(ctx, lambda k: run_agent(k, agent, prompt))
    if as_json:
        echo_json(
            {
                "answer": result.text,
                "stop_reason": result.stop_reason,
                "detail": result.detail,
                "usage": result.usage.model_dump() | {"total_tokens": result.usage.total_tokens},
                "cost": result.cost.model_dump(mode="json"),
                "tool_calls": [c.model_dump() for c in result.tool_calls],
                "turns": result.turns,
                "models": result.models,
            }
        )
    else:
        click.echo(result.text)
        if not result.ok:
            click.echo(f"stopped: {result.stop_reason}: {result.detail}", err=True)
    if not result.ok:
        ctx.exit(1)


def _unknown_tool(kernel: Any, name: str) -> str:
    from .config import did_you_mean

    return f"unknown tool {name!r}{did_you_mean(name, kernel.tools.names())}; `taskloom tools` lists them"


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def tools(ctx: click.Context, as_json: bool) -> None:
    """List registered tools with their plugin and argument schema."""
    if ctx.invoked_subcommand is not None:
        return
    kernel = get_kernel(ctx)
    rows = [
        {"name": t.name, "plugin": t.plugin, "description": t.description, "parameters": t.spec.parameters}
        for t in sorted(kernel.tools, key=lambda t: t.name)
    ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no tools registered")
    for row in rows:
        params = ", ".join(row["parameters"].get("properties", {}))
        click.echo(f"{row['name']}({params})  [{row['plugin']}]  {row['description']}")


@tools.command("call")
@click.argument("name")
@click.option("--args", "args_json", default="{}", help="Arguments as a JSON object.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def tools_call(ctx: click.Context, name: str, args_json: str, as_json: bool) -> None:
    """Call one tool directly, through the policy hook."""
    from .types import Action, RequestMeta

    kernel = get_kernel(ctx)
    if name not in kernel.tools:
        raise ConfigError(_unknown_tool(kernel, name))
    try:
        arguments = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg} at column {exc.colno}", param_hint="--args") from None
    if not isinstance(arguments, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--args")
    kernel.check(
        Action(
            kind="tool_call", tool=name, arguments=arguments, metadata=RequestMeta(user=kernel.settings.taskloom.user)
        )
    )
    tool = kernel.tools.get(name)
    result = run_async(ctx, lambda k: tool.run(arguments))
    if as_json:
        echo_json(
            {
                "tool": name,
                "result": result.content,
                "value": result.value,
                "is_error": result.is_error,
                "duration_s": result.duration_s,
            }
        )
    elif result.is_error:
        click.echo(result.content, err=True)
    else:
        click.echo(result.content)
    if result.is_error:
        ctx.exit(1)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--list", "list_remote", is_flag=True, help="Also ask each provider which models it can serve.")
@click.pass_context
def models(ctx: click.Context, as_json: bool, list_remote: bool) -> None:
    """List configured model aliases, their provider and capabilities.

    With --list, also the models each provider can serve (providers with a
    ``list_models()`` method); a provider that cannot answer is reported on its row
    (``list_error``) and the others are still listed.
    """
    get_kernel(ctx)  # assemble now, so configuration errors surface before the loop starts

    async def collect(k: Any) -> list[dict[str, Any]]:
        rows = []
        for alias, cfg in sorted(k.settings.models.items()):
            row: dict[str, Any] = {
                "alias": alias,
                "provider": cfg.provider,
                "model": cfg.model,
                "fallbacks": cfg.fallbacks,
            }
            try:
                provider = k.provider(alias)
                row["capabilities"] = provider.capabilities().model_dump()
            except TaskloomError as exc:
                row["error"] = str(exc)
                rows.append(row)
                continue
            if list_remote and hasattr(provider, "list_models"):
                try:
                    row["available"] = await provider.list_models()
                except TaskloomError as exc:
                    row["list_error"] = str(exc)
            rows.append(row)
        return rows

    rows = run_async(ctx, collect)
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        caps = row.get("capabilities")
        detail = row.get("error") or (
            ", ".join(k for k, v in (caps or {}).items() if v is True)
            + f"; context {caps['context_window'] if caps else '?'}"
        )
        click.echo(f"{row['alias']}: {row['provider']} {row['model']}  ({detail})")
        if "list_error" in row:
            click.echo(f"    cannot list models: {row['list_error']}")
        for name in row.get("available", []):
            click.echo(f"    {name}")
