"""The plugin index: what the last full plugin load found, kept with a fingerprint of
everything that decided it, so ``taskloom plugins`` can answer again without importing
the plugins, pluggy's machinery or pydantic.

An entry is used only while its fingerprint still holds. The fingerprint covers:

* the interpreter and ``sys.path``, with the modification time of every ``sys.path``
  folder (installing or removing a distribution adds or removes a ``.dist-info`` folder
  there);
* every source file that was imported when the index was written -- the plugins, their
  dependencies and the kernel -- by modification time and size, plus the
  ``entry_points.txt`` of each distribution that declares a plugin;
* the working directory and the content (a hash, never the text) of the configuration
  file that would be read, or its absence;
* the environment (a hash of every variable but a few that shells change on every
  prompt), so ``TASKLOOM_PLUGINS`` and friends, and any variable a plugin reads, count.

Anything else a plugin's status could depend on (a binary appearing on ``PATH`` under
the same name, say) is outside what the index sees: ``taskloom plugins --refresh`` loads
every plugin again and rewrites the entry. ``TASKLOOM_PLUGIN_INDEX=0`` turns the index
off. Only ``taskloom plugins`` reads and writes it; commands that run anything always
load the plugins for real.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

FORMAT = 1
# Entries kept (one per interpreter, sys.path, working directory and --config); the
# least recently written go first.
MAX_ENTRIES = 64

# Variables an interactive shell changes between two identical commands.
_VOLATILE_ENV = frozenset({"_", "OLDPWD", "PWD", "SHLVL", "COLUMNS", "LINES", "HISTCMD", "RANDOM", "SECONDS"})


def enabled() -> bool:
    return os.environ.get("TASKLOOM_PLUGIN_INDEX", "1").lower() not in ("0", "false", "no", "off")


def index_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("taskloom", appauthor=False)) / "plugin-index"


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _entry_path(config: str | None) -> Path:
    key = _digest(FORMAT, sys.executable, sys.version, sys.path, os.getcwd(), config)
    return index_dir() / f"{key[:32]}.json"


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return None


def _file_state(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def _config_state(config: str | None) -> list[Any]:
    explicit = config or os.environ.get("TASKLOOM_CONFIG") or None
    candidates = [explicit] if explicit else ["taskloom.toml", "pyproject.toml"]
    state: list[Any] = []
    for name in candidates:
        try:
            state.append([name, hashlib.sha256(Path(name).read_bytes()).hexdigest()])
        except OSError as exc:
            state.append([name, type(exc).__name__])
    return state


def _env_state() -> str:
    return _digest(sorted((k, v) for k, v in os.environ.items() if k not in _VOLATILE_ENV))


def _volatile_fingerprint(config: str | None) -> dict[str, Any]:
    """The parts recomputed on every lookup (everything but the file list)."""
    return {
        "paths": [[p, _mtime(p)] for p in sys.path],
        "config": _config_state(config),
        "env": _env_state(),
    }


def lookup(config: str | None) -> list[dict[str, Any]] | None:
    """The plugin rows recorded for this configuration, or None when there are none or
    anything they depend on has changed since."""
    if not enabled() or _has_inprocess_plugins():
        return None
    try:
        entry = json.loads(_entry_path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return None
    if entry.get("fingerprint") != _volatile_fingerprint(config):
        return None
    files = entry.get("files")
    if not isinstance(files, dict):
        return None
    for path, state in files.items():
        if _file_state(path) != state:
            return None
    rows = entry.get("plugins")
    return rows if isinstance(rows, list) else None


def save(config: str | None, rows: list[dict[str, Any]], entry_point_files: list[str]) -> None:
    """Record ``rows`` (as ``taskloom plugins --json`` prints them) for this configuration.

    Call it after the plugins were loaded for real in this process, so every file they
    imported is in ``sys.modules``. A cache folder that cannot be written only costs the
    next listing its speed."""
    if not enabled() or _has_inprocess_plugins():
        return
    files: dict[str, list[int] | None] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            files[path] = _file_state(path)
    for path in entry_point_files:
        files[path] = _file_state(path)
    entry = {"format": FORMAT, "fingerprint": _volatile_fingerprint(config), "files": files, "plugins": rows}
    target = _entry_path(config)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(entry), encoding="utf-8")
        os.replace(partial, target)
        _prune(target.parent)
    except OSError:
        pass


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    for old in entries[: max(0, len(entries) - MAX_ENTRIES)]:
        old.unlink(missing_ok=True)


def _has_inprocess_plugins() -> bool:
    # In-process plugins (taskloom.testing) live in taskloom.plugins; when that module is
    # not imported, there are none, and importing it here would cost what the index saves.
    plugins = sys.modules.get("taskloom.plugins")
    return bool(plugins is not None and getattr(plugins, "_INPROCESS", None))
