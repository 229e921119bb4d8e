"""The shipped examples: valid, planned, and run end to end on the scripted provider
(their ``local`` alias mapped to it). The fan-out example on the embedded model is the
README's main job, tested as a real process in tests/e2e/test_main_job.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from taskloom import hookimpl
from taskloom.cli import main
from taskloom.testing import register_plugin

from .conftest import write

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

SCRIPTED = """
[taskloom]
plugins = ["scripted", "memory-store", "local-executor", "prices", "example-tools", "basic-tools"]
store = "memory"
cache = "none"

[models.local]
provider = "scripted"
default = '{"label": "bug", "steps": ["read the file", "count the words"]}'
"""


class ExampleTools:
    """Stands in for the sandbox plugin's ``python`` tool (the scripted model never calls it)."""

    @hookimpl
    def taskloom_register_tools(self, register: Any, settings: Any) -> None:
        def python(code: str) -> str:
            """Run a Python program.

            Args:
                code: The program.
            """
            return "3.11"

        register(python)


@pytest.fixture
def example_tools() -> Iterator[None]:
    with register_plugin(ExampleTools(), "example-tools"):
        yield


def _run(tmp_path: Path, *args: str) -> Any:
    config = write(tmp_path / "taskloom.toml", SCRIPTED)
    return CliRunner().invoke(main, ["--config", str(config), *args])


@pytest.mark.parametrize("name", ["scout_plan_build.toml", "classify_fanout.toml"])
def test_example_plans(tmp_path: Path, example_tools: None, name: str) -> None:
    result = _run(tmp_path, "plan", str(EXAMPLES / name), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_parallelism"] >= 2


def test_scout_plan_build_runs(tmp_path: Path, example_tools: None) -> None:
    result = _run(tmp_path, "run", str(EXAMPLES / "scout_plan_build.toml"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    tasks = {t["id"]: t for t in data["tasks"]}
    assert data["status"] == "succeeded" and list(tasks) == ["scout_env", "scout_requirements", "plan", "build"]
    assert tasks["plan"]["output"]["steps"] == ["read the file", "count the words"]
    assert data["totals"]["usage"]["total_tokens"] > 0


def test_classify_fanout_runs(tmp_path: Path, example_tools: None) -> None:
    result = _run(tmp_path, "run", str(EXAMPLES / "classify_fanout.toml"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    tasks = {t["id"]: t for t in data["tasks"]}
    assert all(
        tasks[f"classify_{i}"]["output"] == {"label": "bug", "steps": ["read the file", "count the words"]}
        for i in range(1, 5)
    )
    assert tasks["summary"]["state"] == "succeeded" and tasks["triage"]["state"] == "succeeded"
    assert tasks["measure"]["state"] == "succeeded"
