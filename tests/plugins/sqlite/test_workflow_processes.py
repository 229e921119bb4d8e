"""Real ``taskloom run`` processes on the real SQLite run store (a file in tmp_path):

* one killed with SIGKILL mid-run, then ``taskloom resume RUN_ID`` in a new process: every
  task ran to completion exactly once across the two;
* two runs at once against the same file: both complete, nothing is lost.

The model is a throw-away provider plugin (real entry-point metadata on PYTHONPATH): the
scripted provider, which appends ``start``/``done`` lines with the run, task and pid to a
file around each call. Those lines are the side effects the tests count.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

PROVIDER_MODULE = """
import os
import anyio
from taskloom import hookimpl
from taskloom.testing import ScriptedProvider


def _log(what, meta):
    fd = os.open(os.environ["WF_SIDE_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{what} {meta.run_id} {meta.task_id} {os.getpid()}\\n".encode())
    finally:
        os.close(fd)


_passed = False


async def _barrier():
    # With WF_BARRIER=DIR:N, calls wait until N processes have made their first call.
    global _passed
    where, n = os.environ["WF_BARRIER"].rsplit(":", 1)
    open(os.path.join(where, f"ready-{os.getpid()}"), "a").close()
    for _ in range(3000):
        if _passed or sum(1 for f in os.listdir(where) if f.startswith("ready-")) >= int(n):
            _passed = True
            return
        await anyio.sleep(0.01)


class Recording(ScriptedProvider):
    async def complete(self, request):
        meta = request.metadata
        if os.environ.get("WF_BARRIER") and not _passed:
            await _barrier()
        _log("start", meta)
        delay = os.environ.get("WF_LONG_DELAY", "0.01") if meta.task_id == "long" else os.environ.get("WF_DELAY", "0.01")
        await anyio.sleep(float(delay))
        response = await super().complete(request)
        _log("done", meta)
        return response


@hookimpl
def taskloom_register_providers(register, settings):
    register("recording", lambda config, settings: Recording(config.alias, default="r({prompt})"))
"""

KILL_WORKFLOW = """
[workflow]
name = "killme"

[agents.w]
model = "rec"

[[tasks]]
id = "a"
agent = "w"
prompt = "a"
[[tasks]]
id = "b"
agent = "w"
prompt = "b {{ outputs.a }}"
needs = ["a"]
[[tasks]]
id = "c"
agent = "w"
prompt = "c"
[[tasks]]
id = "e"
agent = "w"
prompt = "e"
needs = ["a"]
[[tasks]]
id = "long"
agent = "w"
prompt = "long {{ outputs.b }}"
needs = ["b"]
[[tasks]]
id = "d"
agent = "w"
prompt = "d {{ outputs.long }} {{ outputs.c }}"
needs = ["long", "c"]
"""


def _fanout(n: int) -> str:
    parts = ['[workflow]\nname = "fan"\n\n[agents.w]\nmodel = "rec"\n']
    for i in range(n):
        parts.append(f'[[tasks]]\nid = "t{i}"\nagent = "w"\nprompt = "item {i} of {{{{ inputs.tag }}}}"\n')
    needs = ", ".join(f'"t{i}"' for i in range(n))
    parts.append(f'[[tasks]]\nid = "join"\nagent = "w"\nprompt = "join"\nneeds = [{needs}]\n')
    parts.append('[workflow.inputs]\ntag = "x"\n')
    return "\n".join(parts)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    plug = tmp_path / "plug"
    info = plug / "wf_recording-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wf-recording\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[taskloom]\nwf-recording = wf_recording\n")
    (plug / "wf_recording.py").write_text(PROVIDER_MODULE)
    db = tmp_path / "runs.sqlite"
    (tmp_path / "taskloom.toml").write_text(
        '[taskloom]\nplugins = ["scripted", "sqlite", "local-executor", "prices", "wf-recording"]\n'
        'store = "sqlite"\ncache = "none"\n\n[models.rec]\nprovider = "recording"\n\n'
        f"[plugins.sqlite]\nstore_path = {json.dumps(str(db))}\n"
    )
    (tmp_path / "kill.toml").write_text(KILL_WORKFLOW)
    (tmp_path / "fan.toml").write_text(_fanout(24))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plug), os.environ.get("PYTHONPATH", "")]),
        "WF_SIDE_EFFECTS": str(tmp_path / "effects.log"),
        "TASKLOOM_PROGRESS": "0",
    }
    return {"dir": tmp_path, "db": db, "env": env, "exe": str(Path(sys.executable).parent / "taskloom")}


def _cmd(s: dict[str, Any], *args: str) -> list[str]:
    return [s["exe"], "--config", str(s["dir"] / "taskloom.toml"), *args]


def _states(db: Path, run_id: str) -> dict[str, str]:
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=30)
    try:
        return dict(con.execute("SELECT task_id, state FROM tasks WHERE run_id = ?", (run_id,)).fetchall())
    except sqlite3.OperationalError:  # the schema is not there yet
        return {}
    finally:
        con.close()


def _effects(s: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    path = Path(s["env"]["WF_SIDE_EFFECTS"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [(w, r, t, int(p)) for w, r, t, p in (line.split() for line in lines)]


def test_sigkill_mid_run_then_resume_from_sqlite_runs_every_task_once(setup: dict[str, Any]) -> None:
    s = setup
    env = {**s["env"], "WF_LONG_DELAY": "60"}
    proc = subprocess.Popen(
        _cmd(s, "run", str(s["dir"] / "kill.toml"), "--run-id", "k1"),
        env=env, cwd=s["dir"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    want = {"a": "succeeded", "b": "succeeded", "c": "succeeded", "e": "succeeded", "long": "running"}
    deadline = time.monotonic() + 60
    while _states(s["db"], "k1") != want:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"taskloom run exited early ({proc.returncode}): {out.decode()} {err.decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached the kill point; states: {_states(s['db'], 'k1')}")
        time.sleep(0.05)
    # long's model call has started (its side effect is written) and will not end for 60 s.
    while ("start", "k1", "long", proc.pid) not in _effects(s):
        assert time.monotonic() < deadline, _effects(s)
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    first = proc.pid

    done = subprocess.run(
        _cmd(s, "resume", "k1", "--json"), env={**s["env"], "WF_LONG_DELAY": "0.01"},
        cwd=s["dir"], capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    data = json.loads(done.stdout)
    assert data["status"] == "succeeded"
    outputs = {t["id"]: t["output"] for t in data["tasks"]}
    assert outputs["d"] == "r(d r(long r(b r(a))) r(c))"

    effects = [(w, t, pid) for w, r, t, pid in _effects(s) if r == "k1"]
    finished = Counter(t for w, t, _ in effects if w == "done")
    assert finished == Counter({"a": 1, "b": 1, "c": 1, "e": 1, "long": 1, "d": 1}), effects
    for tid in ("a", "b", "c", "e"):  # finished before the kill: never started again
        assert [(w, pid == first) for w, t, pid in effects if t == tid] == [("start", True), ("done", True)]
    assert [(w, pid == first) for w, t, pid in effects if t == "long"] == [
        ("start", True), ("start", False), ("done", False),
    ]  # fmt: skip
    assert [pid == first for w, t, pid in effects if t == "d"] == [False, False]

    # The store agrees: the run succeeded, every task once, one model call recorded per task.
    show = subprocess.run(_cmd(s, "runs", "show", "k1", "--json"), env=s["env"], capture_output=True, timeout=60)
    assert show.returncode == 0, show.stderr.decode()
    con = sqlite3.connect(s["db"])
    try:
        assert con.execute("SELECT status FROM runs WHERE id = 'k1'").fetchone()[0] == "succeeded"
        calls = Counter(t for (t,) in con.execute("SELECT task_id FROM model_calls WHERE run_id = 'k1'"))
    finally:
        con.close()
    assert calls == finished


def test_two_processes_run_against_one_sqlite_file_at_once(setup: dict[str, Any]) -> None:
    s = setup
    env = {**s["env"], "WF_DELAY": "0.05", "WF_BARRIER": f"{s['dir']}:2"}
    procs = {}
    for run_id in ("p1", "p2"):
        cmd = _cmd(s, "run", str(s["dir"] / "fan.toml"), "--run-id", run_id, "--input", f"tag={run_id}", "--json")
        procs[run_id] = subprocess.Popen(cmd, env=env, cwd=s["dir"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = {run_id: proc.communicate(timeout=120) for run_id, proc in procs.items()}
    for run_id, proc in procs.items():
        out, err = results[run_id]
        assert proc.returncode == 0, f"{run_id}: {err.decode()}"
        data = json.loads(out)
        assert data["status"] == "succeeded" and len(data["tasks"]) == 25
        assert data["tasks"][0]["output"] == f"r(item 0 of {run_id})"

    effects = _effects(s)
    pids = {r: {pid for _, run, _, pid in effects if run == r} for r in ("p1", "p2")}
    assert pids == {"p1": {procs["p1"].pid}, "p2": {procs["p2"].pid}}
    # They really overlapped (a barrier in the provider holds each run's first call until
    # both processes are running): each started work before the other had finished.
    starts = {r: [i for i, e in enumerate(effects) if e[0] == "start" and e[1] == r] for r in ("p1", "p2")}
    assert starts["p1"][0] < starts["p2"][-1] and starts["p2"][0] < starts["p1"][-1]

    expected = {f"t{i}" for i in range(24)} | {"join"}
    con = sqlite3.connect(s["db"])
    try:
        for run_id in ("p1", "p2"):
            assert con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0] == "succeeded"
            tasks = dict(con.execute("SELECT task_id, state FROM tasks WHERE run_id = ?", (run_id,)).fetchall())
            assert tasks == dict.fromkeys(expected, "succeeded")
            calls = Counter(t for (t,) in con.execute("SELECT task_id FROM model_calls WHERE run_id = ?", (run_id,)))
            assert calls == Counter(dict.fromkeys(expected, 1))  # every model call recorded, none twice
    finally:
        con.close()
