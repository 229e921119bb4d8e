"""Lazy re-exports keep start-up cheap: a name's module is imported on first use only."""

from __future__ import annotations

import subprocess
import sys

import pytest
import taskloom
from taskloom.lazy import lazy_getattr


def test_a_lazy_name_is_imported_once_and_kept() -> None:
    value = taskloom.load_kernel
    assert "load_kernel" in vars(taskloom) and vars(taskloom)["load_kernel"] is value
    with pytest.raises(AttributeError, match="module 'taskloom' has no attribute 'nope'"):
        taskloom.nope  # noqa: B018


def test_relative_module_names_resolve_against_the_package() -> None:
    getter = lazy_getattr("taskloom", {"Usage": ".types"})
    from taskloom.types import Usage

    assert getter("Usage") is Usage


def test_an_executor_plugin_does_not_pull_in_the_workflow_runner() -> None:
    probe = (
        "import sys, taskloom.workflow.executor, taskloom.builtin.local_executor\n"
        "print(sorted(m for m in ('jinja2', 'taskloom.workflow.runner', 'asyncio') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_local_executor_is_importable_from_its_plugin_module() -> None:
    from taskloom.builtin import local_executor
    from taskloom.builtin.local_runner import LocalExecutor

    assert local_executor.LocalExecutor is LocalExecutor
