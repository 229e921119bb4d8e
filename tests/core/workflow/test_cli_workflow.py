"""``taskloom run``, ``plan`` and ``resume`` through click's runner, on the scripted provider."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from taskloom.cli import main

from .conftest import write

CONFIG = """
[taskloom]
plugins = ["scripted", "memory-store", "local-executor", "prices"]
store = "memory"
cache = "none"

[models.m]
provider = "scripted"
default = "ok: {prompt}"

[models.broken]
provider = "scripted"
responses = [{ error = "bad_request", message = "refused" }]
"""

WORKFLOW = """
[workflow]
name = "hello"
inputs = { who = "world", times = 2 }

[agents.a]
model = "m"

[[tasks]]
id = "greet"
agent = "a"
prompt = "hello {{ inputs.who }} x{{ inputs.times }}"

[[tasks]]
id = "shout"
agent = "a"
needs = ["greet"]
prompt = "shout {{ outputs.greet }}"
"""


def _invoke(tmp_path: Path, *args: str) -> Result:
    config = write(tmp_path / "taskloom.toml", CONFIG)
    return CliRunner().invoke(main, ["--config", str(config), *args])


def test_run_json(tmp_path: Path) -> None:
    wf = write(tmp_path / "hello.toml", WORKFLOW)
    result = _invoke(tmp_path, "run", str(wf), "--input", "who=Ana", "--input", "times=3", "--json", "--run-id", "r-42")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == "r-42" and data["status"] == "succeeded"
    tasks = {t["id"]: t for t in data["tasks"]}
    assert tasks["greet"]["output"] == "ok: hello Ana x3"
    assert tasks["shout"]["output"] == "ok: shout ok: hello Ana x3"
    assert tasks["greet"]["state"] == "succeeded" and tasks["greet"]["attempts"] == 1
    assert tasks["greet"]["usage"]["total_tokens"] > 0 and tasks["greet"]["cost"] == {"total_usd": "0", "priced": True}
    total = sum(t["usage"]["total_tokens"] for t in data["tasks"])
    assert data["totals"]["usage"]["total_tokens"] == total and data["totals"]["cost"]["priced"]


def test_run_text_prints_each_result_and_the_totals(tmp_path: Path) -> None:
    inputs = write(tmp_path / "inputs.json", json.dumps({"who": "Bo"}))
    result = _invoke(tmp_path, "run", str(write(tmp_path / "hello.toml", WORKFLOW)), "--inputs", str(inputs))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "== greet [succeeded] 1 attempt" in out and "ok: hello Bo x2" in out
    assert "== shout [succeeded]" in out
    assert "hello succeeded" not in out and " succeeded · 2 tasks · " in out and "$0" in out


def test_run_failure_exits_1_and_says_how_to_resume(tmp_path: Path) -> None:
    wf = write(tmp_path / "bad.toml", WORKFLOW.replace('model = "m"', 'model = "broken"'))
    result = _invoke(tmp_path, "run", str(wf), "--run-id", "r-bad")
    assert result.exit_code == 1
    assert "== greet [failed]" in result.output and "refused" in result.output
    assert "resume with: taskloom resume r-bad" in result.output


def test_invalid_workflow_exits_2_naming_file_and_task(tmp_path: Path) -> None:
    wf = write(tmp_path / "cycle.toml", WORKFLOW.replace('id = "greet"', 'id = "greet"\nneeds = ["shout"]'))
    result = _invoke(tmp_path, "run", str(wf))
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {wf}: cycle: greet -> shout -> greet; remove one of these needs"
    wf2 = write(tmp_path / "unknown.toml", WORKFLOW.replace('needs = ["greet"]', 'needs = ["gret"]'))
    result = _invoke(tmp_path, "plan", str(wf2))
    assert result.exit_code == 2
    assert f"{wf2}: task 'shout': needs unknown task 'gret' (did you mean 'greet'?)" in result.output
    wf3 = write(tmp_path / "model.toml", WORKFLOW.replace('model = "m"', 'model = "nope"'))
    assert _invoke(tmp_path, "run", str(wf3)).exit_code == 2
    result = _invoke(tmp_path, "run", str(tmp_path / "hello.toml"), "--input", "whom=x")
    assert result.exit_code == 2


def test_bad_inputs_exit_2(tmp_path: Path) -> None:
    wf = write(tmp_path / "hello.toml", WORKFLOW)
    result = _invoke(tmp_path, "run", str(wf), "--input", "whom=x")
    assert result.exit_code == 2 and "unknown input 'whom' (did you mean 'who'?)" in result.output
    result = _invoke(tmp_path, "run", str(wf), "--input", "times=lots")
    assert result.exit_code == 2 and "times expects JSON" in result.output


def test_plan_text_and_json(tmp_path: Path) -> None:
    wf = write(tmp_path / "hello.toml", WORKFLOW)
    result = _invoke(tmp_path, "plan", str(wf))
    assert result.exit_code == 0, result.output
    assert "workflow hello: 2 tasks, 2 levels" in result.output
    assert "critical path: greet -> shout (length 2)" in result.output
    assert "max useful parallelism: 1" in result.output and "estimate: " in result.output
    data = json.loads(_invoke(tmp_path, "plan", str(wf), "--json").stdout)
    assert data["levels"] == [["greet"], ["shout"]] and data["estimate"]["input_tokens"] > 0


def test_resume_unknown_run_exits_2(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "resume", "nope")
    assert result.exit_code == 2 and "no run 'nope' in the run store (memory)" in result.output
