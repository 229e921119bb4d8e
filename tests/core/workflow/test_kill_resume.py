"""A real ``taskloom run`` process killed mid-run (SIGKILL, and SIGTERM), then resumed.

The run store is a small SQLite-backed test plugin, installed for the subprocesses as a
throw-away distribution (real entry-point metadata on PYTHONPATH). It also appends every
``save_task`` to a history table with the writer's pid, so the test can prove that every
task ran to completion exactly once across both processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

STORE_MODULE = """
import json, os, sqlite3, time
from taskloom import hookimpl
from taskloom.records import RunRecord, TaskRecord


class Store:
    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, data TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS tasks (run_id TEXT, task_id TEXT, data TEXT, PRIMARY KEY (run_id, task_id))")
        self.db.execute("CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY, run_id TEXT, task_id TEXT, state TEXT, pid INTEGER)")

    async def create_run(self, run):
        self.db.execute("INSERT INTO runs VALUES (?, ?)", (run.id, run.model_dump_json()))

    async def update_run(self, run):
        self.db.execute("UPDATE runs SET data = ? WHERE id = ?", (run.model_dump_json(), run.id))

    async def get_run(self, run_id):
        row = self.db.execute("SELECT data FROM runs WHERE id = ?", (run_id,)).fetchone()
        return RunRecord.model_validate_json(row[0]) if row else None

    async def list_runs(self, limit=50):
        return [RunRecord.model_validate_json(r[0]) for r in self.db.execute("SELECT data FROM runs LIMIT ?", (limit,))]

    async def save_task(self, task):
        self.db.execute("BEGIN")
        self.db.execute("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?)", (task.run_id, task.task_id, task.model_dump_json()))
        self.db.execute("INSERT INTO history (run_id, task_id, state, pid) VALUES (?, ?, ?, ?)", (task.run_id, task.task_id, task.state, os.getpid()))
        self.db.execute("COMMIT")

    async def get_tasks(self, run_id):
        return [TaskRecord.model_validate_json(r[0]) for r in self.db.execute("SELECT data FROM tasks WHERE run_id = ?", (run_id,))]

    async def record_call(self, call): pass
    async def record_tool_call(self, call): pass
    async def record_event(self, event): pass
    async def get_calls(self, run_id): return []
    async def get_tool_calls(self, run_id): return []

    async def aclose(self):
        self.db.close()


@hookimpl
def taskloom_register_stores(register, settings):
    register("wftest", lambda settings: Store(os.environ["WF_TEST_DB"]))
"""

WORKFLOW = """
[workflow]
name = "killme"

[agents.quick]
model = "quick"
[agents.slow]
model = "slow"

[[tasks]]
id = "a"
agent = "quick"
prompt = "a"
[[tasks]]
id = "b"
agent = "quick"
prompt = "b {{ outputs.a }}"
needs = ["a"]
[[tasks]]
id = "c"
agent = "quick"
prompt = "c"
[[tasks]]
id = "e"
agent = "quick"
prompt = "e"
needs = ["a"]
[[tasks]]
id = "long"
agent = "slow"
prompt = "long {{ outputs.b }}"
needs = ["b"]
[[tasks]]
id = "d"
agent = "quick"
prompt = "d {{ outputs.long }} {{ outputs.c }}"
needs = ["long", "c"]
"""


def _config(slow_delay: float) -> str:
    return f"""
[taskloom]
plugins = ["scripted", "local-executor", "prices", "wf-test-store"]
store = "wftest"
cache = "none"

[models.quick]
provider = "scripted"
default = "q({{prompt}})"

[models.slow]
provider = "scripted"
responses = [{{ text = "slow done", delay = {slow_delay} }}]
""".replace("{{prompt}}", "{prompt}")


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    plug = tmp_path / "plug"
    info = plug / "wf_test_store-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wf-test-store\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[taskloom]\nwf-test-store = wf_test_store\n")
    (plug / "wf_test_store.py").write_text(STORE_MODULE)
    (tmp_path / "wf.toml").write_text(WORKFLOW)
    (tmp_path / "slow.toml").write_text(_config(60.0))
    (tmp_path / "fast.toml").write_text(_config(0.05))
    db = tmp_path / "runs.db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plug), os.environ.get("PYTHONPATH", "")]),
        "WF_TEST_DB": str(db),
        "TASKLOOM_PROGRESS": "0",
    }
    return {"dir": tmp_path, "db": db, "env": env, "exe": str(Path(sys.executable).parent / "taskloom")}


def _states(db: Path, run_id: str) -> dict[str, str]:
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = con.execute("SELECT task_id, data FROM tasks WHERE run_id = ?", (run_id,)).fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    return {tid: json.loads(data)["state"] for tid, data in rows}


def _history(db: Path) -> list[tuple[str, str, int]]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("SELECT task_id, state, pid FROM history ORDER BY seq").fetchall()
    finally:
        con.close()


def _run_status(db: Path, run_id: str) -> str:
    con = sqlite3.connect(db, timeout=30)
    try:
        return str(json.loads(con.execute("SELECT data FROM runs WHERE id = ?", (run_id,)).fetchone()[0])["status"])
    finally:
        con.close()


def _start_and_wait_for_long(s: dict[str, Any], run_id: str) -> subprocess.Popen[bytes]:
    cmd = [s["exe"], "--config", str(s["dir"] / "slow.toml"), "run", str(s["dir"] / "wf.toml"), "--run-id", run_id]
    proc = subprocess.Popen(cmd, env=s["env"], cwd=s["dir"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    want = {"a": "succeeded", "b": "succeeded", "c": "succeeded", "e": "succeeded", "long": "running"}
    while time.monotonic() < deadline:
        if _states(s["db"], run_id) == want:
            return proc
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"taskloom run exited early ({proc.returncode}): {out.decode()} {err.decode()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the run never reached the kill point; states: {_states(s['db'], run_id)}")


def test_sigkill_mid_run_then_resume_runs_every_task_exactly_once(setup: dict[str, Any]) -> None:
    s = setup
    proc = _start_and_wait_for_long(s, "k1")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert _run_status(s["db"], "k1") == "running"  # it never got to say otherwise
    first_pid = proc.pid

    done = subprocess.run(
        [s["exe"], "--config", str(s["dir"] / "fast.toml"), "resume", "k1", "--json"],
        env=s["env"], cwd=s["dir"], capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    data = json.loads(done.stdout)
    assert data["status"] == "succeeded"
    outputs = {t["id"]: t["output"] for t in data["tasks"]}
    assert outputs["long"] == "slow done" and outputs["d"] == "q(d slow done q(c))"
    assert _run_status(s["db"], "k1") == "succeeded"

    history = _history(s["db"])
    succeeded = [tid for tid, state, _ in history if state == "succeeded"]
    assert sorted(succeeded) == ["a", "b", "c", "d", "e", "long"], history  # each exactly once
    # What finished before the kill was never started again by the resuming process.
    for tid in ("a", "b", "c", "e"):
        assert {pid for t, _, pid in history if t == tid} == {first_pid}, history
    # "long" was running when killed: started in both processes, finished only in the second.
    assert [(state, pid == first_pid) for t, state, pid in history if t == "long"] == [
        ("running", True), ("running", False), ("succeeded", False),
    ]  # fmt: skip


def test_sigterm_records_interrupted_and_exits_130(setup: dict[str, Any]) -> None:
    s = setup
    proc = _start_and_wait_for_long(s, "t1")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err.decode()
    assert _run_status(s["db"], "t1") == "interrupted"
    assert _states(s["db"], "t1")["long"] == "interrupted"
    assert "long [interrupted]" in out.decode() and "resume with: taskloom resume t1" in err.decode()
    assert "interrupted by SIGTERM" in err.decode()


def test_sigint_records_interrupted_and_exits_130(setup: dict[str, Any]) -> None:
    # What Ctrl-C sends to the foreground process.
    s = setup
    proc = _start_and_wait_for_long(s, "i1")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode() and "KeyboardInterrupt" not in err.decode()
    assert _run_status(s["db"], "i1") == "interrupted"
    states = _states(s["db"], "i1")
    assert states["long"] == "interrupted" and "d" not in states
    assert all(states[t] == "succeeded" for t in ("a", "b", "c", "e"))
    assert "long [interrupted]" in out.decode() and "interrupted by SIGINT" in err.decode()
    assert "resume with: taskloom resume i1" in err.decode()
