"""Aids for testing taskloom and its plugins: the scripted provider, in-process plugin
registration, and the conformance suites (``taskloom.testing.conformance``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from taskloom.plugins import inprocess_plugin

from .scripted import ScriptedProvider, Step, make_error


@contextmanager
def register_plugin(obj: object, name: str | None = None) -> Iterator[str]:
    """Make ``obj`` (a module, class instance or any object with ``@hookimpl`` methods) a
    plugin of every kernel assembled inside the block; removed afterwards."""
    with inprocess_plugin(obj, name) as plugin_name:
        yield plugin_name


__all__ = ["ScriptedProvider", "Step", "make_error", "register_plugin"]
