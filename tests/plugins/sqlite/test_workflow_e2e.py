"""End to end: `taskloom run` a workflow on the scripted provider with the SQLite store in
a subprocess, then `runs`, `runs show` and `cost` read it back from this process."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("taskloom.workflow")

from .conftest import write_toml

WORKFLOW = """
[workflow]
name = "e2e"

[agents.writer]
model = "fake"
system = "You write."

[[tasks]]
id = "plan"
agent = "writer"
prompt = "plan it"

[[tasks]]
id = "left"
agent = "writer"
prompt = "left after {{ outputs.plan }}"
needs = ["plan"]

[[tasks]]
id = "right"
agent = "writer"
prompt = "right after {{ outputs.plan }}"
needs = ["plan"]

[[tasks]]
id = "join"
agent = "writer"
prompt = "join"
needs = ["left", "right"]
"""


def _run_in_subprocess(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from taskloom.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(config), *args], capture_output=True, text=True, timeout=120
    )


def _taskloom(config: Path, *args: str) -> Any:
    from click.testing import CliRunner
    from taskloom.cli import main

    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_run_then_runs_show_and_cost(tmp_path: Path, config: dict[str, Any]) -> None:
    path = write_toml(tmp_path / "taskloom.toml", config)
    (tmp_path / "wf.toml").write_text(WORKFLOW)
    done = _run_in_subprocess(path, "run", str(tmp_path / "wf.toml"), "--run-id", "e2e-1", "--json")
    assert done.returncode == 0, done.stderr + done.stdout

    runs = _taskloom(path, "runs", "--json")
    assert runs.returncode == 0, runs.stderr
    (row,) = json.loads(runs.stdout)
    assert row["id"] == "e2e-1" and row["status"] == "succeeded" and row["workflow"] == "e2e"
    assert row["tokens"] > 0 and Decimal(row["cost"]) > 0

    show = _taskloom(path, "runs", "show", "e2e-1", "--json")
    assert show.returncode == 0, show.stderr
    detail = json.loads(show.stdout)
    (plan,) = detail["tasks"]
    assert plan["task_id"] == "plan" and plan["state"] == "succeeded" and plan["attempts"] == 1
    assert sorted(c["task_id"] for c in plan["children"]) == ["left", "right"]
    assert all(c["tokens"] > 0 for c in plan["children"])

    report = _taskloom(path, "cost", "e2e-1", "--by", "task", "--format", "json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert {r["key"] for r in data["rows"]} == {"plan", "left", "right", "join"}
    assert Decimal(data["total"]["cost"]) == sum(Decimal(r["cost"]) for r in data["rows"])
    assert Decimal(data["total"]["cost_exact"]) == Decimal(row["cost"])
    assert data["total"]["model_calls"] == 4

    text = _taskloom(path, "runs", "show", "e2e-1")
    assert text.returncode == 0 and "join" in text.stdout and "succeeded" in text.stdout
