"""The contract between the taskloom kernel and its plugins: every hook, in one file.

A plugin is a module (or object) named by an entry point in the ``taskloom`` group; it
implements any of these hooks with ``@taskloom.hookimpl``. Two families:

* **Registration hooks** run once when the kernel is assembled. Each receives a
  ``register`` callback and hands components to it. Components that do I/O (providers,
  caches, stores, executors, tools) are async objects.
* **Decision hooks** run on every operation. They are plain, fast, synchronous functions.

``docs/plugins.md`` documents every hook here; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .config import Settings
    from .types import Action, Cost, Denial, Event, ModelRequest, Usage

hookspec = pluggy.HookspecMarker("taskloom")


# ---------------------------------------------------------------- configuration


@hookspec
def taskloom_config_model() -> type[BaseModel] | None:
    """Return the pydantic model that validates this plugin's ``[plugins.<name>]`` table.

    Called once per enabled plugin while the kernel is assembled, before any registration
    hook. The validated object is then available as ``settings.plugin_config(name)``.
    Return None (or do not implement the hook) when the plugin takes no configuration;
    a ``[plugins.<name>]`` table for such a plugin is an error.
    """


@hookspec
def taskloom_configure(settings: Settings) -> None:
    """Set the plugin up for one kernel.

    Called once per enabled plugin at assembly, after every plugin's configuration is
    validated and before the registration hooks. Open files or build tables here. A
    plugin whose entry point names a class gets a fresh instance per kernel, so per-kernel
    state can live on ``self``.
    """


# ---------------------------------------------------------------- registration hooks


@hookspec
def taskloom_register_providers(register: Callable[..., None], settings: Settings) -> None:
    """Register model provider factories.

    Called once at assembly. Call ``register(name, factory)``: ``name`` is what
    ``[models.<alias>] provider = "..."`` refers to; ``factory(model_config, settings)``
    returns an object implementing :class:`taskloom.types.Provider` for that alias. The
    factory is called lazily, the first time the alias is used.
    """


@hookspec
def taskloom_register_tools(register: Callable[..., None], settings: Settings) -> None:
    """Register tools agents can call.

    Called once at assembly. Call ``register(function)`` with a plain sync or async
    function (its JSON Schema comes from type hints and the docstring) or
    ``register(function, name="...", description="...", timeout=...)``, or register a
    ready :class:`taskloom.tools.Tool`. Agents pick tools by name (``tools = [...]``).
    """


@hookspec
def taskloom_register_caches(register: Callable[..., None], settings: Settings) -> None:
    """Register response cache backends.

    Called once at assembly. Call ``register(name, factory)``; ``factory(settings)``
    returns a :class:`taskloom.types.Cache`. The active one is ``[taskloom] cache``.
    """


@hookspec
def taskloom_register_stores(register: Callable[..., None], settings: Settings) -> None:
    """Register run stores (ledger, checkpoints, costs).

    Called once at assembly. Call ``register(name, factory)``; ``factory(settings)``
    returns a :class:`taskloom.records.RunStore`. The active one is ``[taskloom] store``.
    """


@hookspec
def taskloom_register_executors(register: Callable[..., None], settings: Settings) -> None:
    """Register workflow executors (where workflow tasks run).

    Called once at assembly. Call ``register(name, factory)``; ``factory(settings)``
    returns a :class:`taskloom.workflow.executor.Executor`. The active one is
    ``[taskloom] executor``.
    """


@hookspec
def taskloom_register_commands(register: Callable[..., None]) -> None:
    """Add subcommands to the ``taskloom`` CLI.

    Called once when the CLI starts. Call ``register(command)`` with a ``click.Command``
    or ``click.Group``. A command's callback can reach the kernel with
    ``taskloom.cli.get_kernel(ctx)``.
    """


# ---------------------------------------------------------------- decision hooks


@hookspec(firstresult=True)
def taskloom_route(request: ModelRequest, settings: Settings) -> list[str] | None:
    """Choose the model for a request (router).

    Called by the gateway for every model call, after the policy check. Return the model
    aliases to try, in order (the first is the choice, the rest its fallback chain), or
    None to leave the choice to the next router. First result wins. When
    ``[taskloom] router`` names a plugin, only that plugin is asked. With no answer the
    request's own ``model`` and its configured ``fallbacks`` are used. A ``TaskloomError``
    raised here reaches the caller as is; any other exception, or an answer that is not a
    list of alias strings, fails the call with ``taskloom.plugins.HookFailed`` naming the
    plugin. Policies still check each deployment of the chain (``kind="deployment"``).
    """


@hookspec
def taskloom_check(action: Action, settings: Settings) -> Denial | None:
    """Allow or deny an action (policy).

    Called before every model call, tool call, delegation and workflow run. Every
    implementation runs; return None to allow or a :class:`taskloom.types.Denial` with
    the reason to deny. Any denial stops the action, and the first denial's reason is
    what the caller sees (``PolicyDenied``); an exception denies too.

    ``action.kind`` is ``model_call`` once when a call enters the gateway (the alias asked
    for, maybe ``auto``), ``deployment`` before each deployment of the chain is called
    (``action.model`` the alias, ``action.provider`` its provider, None for a cached
    answer; a denial skips that deployment), or ``tool_call``, ``delegate``, ``run``.
    Ignore kinds you do not know.
    """


@hookspec(firstresult=True)
def taskloom_price(alias: str, model: str, provider: str, usage: Usage, settings: Settings) -> Cost | None:
    """Price a usage record (cost model).

    Called after every model call that reached a provider (cache hits cost nothing).
    Return a :class:`taskloom.types.Cost` in exact decimal USD, or None if this cost model
    does not know the model. First result wins; with none the call is *unpriced*. A cost
    model that raises makes the call unpriced (warned once, and a ``plugin.error`` event).
    """


@hookspec
def taskloom_event(event: Event) -> None:
    """Receive an event (progress sink).

    Called for every event (model calls, tool calls, retries, routing, runs and tasks).
    Every implementation receives every event. Keep it fast: do I/O in a buffer or a
    thread. An exception here is reported once and does not stop the run.
    """


@hookspec
def taskloom_wants_events(settings: Settings) -> bool | None:
    """Say whether this plugin's progress sink wants events with this configuration.

    Called once at assembly, after ``taskloom_configure``, for each plugin that implements
    ``taskloom_event``. Return False when the sink would drop every event (a ``jsonl``
    sink with no path, a ``console`` that prints nothing): it then receives none, and
    when no sink wants events the kernel builds none at all. Return True or None (or do
    not implement the hook) to receive every event. The answer holds for the kernel's
    life; an exception here is reported once and the sink receives every event.
    """


@hookspec
def taskloom_check_kinds(settings: Settings) -> list[str] | None:
    """Say which action kinds this plugin's policy checks with this configuration.

    Called once at assembly, after ``taskloom_configure``, for each plugin that implements
    ``taskloom_check``. Return the kinds (``model_call``, ``deployment``, ``tool_call``,
    ``delegate``, ``run``) whose actions ``taskloom_check`` should see; it is then not
    called for the others, and an action of a kind no policy checks is allowed without
    being built. Return None (or do not implement the hook) to check every kind. The
    answer holds for the kernel's life; an exception here is reported once and the
    policy checks every kind.
    """


@hookspec
def taskloom_tool_price(name: str, arguments: dict[str, Any], settings: Settings) -> Cost | None:
    """Price one call of a tool (cost model for tools).

    Called after every tool call. Return its cost, or None when this plugin does not price
    that tool. The results of all implementations are added.
    """
