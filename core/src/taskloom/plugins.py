"""Plugin discovery and loading.

Discovery reads entry-point *names* in the ``taskloom`` group (the name is the plugin's
name) without importing anything; only enabled plugins are imported, like stevedore's
``NamedExtensionManager``. A plugin that fails to import, configure or validate is
recorded with the reason (``taskloom plugins`` shows it) and the rest keep working.

Which plugins are enabled, in order of precedence:
``TASKLOOM_PLUGINS=a,b`` (only these), else ``[taskloom] plugins`` (only these), else all
installed; minus ``TASKLOOM_DISABLE_PLUGINS=a,b`` and ``[taskloom] disable``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import pluggy

from . import hookspecs
from .config import Settings, did_you_mean
from .errors import ConfigError, TaskloomError

GROUP = "taskloom"
hookimpl = pluggy.HookimplMarker("taskloom")

Status = Literal["enabled", "disabled", "failed"]


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    target: str = ""
    status: Status = "disabled"
    reason: str | None = None
    hooks: list[str] = field(default_factory=list)
    obj: Any = field(default=None, repr=False)

    @property
    def status_text(self) -> str:
        return f"failed: {self.reason}" if self.status == "failed" else self.status

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "target": self.target,
            "status": self.status,
            "reason": self.reason,
            "hooks": self.hooks,
        }


# In-process plugins added for tests (see taskloom.testing.register_plugin).
_INPROCESS: list[tuple[str, object]] = []


@contextmanager
def inprocess_plugin(obj: object, name: str | None = None) -> Iterator[str]:
    """Make ``obj`` a plugin of every kernel assembled inside the block."""
    plugin_name = name or getattr(obj, "__name__", None) or type(obj).__name__
    entry = (plugin_name, obj)
    _INPROCESS.append(entry)
    try:
        yield plugin_name
    finally:
        _INPROCESS.remove(entry)


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [p.strip() for p in value.split(",") if p.strip()]


def discover() -> dict[str, list[EntryPoint]]:
    """Entry points of the ``taskloom`` group by name (nothing is imported)."""
    found: dict[str, list[EntryPoint]] = {}
    seen: set[tuple[str, str]] = set()
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist else ""
        # The same distribution seen twice on sys.path (e.g. editable + site) is not a clash.
        if (ep.name, dist) in seen:
            continue
        seen.add((ep.name, dist))
        found.setdefault(ep.name, []).append(ep)
    return found


class PluginManager:
    """Loads the enabled plugins into a pluggy manager and reports on every plugin."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._warned: set[str] = set()
        if os.environ.get("TASKLOOM_TRACE_PLUGINS"):
            self.pm.add_hookcall_monitoring(_trace_before, _trace_after)

    # ---------------------------------------------------------------- loading

    def load(self) -> None:
        installed = discover()
        inprocess = dict(_INPROCESS)
        known = set(installed) | set(inprocess)
        enabled = self._enabled_names(known)
        for name, eps in sorted(installed.items()):
            ep = eps[0]
            info = PluginInfo(
                name=name,
                distribution=ep.dist.name if ep.dist else None,
                version=ep.dist.version if ep.dist else None,
                target=ep.value,
            )
            self.infos[name] = info
            if name not in enabled:
                continue
            if len(eps) > 1:
                dists = ", ".join(sorted(e.dist.name if e.dist else "?" for e in eps))
                self._fail(info, f"two installed plugins are named {name!r} ({dists}); uninstall one")
                continue
            try:
                obj = ep.load()
                if isinstance(obj, type):
                    obj = obj()  # a class plugin gets one instance per kernel
            except Exception as exc:  # any import failure is reported, not raised
                self._fail(info, f"cannot import {ep.value}: {type(exc).__name__}: {exc}")
                continue
            self._register(info, obj)
        for name, obj in inprocess.items():
            info = PluginInfo(name=name, distribution="(in-process)", target=repr(obj))
            if name in self.infos:
                self._fail(info, f"an installed plugin is already named {name!r}")
                continue
            self.infos[name] = info
            if name in enabled:
                self._register(info, obj)
        self._configure()

    def _enabled_names(self, known: set[str]) -> set[str]:
        section = self.settings.taskloom
        only = _env_list("TASKLOOM_PLUGINS")
        source = "TASKLOOM_PLUGINS"
        if only is None and section.plugins is not None:
            only, source = section.plugins, f"[taskloom] plugins in {self.settings.where}"
        if only is not None:
            for name in only:
                if name not in known:
                    raise ConfigError(
                        f"{source}: unknown plugin {name!r}{did_you_mean(name, known)}; "
                        f"installed: {', '.join(sorted(known)) or 'none'}"
                    )
            names = set(only)
        else:
            names = set(known)
        return names - set(_env_list("TASKLOOM_DISABLE_PLUGINS") or []) - set(section.disable)

    def _register(self, info: PluginInfo, obj: object) -> None:
        info.obj = obj
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:  # pluggy.PluginValidationError and friends
            self._fail(info, str(exc))
            return
        unknown = [
            impl_name
            for impl_name in dir(obj)
            if impl_name.startswith("taskloom_")
            and self._is_hookimpl(obj, impl_name)
            and not hasattr(hookspecs, impl_name)
        ]
        if unknown:
            specs = [n for n in dir(hookspecs) if n.startswith("taskloom_")]
            name = unknown[0]
            self._fail(info, f"hook {name} matches no hook spec{did_you_mean(name, specs)}")
            return
        info.status = "enabled"
        info.hooks = sorted(
            caller.name
            for caller in self.pm.get_hookcallers(obj) or []
            if caller.name not in ("taskloom_config_model", "taskloom_configure")
        )

    def _is_hookimpl(self, obj: object, name: str) -> bool:
        return self.pm.parse_hookimpl_opts(obj, name) is not None

    def _configure(self) -> None:
        for impl in self.pm.hook.taskloom_config_model.get_hookimpls():
            info = self.infos[impl.plugin_name]
            try:
                model: Any = impl.function()
                self.settings.set_plugin_config(info.name, model)
            except TaskloomError as exc:
                self._fail(info, str(exc))
            except Exception as exc:
                self._fail(info, f"taskloom_config_model raised {type(exc).__name__}: {exc}")
        for impl in self.pm.hook.taskloom_configure.get_hookimpls():
            try:
                impl.function(settings=self.settings)
            except Exception as exc:
                self._fail(self.infos[impl.plugin_name], f"taskloom_configure raised {type(exc).__name__}: {exc}")
        for name, info in self.infos.items():
            if info.status == "enabled" and name not in self.settings._plugin_configs:
                try:
                    self.settings.set_plugin_config(name, None)
                except TaskloomError as exc:
                    self._fail(info, str(exc))
        for name in self.settings.raw.plugins:
            if name not in self.infos:
                raise ConfigError(
                    f"{self.settings.where}: [plugins.{name}]: no installed plugin is named "
                    f"{name!r}{did_you_mean(name, self.infos)}"
                )

    def _fail(self, info: PluginInfo, reason: str) -> None:
        info.status = "failed"
        info.reason = reason
        if info.obj is not None and self.pm.is_registered(info.obj):
            self.pm.unregister(info.obj)

    # ---------------------------------------------------------------- calling

    def fail(self, name: str, reason: str) -> None:
        """Mark a loaded plugin as failed (e.g. it raised in a registration hook)."""
        self._fail(self.infos[name], reason)

    def call_each(self, hook_name: str, **kwargs: Any) -> Iterable[tuple[str, Callable[[], Any]]]:
        """Yield (plugin name, thunk) for each implementation, so the caller can attribute
        and contain a failure to the plugin that raised."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            yield impl.plugin_name, functools.partial(impl.function, **kwargs)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            sys.stderr.write(f"taskloom: warning: {message}\n")

    @property
    def enabled(self) -> list[str]:
        return [n for n, i in self.infos.items() if i.status == "enabled"]

    @property
    def failed(self) -> list[PluginInfo]:
        return [i for i in self.infos.values() if i.status == "failed"]


def _trace_before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
    names = ", ".join(i.plugin_name for i in impls)
    sys.stderr.write(f"taskloom: hook {hook_name} -> [{names}]\n")


def _trace_after(
    outcome: pluggy.Result[Any], hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
) -> None:
    exc = outcome.exception
    result = f"raised {type(exc).__name__}: {exc}" if exc else f"returned {outcome.get_result()!r:.120}"
    sys.stderr.write(f"taskloom: hook {hook_name} {result}\n")
