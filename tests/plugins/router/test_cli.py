"""``taskloom router explain`` and ``taskloom router stats``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from taskloom.cli import main

TOML = """
[taskloom]
plugins = ["router", "scripted", "prices", "memory-store"]
store = "memory"
cache = "none"

[models.nano]
provider = "scripted"
model = "gpt-4.1-nano"
default = "nano says hi"
price = { input = 0.10, output = 0.40 }

[models.big]
provider = "scripted"
model = "gpt-4.1"
default = "big says hi"
price = { input = 2.0, output = 8.0 }

[plugins.router]
state_path = "{state}"
tiers = [
  { name = "weak", deployments = [{ model = "nano", weight = 2, rpm = 60 }] },
  { name = "strong", deployments = ["big"] },
]
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "taskloom.toml"
    path.write_text(TOML.replace("{state}", str(tmp_path / "router.json")))
    return path


def run(cfg: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(cfg), *args])
    return result.exit_code, result.output


def test_explain_text(cfg: Path) -> None:
    code, out = run(cfg, "router", "explain", "Is this spam?", "--task-type", "classification")
    assert code == 0, out
    assert "score 2 -> tier weak (deployment nano)" in out
    assert "task_type" in out and "classification" in out and "prompt_tokens" in out
    assert "tiers: weak <= 5.5, strong <= 10" in out
    assert "chain: nano -> big" in out


def test_explain_json(cfg: Path) -> None:
    code, out = run(
        cfg,
        "router",
        "explain",
        "Plan the migration",
        "--task-type",
        "multi_step_reasoning",
        "--tools",
        "3",
        "--structured",
        "--json",
    )
    assert code == 0, out
    data = json.loads(out)
    assert data["score"] == 10.0 and data["tier"] == "strong" and data["deployment"] == "big"
    assert data["factors"]["tools"] == 1.0 and data["factors"]["structured_output"] == 1.0


def test_explain_over_budget_fails(cfg: Path) -> None:
    code, out = run(cfg, "router", "explain", "hi", "--budget", "0.0000001", "--max-tokens", "1000")
    assert code == 1
    assert "error: router: the cheapest call in any tier would cost about" in out


def test_stats_after_a_run(cfg: Path) -> None:
    code, out = run(cfg, "ask", "--model", "auto", "hello")
    assert code == 0, out
    code, out = run(cfg, "router", "stats", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["decisions"] == {"weak": 1, "strong": 0}
    assert float(data["cost_usd"]) > 0 and data["saving_pct"] == pytest.approx(95.0, abs=0.1)
    code, out = run(cfg, "router", "stats")
    assert "decisions: 1" in out and "weak" in out and "saving 95.0%" in out


def test_unknown_alias_in_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "taskloom.toml"
    path.write_text(
        TOML.replace('deployments = ["big"]', 'deployments = ["bigg"]').replace("{state}", str(tmp_path / "r.json"))
    )
    code, out = run(path, "router", "stats")
    assert code != 0
    assert "unknown model alias 'bigg' (did you mean 'big'?)" in out


STORE_TOML = """
[taskloom]
plugins = ["router", "scripted", "prices", "sqlite", "local-executor"]
store = "sqlite"
cache = "none"

[plugins.sqlite]
store_path = "{store}"

[models.nano]
provider = "scripted"
model = "gpt-4.1-nano"
default = "spam"
price = { input = 0.10, output = 0.40 }

[models.big]
provider = "scripted"
model = "gpt-4.1"
default = "spam"
price = { input = 2.0, output = 8.0 }

[plugins.router]
tiers = [{ name = "weak", deployments = ["nano"] }, { name = "strong", deployments = ["big"] }]
"""

WORKFLOW = """
[workflow]
name = "triage"

[agents.labeller]
model = "auto"
task_type = "classification"

[[tasks]]
id = "label"
agent = "labeller"
prompt = "Is this spam?"
"""


def test_learn_counts_the_run_stores_outcomes_once(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    plain = tmp_path / "plain.toml"  # runs the workflow, keeps no router state
    plain.write_text(STORE_TOML.replace("{store}", str(store)))
    cached = tmp_path / "cached.toml"  # the same store, with a router state file
    cached.write_text(STORE_TOML.replace("{store}", str(store)) + f'state_path = "{tmp_path / "router.json"}"\n')
    wf = tmp_path / "triage.toml"
    wf.write_text(WORKFLOW)
    code, out = run(plain, "run", str(wf))
    assert code == 0, out
    code, out = run(cached, "router", "learn", "--json")
    assert code == 0, out
    assert json.loads(out)["runs"] == 1 and json.loads(out)["outcomes"] == 1
    code, out = run(cached, "router", "stats", "--json")
    assert json.loads(out)["outcomes"] == [
        {"task_type": "classification", "size": "tiny", "tier": "weak", "succeeded": 1.0, "failed": 0.0}
    ]
    code, out = run(cached, "router", "learn")
    assert code == 0 and "learned 0 outcomes from 0 runs" in out
