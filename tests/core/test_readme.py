"""The README stays true: its links resolve, every first-party plugin is in its table,
and its two set-up commands are the ones CI runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _entry_points(pyproject: Path) -> list[str]:
    data = tomllib.loads(pyproject.read_text())
    return list(data["project"].get("entry-points", {}).get("taskloom", {}))


def test_every_relative_link_resolves() -> None:
    links = re.findall(r"\]\(([^)#\s]+)\)", README)
    assert links, "the README links to its docs"
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


@pytest.mark.parametrize("pyproject", [*sorted(ROOT.glob("*/*/pyproject.toml")), ROOT / "core" / "pyproject.toml"])
def test_every_plugin_is_in_the_readme(pyproject: Path) -> None:
    distribution = tomllib.loads(pyproject.read_text())["project"]["name"]
    assert f"`{distribution}`" in README, f"{distribution} is missing from the README's table"
    if pyproject.parent.name == "core":
        for name in _entry_points(pyproject):
            assert f"`{name}`" in README, f"built-in plugin {name!r} is missing from the README's table"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = re.findall(r"^python3 -m pip install .+$", README, re.MULTILINE)
    assert len(commands) == 2, commands
    main_job, test_suite = commands
    assert "taskloom run examples/" in main_job
    example = re.search(r"taskloom run (\S+)", main_job)
    assert example is not None and (ROOT / example.group(1)).is_file()
    assert test_suite in (ROOT / ".ci" / "run").read_text()
