"""Lazy re-exports: a package names its public objects and the modules that hold them,
and each module is imported the first time one of its names is used. This keeps
``import taskloom`` and the loading of a plugin package cheap (``taskloom plugins``
imports every enabled plugin)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``where`` maps each public name to the
    module holding it (absolute, or relative to ``package`` with a leading dot). A name
    is imported once, then kept in the package's namespace.

    Use as ``__getattr__ = lazy_getattr(__name__, {"Thing": ".things"})``."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
