"""The README's main job, exactly as a new user runs it: ``taskloom run
examples/classify_fanout.toml`` in a folder with no configuration, as a real process, on
the embedded SmolLM2 model, offline. Then ``taskloom runs`` and ``taskloom cost`` read
the run back from the default SQLite store in the user data dir."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "classify_fanout.toml"


def taskloom_command() -> list[str]:
    script = Path(sys.executable).with_name("taskloom")
    if script.exists():
        return [str(script)]
    found = shutil.which("taskloom")
    if found is None:
        pytest.fail("the `taskloom` command is not installed next to this Python: pip install .")
    return [found]


def taskloom(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKLOOM_")}
    return subprocess.run(
        [*taskloom_command(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_the_readme_main_job_runs_offline_on_the_embedded_model(tmp_path: Path) -> None:
    data_home = Path(os.environ["XDG_DATA_HOME"])  # isolated per test by tests/conftest.py
    assert not (tmp_path / "taskloom.toml").exists()

    run = taskloom(tmp_path, "run", str(EXAMPLE))
    assert run.returncode == 0, run.stdout + run.stderr
    # The token and cost report closes the output: run id, status, tasks, tokens, cost.
    report = re.search(r"run (\S+) succeeded · 7 tasks · ([\d,]+) tokens .* · \$0\b", run.stdout)
    assert report is not None, run.stdout
    run_id, tokens = report.group(1), int(report.group(2).replace(",", ""))
    assert tokens > 0
    for task in ("classify_1", "classify_2", "classify_3", "classify_4", "measure", "summary"):
        assert f"== {task} [succeeded]" in run.stdout, run.stdout

    # Structured output held: every label is one the schema allows.
    labels = re.findall(r'"label": "(\w+)"', run.stdout)
    assert len(labels) == 4 and set(labels) <= {"bug", "feature", "question"}, run.stdout

    # The default run store is SQLite under the user data dir, so the run can be read back.
    assert list(data_home.rglob("*.db")) or list(data_home.rglob("*.sqlite*")), list(data_home.rglob("*"))
    runs = as_json(taskloom(tmp_path, "runs", "--json"))
    assert [r["id"] for r in runs] == [run_id] and runs[0]["tokens"] == tokens

    # The counter agent really called its tool, and the bill accounts for it.
    bill = as_json(taskloom(tmp_path, "cost", run_id, "--by", "tool", "--format", "json"))
    rows = {row["key"]: row for row in bill["rows"]}
    assert rows["word_count"]["tool_calls"] >= 1, bill
    assert bill["total"]["model_calls"] >= 8 and bill["total"]["unpriced_calls"] == 0
    assert bill["total"]["input_tokens"] + bill["total"]["output_tokens"] == tokens
