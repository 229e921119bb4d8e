"""A real driver killed mid-run: ``taskloom run`` (executor "ray", SQLite store in a file) is
SIGKILLed while a task runs on Ray (a Ray task, or an actor of the pool), then ``taskloom
resume RUN_ID`` finishes the run.

Both commands are subprocesses with no Ray address, so each starts its own local cluster
(the executor's own ``ray.init`` branch) with the ``runtime_env`` of ``[plugins.ray]``,
which is what puts the test providers (``ray_marker``) on the workers. The probe provider
appends every call's start and end to a file: the side effects counted below.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_marker import read_log

HERE = Path(__file__).resolve().parent
TASKLOOM = Path(sys.executable).with_name("taskloom")

pytestmark = pytest.mark.slow

WORKFLOW = """
[workflow]
name = "driver-kill"

[agents.a]
model = "p"
limits = { max_turns = 1 }

[[tasks]]
id = "one"
agent = "a"
prompt = "one"

[[tasks]]
id = "two"
agent = "a"
prompt = "two"

[[tasks]]
id = "three"
agent = "a"
prompt = "three [hang] after {{ outputs.one }}"
needs = ["one", "two"]

[[tasks]]
id = "four"
agent = "a"
prompt = "four"
needs = ["three"]

[[tasks]]
id = "five"
agent = "a"
prompt = "five"
needs = ["three"]
"""


def write_config(tmp: Path, mode: str) -> Path:
    env_vars = {"PYTHONPATH": str(HERE), "TASKLOOM_PROBE": "from-runtime-env"}
    config = f"""
[taskloom]
executor = "ray"
store = "sqlite"
cache = "none"
default_model = "p"

[plugins.sqlite]
store_path = {json.dumps(str(tmp / "runs.db"))}

[plugins.ray]
mode = "{mode}"
actors = 1
num_cpus = 0.5
local_num_cpus = 2
runtime_env = {{ env_vars = {{ {", ".join(f"{k} = {json.dumps(v)}" for k, v in env_vars.items())} }}, worker_process_setup_hook = "ray_marker.setup" }}

[models.p]
provider = "probe"
log = {json.dumps(str(tmp / "calls.jsonl"))}
hang_marker = {json.dumps(str(tmp / "hang.pid"))}
echo_env = "TASKLOOM_PROBE"
"""
    path = tmp / "taskloom.toml"
    path.write_text(config)
    return path


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no cluster to connect to
    env.setdefault("TIKTOKEN_CACHE_DIR", "/work/shared/tiktoken")
    return env


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("mode", ["tasks", "actors"])
def test_a_killed_driver_resumes_on_ray_and_every_task_completes_exactly_once(tmp_path: Path, mode: str) -> None:
    assert TASKLOOM.exists(), f"the taskloom command is not installed next to {sys.executable}"
    config = write_config(tmp_path, mode)
    workflow = tmp_path / "workflow.toml"
    workflow.write_text(WORKFLOW)
    log, marker = tmp_path / "calls.jsonl", tmp_path / "hang.pid"
    command = [str(TASKLOOM), "--config", str(config)]
    driver = subprocess.Popen(
        [*command, "run", str(workflow), "--run-id", "r-kill", "--json"],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (marker.exists() and marker.read_text()):
            if driver.poll() is not None:
                out, err = driver.communicate()
                pytest.fail(f"the driver exited ({driver.returncode}) before task 'three' started:\n{out!r}\n{err!r}")
            assert time.monotonic() < deadline, "task 'three' did not start on Ray within 120 s"
            time.sleep(0.1)
        worker = int(marker.read_text())
        raylet = parent_of(worker)
        assert parent_of(raylet) == driver.pid, "the driver started its own local Ray cluster (its raylet is a child)"
        done = [e["prompt"] for e in read_log(log) if e["event"] == "end"]
        assert sorted(done) == ["one", "two"], done
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.communicate(timeout=30)
    assert driver.returncode == -signal.SIGKILL

    # The attempt that was running dies with the driver's cluster: nothing is left behind.
    deadline = time.monotonic() + 30
    while alive(worker) or alive(raylet):
        assert time.monotonic() < deadline, f"Ray worker {worker} or raylet {raylet} outlived the killed driver"
        time.sleep(0.2)

    resumed = subprocess.run(
        [*command, "resume", "r-kill", "--json"],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, f"resume failed ({resumed.returncode}):\n{resumed.stdout}\n{resumed.stderr}"
    result = json.loads(resumed.stdout)
    assert result["status"] == "succeeded"
    tasks = {t["id"]: t for t in result["tasks"]}
    assert all(t["state"] == "succeeded" for t in tasks.values()), tasks
    assert tasks["four"]["output"] == "<four> TASKLOOM_PROBE=from-runtime-env", "runtime_env reached the workers"
    assert tasks["three"]["output"].startswith("<three [hang] after <one> TASKLOOM_PROBE=from-runtime-env>")

    events = read_log(log)
    finished = sorted(e["prompt"].split()[0] for e in events if e["event"] == "end")
    assert finished == ["five", "four", "one", "three", "two"], "every task completed exactly once"
    started = sorted(e["prompt"].split()[0] for e in events if e["event"] == "start")
    assert started == ["five", "four", "one", "three", "three", "two"], "only the interrupted task ran again"
    hung_at = next(e["t"] for e in events if e["event"] == "start" and e["prompt"].startswith("three"))
    resumed_pids = {e["pid"] for e in events if e["t"] > hung_at}
    assert worker not in resumed_pids, "the resumed run used a new cluster's workers"
