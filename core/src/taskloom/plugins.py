"""Plugin discovery and loading.

Discovery reads entry-point *names* in the ``taskloom`` group (the name is the plugin's
name) without importing anything; only enabled plugins are imported, like stevedore's
``NamedExtensionManager``. A plugin that fails to import, configure or validate is
recorded with the reason (``taskloom plugins`` shows it) and the rest keep working.

Which plugins are enabled, in order of precedence:
``TASKLOOM_PLUGINS=a,b`` (only these), else ``[taskloom] plugins`` (only these), else all
installed; minus ``TASKLOOM_DISABLE_PLUGINS=a,b`` and ``[taskloom] disable``.

The kernel calls most hooks plugin by plugin (so a failure is attributed to its plugin and
contained), through :meth:`PluginManager.impls`. With ``TASKLOOM_TRACE_PLUGINS=1`` those
calls are wrapped once, at assembly, to print each call and its result to stderr, the
same lines pluggy's call monitoring prints for calls made through ``pm.hook``; with
tracing off the functions are called bare, so the per-call path costs nothing extra.
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
from .errors import ConfigError, PluginError, TaskloomError

GROUP = "taskloom"
hookimpl = pluggy.HookimplMarker("taskloom")

Status = Literal["enabled", "disabled", "failed"]


class HookFailed(PluginError):
    """A plugin raised (or returned nonsense) inside a decision hook, e.g. a router in
    ``taskloom_route``. Names the plugin and the hook; a runtime failure (exit code 1)."""

    exit_code = 1

    def __init__(self, plugin: str, hook: str, problem: str) -> None:
        self.plugin = plugin
        self.hook = hook
        super().__init__(
            f"plugin {plugin!r} failed in {hook}: {problem}; fix the plugin or disable it "
            f"(TASKLOOM_DISABLE_PLUGINS={plugin} or [taskloom] disable = [{plugin!r}])"
        )


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
    # The distribution's entry_points.txt, when it is a file (for the plugin index).
    metadata_file: str | None = field(default=None, repr=False)

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
        dist = dist_name_version(ep)[0] or ""
        # The same distribution seen twice on sys.path (e.g. editable + site) is not a clash.
        if (ep.name, dist) in seen:
            continue
        seen.add((ep.name, dist))
        found.setdefault(ep.name, []).append(ep)
    return found


def dist_name_version(ep: EntryPoint) -> tuple[str | None, str | None]:
    """The (normalized) name and version of the distribution declaring ``ep``.

    Read from the ``<name>-<version>.dist-info`` folder name when there is one, as
    installers write it, rather than by parsing every distribution's METADATA file."""
    dist = ep.dist
    if dist is None:
        return None, None
    folder = os.path.basename(str(getattr(dist, "_path", "")))
    stem, dot, suffix = folder.rpartition(".")
    name, dash, version = stem.partition("-")
    if dot and suffix == "dist-info" and dash and name and version and "-" not in version:
        return name.replace("_", "-").replace(".", "-").lower(), version
    return dist.name, dist.version


def _entry_points_file(ep: EntryPoint) -> str | None:
    folder = getattr(ep.dist, "_path", None)  # a PathDistribution's .dist-info folder
    return os.path.join(str(folder), "entry_points.txt") if folder is not None else None


class PluginManager:
    """Loads the enabled plugins into a pluggy manager and reports on every plugin."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._warned: set[str] = set()
        self.trace = bool(os.environ.get("TASKLOOM_TRACE_PLUGINS"))
        if self.trace:
            self.pm.add_hookcall_monitoring(_trace_before, _trace_after)

    # ---------------------------------------------------------------- loading

    def load(self) -> None:
        installed = discover()
        inprocess = dict(_INPROCESS)
        known = set(installed) | set(inprocess)
        enabled = self._enabled_names(known)
        for name, eps in sorted(installed.items()):
            ep = eps[0]
            distribution, version = dist_name_version(ep)
            info = PluginInfo(
                name=name,
                distribution=distribution,
                version=version,
                target=ep.value,
                metadata_file=_entry_points_file(ep),
            )
            self.infos[name] = info
            if name not in enabled:
                continue
            if len(eps) > 1:
                dists = ", ".join(sorted(dist_name_version(e)[0] or "?" for e in eps))
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
            if name in self.infos:
                other = self.infos[name].distribution or "?"
                raise PluginError(
                    f"in-process plugin {name!r}: an installed plugin of {other} already has that name; "
                    "register it under another name"
                )
            info = PluginInfo(name=name, distribution="(in-process)", target=repr(obj))
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
        for plugin, config_model in self.impls("taskloom_config_model"):
            info = self.infos[plugin]
            try:
                model: Any = config_model()
                self.settings.set_plugin_config(info.name, model)
            except TaskloomError as exc:
                self._fail(info, str(exc))
            except Exception as exc:
                self._fail(info, f"taskloom_config_model raised {type(exc).__name__}: {exc}")
        for plugin, configure in self.impls("taskloom_configure"):
            if self.infos[plugin].status != "enabled":
                continue  # its configuration was refused just above
            try:
                configure(settings=self.settings)
            except Exception as exc:
                self._fail(self.infos[plugin], f"taskloom_configure raised {type(exc).__name__}: {exc}")
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

    def impls(self, hook_name: str, only: str | None = None) -> list[tuple[str, Callable[..., Any]]]:
        """(plugin name, function) of each implementation of a hook, in pluggy's calling
        order (last registered first), optionally only one plugin's. The functions are
        traced when ``TASKLOOM_TRACE_PLUGINS`` is set."""
        found = reversed(getattr(self.pm.hook, hook_name).get_hookimpls())
        out = [(i.plugin_name, i.function) for i in found if only is None or i.plugin_name == only]
        if self.trace:
            out = [(plugin, traced(hook_name, plugin, function)) for plugin, function in out]
        return out

    def call_each(self, hook_name: str, **kwargs: Any) -> Iterable[tuple[str, Callable[[], Any]]]:
        """Yield (plugin name, thunk) for each implementation, so the caller can attribute
        and contain a failure to the plugin that raised."""
        for plugin, function in self.impls(hook_name):
            if self.infos.get(plugin) is None or self.infos[plugin].status == "enabled":
                yield plugin, functools.partial(function, **kwargs)

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


def traced(hook_name: str, plugin: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` wrapped to print its call and its result (or exception) to stderr."""

    def call(**kwargs: Any) -> Any:
        sys.stderr.write(f"taskloom: hook {hook_name} -> [{plugin}] {_args(kwargs)}\n")
        try:
            result = function(**kwargs)
        except BaseException as exc:
            sys.stderr.write(f"taskloom: hook {hook_name} [{plugin}] raised {type(exc).__name__}: {exc}\n")
            raise
        sys.stderr.write(f"taskloom: hook {hook_name} [{plugin}] returned {result!r:.120}\n")
        return result

    return call


def _args(kwargs: Mapping[str, Any]) -> str:
    # Names only for settings and callbacks; a short repr of what decides the call.
    shown = []
    for key, value in kwargs.items():
        if key in ("settings", "register"):
            continue
        if key == "request":
            shown.append(f"request(model={value.model!r})")
        elif key == "action":
            shown.append(f"action(kind={value.kind!r})")
        elif key == "event":
            shown.append(f"event({value.kind!r})")
        else:
            shown.append(f"{key}={value!r:.40}")
    return ", ".join(shown)


def _trace_before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
    names = ", ".join(i.plugin_name for i in impls)
    sys.stderr.write(f"taskloom: hook {hook_name} -> [{names}]\n")


def _trace_after(
    outcome: pluggy.Result[Any], hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
) -> None:
    exc = outcome.exception
    result = f"raised {type(exc).__name__}: {exc}" if exc else f"returned {outcome.get_result()!r:.120}"
    sys.stderr.write(f"taskloom: hook {hook_name} {result}\n")
