"""pytest plugin shipped with taskloom (entry point ``pytest11``): fixtures for plugin
authors.

``taskloom_plugin(obj, name=None)`` registers an in-process plugin for the current test
only, so hook implementations can be tested without installing a package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from . import register_plugin


@pytest.fixture
def taskloom_plugin() -> Iterator[Callable[..., str]]:
    with ExitStack() as stack:

        def add(obj: object, name: str | None = None) -> str:
            return stack.enter_context(register_plugin(obj, name))

        yield add
