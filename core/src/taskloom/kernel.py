"""The assembled kernel: settings, loaded plugins, and the registries they filled.

``load_kernel(config)`` is the one way to build it, from a path, a mapping, or nothing
(the usual places). Components are created lazily: a provider the first time its alias
is used, the cache and store the first time they are needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .config import ModelConfig, Settings, did_you_mean, load_settings
from .errors import ConfigError, PolicyDenied, TaskloomError
from .plugins import HookFailed, PluginManager
from .tools import Tool, ToolRegistry
from .types import ACTION_KINDS, Action, Cache, Cost, Denial, Event, ModelRequest, Provider, RequestMeta, Usage

if TYPE_CHECKING:
    from .gateway import Gateway
    from .records import RunStore
    from .workflow.executor import Executor


@dataclass
class Registered:
    name: str
    factory: Callable[..., Any]
    plugin: str


class Registry:
    """Named factories registered by plugins (providers, caches, stores, executors)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: dict[str, Registered] = {}

    def add(self, name: str, factory: Callable[..., Any], plugin: str = "") -> None:
        if name in self.items:
            other = self.items[name].plugin
            raise TaskloomError(f"{self.kind} {name!r} is registered twice (by {other} and {plugin})")
        self.items[name] = Registered(name, factory, plugin)

    def drop_plugin(self, plugin: str) -> None:
        for name in [n for n, r in self.items.items() if r.plugin == plugin]:
            del self.items[name]

    def get(self, name: str, needed_by: str) -> Registered:
        try:
            return self.items[name]
        except KeyError:
            known = ", ".join(sorted(self.items)) or "none"
            raise ConfigError(
                f"{needed_by}: no {self.kind} named {name!r}{did_you_mean(name, self.items)} "
                f"is registered (registered: {known}); install or enable the plugin that provides it"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.items


class Kernel:
    def __init__(self, settings: Settings, plugins: PluginManager) -> None:
        self.settings = settings
        self.plugins = plugins
        self.providers = Registry("provider")
        self.caches = Registry("cache backend")
        self.stores = Registry("run store")
        self.executors = Registry("executor")
        self.tools = ToolRegistry()
        self._deployments: dict[str, Provider] = {}
        self._register_all()
        router = settings.taskloom.router
        if router and router not in plugins.infos:
            raise ConfigError(
                f"{settings.where}: [taskloom] router: no plugin named {router!r}{did_you_mean(router, plugins.infos)}"
            )

        # Decision hooks run on every call, so their implementations are listed once here
        # and called directly in pluggy's order (last registered first), one by one, so a
        # failure is attributed to its plugin and contained. PluginManager.impls wraps
        # them for TASKLOOM_TRACE_PLUGINS, so every one of these calls is traced too.
        self._routers = plugins.impls("taskloom_route", router)
        self._pricers = plugins.impls("taskloom_price")
        self._tool_pricers = plugins.impls("taskloom_tool_price")
        self._policies = plugins.impls("taskloom_check")
        self._sinks = self._active_sinks(plugins.impls("taskloom_event"))
        self.has_sinks = bool(self._sinks)
        """Whether any sink wants events: when not, callers build no event at all."""
        self.has_tool_pricers = bool(self._tool_pricers)
        self.has_routers = bool(self._routers)
        self._policies_for = self._policies_by_kind()
        self.checked = frozenset(kind for kind, impls in self._policies_for.items() if impls)
        """The action kinds at least one policy checks: an action of another kind is
        allowed without building it (``"tool_call" in kernel.checked``)."""

    # ---------------------------------------------------------------- assembly

    def _register_all(self) -> None:
        for hook_name, registry in (
            ("taskloom_register_providers", self.providers),
            ("taskloom_register_caches", self.caches),
            ("taskloom_register_stores", self.stores),
            ("taskloom_register_executors", self.executors),
        ):
            self._registration(hook_name, registry.add, registry.drop_plugin)
        self._registration(
            "taskloom_register_tools",
            lambda tool, plugin, **kw: self.tools.register(tool, plugin=plugin, **kw),
            self.tools.unregister_plugin,
        )

    def _registration(self, hook_name: str, add: Callable[..., Any], undo: Callable[[str], None]) -> None:
        """Call one registration hook plugin by plugin, so whatever a plugin registered is
        attributed to it, and dropped again if it raises."""
        current = [""]

        def register(*args: Any, **kwargs: Any) -> None:
            add(*args, plugin=current[0], **kwargs)

        for plugin, thunk in self.plugins.call_each(hook_name, register=register, settings=self.settings):
            current[0] = plugin
            self._guarded(plugin, hook_name, thunk, undo)

    def _guarded(self, plugin: str, hook_name: str, thunk: Callable[[], Any], undo: Callable[[str], None]) -> None:
        try:
            thunk()
        except Exception as exc:
            undo(plugin)
            self.plugins.fail(plugin, f"{hook_name} raised {type(exc).__name__}: {exc}")

    @property
    def event_sinks(self) -> list[str]:
        """The plugins whose ``taskloom_event`` receives events, in calling order."""
        return [plugin for plugin, _ in self._sinks]

    def _active_sinks(self, sinks: list[tuple[str, Callable[..., Any]]]) -> list[tuple[str, Callable[..., Any]]]:
        """The sinks whose plugin wants events (``taskloom_wants_events``; a plugin that
        does not answer, or raises, gets every event)."""
        answers = self._answers("taskloom_wants_events", {p for p, _ in sinks})
        return [(plugin, sink) for plugin, sink in sinks if answers.get(plugin) is not False]

    def _policies_by_kind(self) -> dict[str, list[tuple[str, Callable[..., Any]]]]:
        """For each action kind, the policies that check it (``taskloom_check_kinds``;
        a plugin that does not answer, or answers with something that is not a list of
        kinds, checks every kind)."""
        answers = self._answers("taskloom_check_kinds", {p for p, _ in self._policies})
        kinds: dict[str, list[tuple[str, Callable[..., Any]]]] = {k: [] for k in ACTION_KINDS}
        for plugin, policy in self._policies:
            wanted = answers.get(plugin)
            if wanted is not None and not (
                isinstance(wanted, list | tuple | set | frozenset) and all(isinstance(k, str) for k in wanted)
            ):
                self.plugins.warn_once(
                    f"taskloom_check_kinds:{plugin}",
                    f"plugin {plugin}: taskloom_check_kinds returned {wanted!r:.80}, not a list of action kinds; "
                    "it is asked about every kind",
                )
                wanted = None
            for kind, impls in kinds.items():
                if wanted is None or kind in wanted:
                    impls.append((plugin, policy))
        return kinds

    def _answers(self, hook_name: str, plugins: set[str]) -> dict[str, Any]:
        """Each of ``plugins``' answer to a once-per-kernel question hook; one that raises
        is reported once and left out (the caller's default applies)."""
        answers: dict[str, Any] = {}
        # (an implementation may leave ``settings`` out of its signature, as pluggy allows)
        takes = {
            i.plugin_name: "settings" in i.argnames for i in getattr(self.plugins.pm.hook, hook_name).get_hookimpls()
        }
        for plugin, function in self.plugins.impls(hook_name):
            if plugin not in plugins:
                continue
            try:
                answers[plugin] = function(settings=self.settings) if takes.get(plugin, True) else function()
            except Exception as exc:
                self.plugins.warn_once(
                    f"{hook_name}:{plugin}", f"plugin {plugin} raised in {hook_name} ({type(exc).__name__}: {exc})"
                )
        return answers

    # ---------------------------------------------------------------- components

    def provider(self, alias: str) -> Provider:
        """The provider for a model alias, created on first use."""
        deployment = self._deployments.get(alias)
        if deployment is None:
            config = self.settings.model(alias)
            reg = self.providers.get(config.provider, f"{self.settings.where}: [models.{alias}] provider")
            deployment = reg.factory(config, self.settings)
            self._deployments[alias] = deployment
        return deployment

    def model_config(self, alias: str) -> ModelConfig:
        return self.settings.model(alias)

    @cached_property
    def cache(self) -> Cache | None:
        name = self.settings.taskloom.cache
        if not name or name == "none":
            return None
        cache: Cache = self.caches.get(name, f"{self.settings.where}: [taskloom] cache").factory(self.settings)
        return cache

    @cached_property
    def store(self) -> RunStore:
        name = self.settings.taskloom.store
        if name is None:
            name = "sqlite" if "sqlite" in self.stores else "memory"
        store: RunStore = self.stores.get(name, f"{self.settings.where}: [taskloom] store").factory(self.settings)
        return store

    @cached_property
    def executor(self) -> Executor:
        name = self.settings.taskloom.executor
        executor: Executor = self.executors.get(name, f"{self.settings.where}: [taskloom] executor").factory(
            self.settings
        )
        return executor

    @cached_property
    def gateway(self) -> Gateway:
        from .gateway import Gateway

        return Gateway(self)

    # ---------------------------------------------------------------- decision hooks

    def route(self, request: ModelRequest) -> list[str] | None:
        """The chain the first router answers with, or None. A router that raises an
        unexpected exception, or answers with something that is not a list of aliases,
        fails the call with :class:`HookFailed` naming it: quietly using another model
        than the router would have chosen could break a budget or a tier."""
        for plugin, router in self._routers:
            try:
                chain: Any = router(request=request, settings=self.settings)
            except TaskloomError:
                raise  # a router's own, deliberate error (e.g. no tier fits the budget)
            except Exception as exc:
                raise HookFailed(plugin, "taskloom_route", f"{type(exc).__name__}: {exc}") from exc
            if chain:
                if not isinstance(chain, list) or not all(isinstance(a, str) for a in chain):
                    raise HookFailed(plugin, "taskloom_route", f"returned {chain!r:.80}, not a list of model aliases")
                return chain
        return None

    def check(self, action: Action) -> None:
        """Run every policy; raise PolicyDenied with the first denial's reason."""
        settings = self.settings
        for plugin, policy in self._policies_for.get(action.kind, self._policies):
            try:
                denial: Denial | None = policy(action=action, settings=settings)
            except Exception as exc:
                # A policy that crashes denies: failing open would bypass every limit.
                raise PolicyDenied(f"policy check failed: {type(exc).__name__}: {exc}", plugin) from exc
            if denial is not None:
                raise PolicyDenied(denial.reason, denial.plugin or plugin)

    def price(self, alias: str, model: str, provider: str, usage: Usage, meta: RequestMeta | None = None) -> Cost:
        """The first cost model's answer; *unpriced* when none knows the model. A cost
        model that raises makes the call unpriced (reported once on stderr and as a
        ``plugin.error`` event): falling through to the next cost model could quietly
        replace an override with a list price."""
        for plugin, pricer in self._pricers:
            try:
                cost: Cost | None = pricer(
                    alias=alias, model=model, provider=provider, usage=usage, settings=self.settings
                )
                if cost is not None and not isinstance(cost, Cost):
                    raise TypeError(f"returned {type(cost).__name__}, not a Cost")
            except Exception as exc:
                self.hook_failed(plugin, "taskloom_price", exc, meta, f"the call to {alias} is unpriced")
                return Cost(priced=False, source=plugin)
            if cost is not None:
                return cost
        return Cost.unpriced()

    def tool_price(self, name: str, arguments: dict[str, Any], meta: RequestMeta | None = None) -> Cost | None:
        total: Cost | None = None
        for plugin, pricer in self._tool_pricers:
            try:
                cost: Cost | None = pricer(name=name, arguments=arguments, settings=self.settings)
            except Exception as exc:
                self.hook_failed(plugin, "taskloom_tool_price", exc, meta, f"its price for {name} is left out")
                continue
            if cost is not None:
                total = cost if total is None else total + cost
        return total

    def emit(self, event: Event) -> None:
        for plugin, sink in self._sinks:
            try:
                sink(event=event)
            except Exception as exc:
                self.plugins.warn_once(f"event:{plugin}", f"progress sink {plugin} raised {type(exc).__name__}: {exc}")

    def hook_failed(
        self, plugin: str, hook: str, exc: BaseException, meta: RequestMeta | None, consequence: str
    ) -> None:
        """Report a contained failure of a decision hook: one warning line per plugin and
        hook, and a ``plugin.error`` event every time."""
        problem = f"{type(exc).__name__}: {exc}"
        self.plugins.warn_once(f"{hook}:{plugin}", f"plugin {plugin} raised in {hook} ({problem}); {consequence}")
        if self.has_sinks:
            m = meta or RequestMeta()
            self.emit(
                Event(
                    kind="plugin.error",
                    run_id=m.run_id,
                    task_id=m.task_id,
                    agent=m.agent,
                    data={"plugin": plugin, "hook": hook, "error": problem, "consequence": consequence},
                )
            )

    # ---------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        for deployment in self._deployments.values():
            await deployment.aclose()
        self._deployments.clear()
        for attr in ("cache", "store", "executor"):
            component = self.__dict__.pop(attr, None)
            if component is not None:
                await component.aclose()

    async def __aenter__(self) -> Kernel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def load_kernel(config: str | os.PathLike[str] | Mapping[str, Any] | None = None) -> Kernel:
    """Assemble the kernel from a config path, a mapping, or (None) the usual places."""
    settings = load_settings(config)
    plugins = PluginManager(settings)
    plugins.load()
    return Kernel(settings, plugins)


__all__ = ["HookFailed", "Kernel", "Registered", "Registry", "Tool", "load_kernel"]
