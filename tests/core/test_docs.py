"""Documentation held by tests: every hook and each of its arguments is on docs/plugins.md."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from taskloom import hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs"
HOOKS = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("taskloom_"))


def test_every_hook_has_a_docstring() -> None:
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 80, f"{name} needs a docstring saying when it is called and what it returns"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_documented_with_its_arguments(name: str) -> None:
    page = (DOCS / "plugins.md").read_text()
    params = list(inspect.signature(getattr(hookspecs, name)).parameters)
    heading = re.search(rf"^### `{name}\(([^)]*)\)`", page, re.MULTILINE)
    assert heading, f"docs/plugins.md has no '### `{name}(...)`' heading"
    documented = [p.strip() for p in heading.group(1).split(",") if p.strip()]
    assert documented == params, f"{name}: docs list {documented}, the spec takes {params}"


def test_docs_name_no_hook_that_does_not_exist() -> None:
    page = (DOCS / "plugins.md").read_text()
    for name in set(re.findall(r"^### `(taskloom_\w+)\(", page, re.MULTILINE)):
        assert name in HOOKS, f"docs/plugins.md documents {name}, which is not a hook"
