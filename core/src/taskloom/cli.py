"""The ``taskloom`` command.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error. Errors are one
line; ``--debug`` shows the traceback. Plugins add subcommands with
``taskloom_register_commands``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from . import __version__
from .errors import TaskloomError

T = TypeVar("T")


class _Group(click.Group):
    """Loads plugin commands on demand, after ``--config`` has been parsed."""

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        cache = ctx.meta.get("taskloom.commands")
        if cache is None:
            cache = {}
            try:
                kernel = get_kernel(ctx)
            except TaskloomError:
                return {}  # the error is reported when the command itself runs

            def register(command: click.Command) -> None:
                if command.name and command.name not in self.commands:
                    cache[command.name] = command

            for plugin, thunk in kernel.plugins.call_each("taskloom_register_commands", register=register):
                try:
                    thunk()
                except Exception as exc:
                    kernel.plugins.fail(plugin, f"taskloom_register_commands raised {type(exc).__name__}: {exc}")
            ctx.meta["taskloom.commands"] = cache
        return cache

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugin_commands(ctx)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._plugin_commands(ctx).get(name)

    def invoke(self, ctx: click.Context) -> Any:
        debug = ctx.params.get("debug", False)
        try:
            return super().invoke(ctx)
        except TaskloomError as exc:
            if debug:
                raise
            _fail(str(exc), exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            # The reader went away (`taskloom plugins | head`): stop quietly, as other
            # commands do, and keep Python from complaining when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except Exception as exc:
            if debug:
                raise
            _fail(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def get_kernel(ctx: click.Context) -> Any:
    """The kernel for this invocation, assembled once from ``--config``."""
    root = ctx.find_root()
    kernel = root.meta.get("taskloom.kernel")
    if kernel is None:
        from .kernel import load_kernel

        kernel = load_kernel(root.params.get("config"))
        root.meta["taskloom.kernel"] = kernel
        if root.invoked_subcommand != "plugins":
            for info in kernel.plugins.failed:
                click.echo(f"warning: plugin {info.name} failed: {info.reason}", err=True)
    return kernel


def run_async(ctx: click.Context, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Run ``fn(kernel)`` on an event loop and close the kernel's components after."""
    from taskloom.eventloop import run

    kernel = get_kernel(ctx)

    async def main() -> T:
        try:
            return await fn(kernel)
        finally:
            await kernel.aclose()

    return run(main)


def echo_json(value: Any) -> None:
    from pydantic_core import to_jsonable_python

    click.echo(json.dumps(to_jsonable_python(value), indent=2, ensure_ascii=False))


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="taskloom")
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    help="Configuration file (default: taskloom.toml, then pyproject.toml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(config: str | None, debug: bool) -> None:
    """taskloom: run LLM agents and multi-agent workflows."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--refresh", is_flag=True, help="Load every plugin again instead of using the plugin index.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool, refresh: bool) -> None:
    """List installed plugins: distribution, version, hooks and status."""
    from . import plugin_index

    config = ctx.find_root().params.get("config")
    rows = None if refresh else plugin_index.lookup(config)
    if rows is None:
        kernel = get_kernel(ctx)
        infos = sorted(kernel.plugins.infos.values(), key=lambda i: i.name)
        rows = [i.as_dict() for i in infos]
        plugin_index.save(config, rows, [i.metadata_file for i in infos if i.metadata_file])
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    # Plain aligned columns, like `pip list`: this is the command people time, and rich
    # would cost more to import than the whole listing.
    table = [("plugin", "distribution", "version", "status", "hooks")]
    for row in rows:
        hooks = ", ".join(h.removeprefix("taskloom_") for h in row["hooks"])
        table.append((row["name"], row["distribution"] or "", row["version"] or "", row["status"], hooks))
    widths = [max(len(line[c]) for line in table) for c in range(4)]
    colours = {"enabled": "green", "failed": "red"}
    for n, line in enumerate(table):
        cells = [line[c].ljust(widths[c]) for c in range(4)]
        if n:
            cells[3] = click.style(cells[3], fg=colours.get(line[3]), dim=line[3] not in colours)
        else:
            cells = [click.style(c, bold=True) for c in cells]
        click.echo("  ".join([*cells, line[4]]).rstrip())
    for row in rows:
        if row["status"] == "failed":
            click.echo(f"{row['name']}: failed: {row['reason']}")


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def config(ctx: click.Context, as_json: bool) -> None:
    """Print the effective configuration (secrets redacted)."""
    if ctx.invoked_subcommand is not None:
        return
    kernel = get_kernel(ctx)
    data = kernel.settings.to_dict()
    data["source"] = str(kernel.settings.source) if kernel.settings.source else None
    if as_json:
        echo_json(data)
    else:
        from rich.console import Console
        from rich.pretty import Pretty

        Console().print(Pretty(data))


@config.command("schema")
@click.pass_context
def config_schema(ctx: click.Context) -> None:
    """Print the JSON Schema of the configuration file, with every installed plugin's
    section (disabled plugins are imported for this, to ask them for their model)."""
    from .config import settings_schema
    from .plugins import discover

    kernel = get_kernel(ctx)
    models: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for plugin, function in kernel.plugins.impls("taskloom_config_model"):
        try:
            models[plugin] = function()
        except Exception as exc:
            problems[plugin] = f"{type(exc).__name__}: {exc}"
    for name, eps in sorted(discover().items()):
        info = kernel.plugins.infos.get(name)
        if name in models or name in problems or (info is not None and info.status != "disabled"):
            continue  # asked above, or failed to load (``taskloom plugins`` says why)
        try:
            obj = eps[0].load()
            if isinstance(obj, type):
                obj = obj()
            hook = getattr(obj, "taskloom_config_model", None)
            models[name] = hook() if hook is not None else None
        except Exception as exc:
            problems[name] = f"{type(exc).__name__}: {exc}"
    for name, problem in sorted(problems.items()):
        click.echo(f"warning: plugin {name}: its configuration model is left out of the schema ({problem})", err=True)
    echo_json(settings_schema(models))


from . import cli_agent as _cli_agent  # noqa: E402  (registers ask, tools, models)

_cli_agent.install(main)

from . import cli_workflow as _cli_workflow  # noqa: E402  (registers run, plan, resume)

_cli_workflow.install(main)
