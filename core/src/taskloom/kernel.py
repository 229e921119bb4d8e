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
from .plugins import PluginManager
from .tools import Tool, ToolRegistry
from .types import Action, Cache, Cost, Denial, Event, ModelRequest, Provider, Usage

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
        hook = plugins.pm.hook
        router = settings.taskloom.router
        if router and router not in plugins.infos:
            raise ConfigError(
                f"{settings.where}: [taskloom] router: no plugin named {router!r}{did_you_mean(router, plugins.infos)}"
            )

        # Decision hooks run on every call, so their implementations are listed once here
        # and called directly in pluggy's order (last registered first). Policies and sinks
        # are called one by one so a failure is attributed to its plugin and never stops
        # delivery to the others. With TASKLOOM_TRACE_PLUGINS set, events still go through
        # pluggy so that they are traced.
        def impls(name: str, only: str | None = None) -> list[tuple[str, Callable[..., Any]]]:
            found = reversed(getattr(hook, name).get_hookimpls())
            return [(i.plugin_name, i.function) for i in found if only is None or i.plugin_name == only]

        self._routers = impls("taskloom_route", router)
        self._pricers = impls("taskloom_price")
        self._tool_pricers = impls("taskloom_tool_price")
        self._traced = bool(os.environ.get("TASKLOOM_TRACE_PLUGINS"))
        self._policies = impls("taskloom_check")
        self._sinks = impls("taskloom_event")
        self.has_sinks = bool(self._sinks)
        self.has_policies = bool(self._policies)

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
        for _, router in self._routers:
            chain: list[str] | None = router(request=request, settings=self.settings)
            if chain:
                return chain
        return None

    def check(self, action: Action) -> None:
        """Run every policy; raise PolicyDenied with the first denial's reason."""
        settings = self.settings
        for plugin, policy in self._policies:
            try:
                denial: Denial | None = policy(action=action, settings=settings)
            except Exception as exc:
                # A policy that crashes denies: failing open would bypass every limit.
                raise PolicyDenied(f"policy check failed: {type(exc).__name__}: {exc}", plugin) from exc
            if denial is not None:
                raise PolicyDenied(denial.reason, denial.plugin or plugin)

    def price(self, alias: str, model: str, provider: str, usage: Usage) -> Cost:
        for plugin, pricer in self._pricers:
            try:
                cost: Cost | None = pricer(
                    alias=alias, model=model, provider=provider, usage=usage, settings=self.settings
                )
            except Exception as exc:
                self.plugins.warn_once(f"price:{plugin}", f"cost model {plugin} raised {type(exc).__name__}: {exc}")
                continue
            if cost is not None:
                return cost
        return Cost.unpriced()

    def tool_price(self, name: str, arguments: dict[str, Any]) -> Cost | None:
        total: Cost | None = None
        for plugin, pricer in self._tool_pricers:
            try:
                cost: Cost | None = pricer(name=name, arguments=arguments, settings=self.settings)
            except Exception as exc:
                self.plugins.warn_once(
                    f"tool-price:{plugin}", f"cost model {plugin} raised {type(exc).__name__}: {exc}"
                )
                continue
            if cost is not None:
                total = cost if total is None else total + cost
        return total

    def emit(self, event: Event) -> None:
        if self._traced:
            self.plugins.pm.hook.taskloom_event(event=event)
            return
        for plugin, sink in self._sinks:
            try:
                sink(event=event)
            except Exception as exc:
                self.plugins.warn_once(f"event:{plugin}", f"progress sink {plugin} raised {type(exc).__name__}: {exc}")

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


__all__ = ["Kernel", "Registered", "Registry", "Tool", "load_kernel"]
