"""The console sink on a real workflow run, rendered by rich into a string: each task's
state, tokens and cost, the progress with an ETA, and the closing table."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import pytest
from rich.console import Console
from taskloom import load_kernel
from taskloom.builtin.console import ConsoleSink
from taskloom.testing import register_plugin
from taskloom.types import Cost, Event, Usage
from taskloom.workflow import Workflow, run_workflow

from .conftest import PLUGINS, WfTestPlugin

pytestmark = pytest.mark.anyio

PRICED = {
    "t": {"provider": "tracking", "price": {"input": 1.0, "output": 2.0}},
    "broken": {"provider": "scripted", "responses": [{"error": "bad_request", "message": "kaput"}]},
}


def _sink() -> tuple[ConsoleSink, io.StringIO]:
    out = io.StringIO()
    return ConsoleSink(Console(file=out, width=200, color_system=None, force_terminal=False)), out


def _money(cost: Cost) -> str:
    return f"${cost.total:.6f}".rstrip("0").rstrip(".") if cost.total else "$0"


async def test_console_shows_each_task_state_tokens_cost_and_an_eta(wf_plugin: WfTestPlugin) -> None:
    sink, out = _sink()
    spec = (
        Workflow("w", failure_mode="continue")
        .agent("a", model="t", limits={"max_turns": 1})
        .agent("bad", model="broken")
        .task("first", agent="a", prompt="sleep=0.3 first")
        .task("second", agent="a", prompt="sleep=0.1 second", needs=["first"])
        .task("boom", agent="bad", prompt="boom")
        .task("after_boom", agent="a", prompt="never", needs=["boom"])
        .build()
    )
    with register_plugin(sink, "console-test"):
        kernel = load_kernel(
            {"taskloom": {"store": "memory", "cache": "none", "plugins": [*PLUGINS, "console-test"]}, "models": PRICED}
        )
        result = await run_workflow(kernel, spec, run_id="c1")
    assert result.status == "failed"
    text = out.getvalue()
    lines = text.splitlines()
    first = result.tasks["first"]
    assert first.cost.total > 0

    assert re.search(r"run c1 w: 4 tasks$", lines[0]), lines[0]
    assert any(re.search(r"running first attempt 1 \(0/4\)$", line) for line in lines), text
    # A finished task: its tokens and cost, the progress and an ETA from the pace so far.
    done = next(line for line in lines if re.search(r"succeeded first ", line))
    m = re.search(rf"succeeded first {first.usage.total_tokens} tokens (\S+) \((\d)/4 · ETA ([\d.]+)s\)$", done)
    assert m, done
    assert m.group(1) == _money(first.cost)
    # boom and after_boom end at once, first after ~0.3 s: ~0.1 s a task, one task left.
    assert m.group(2) == "3" and float(m.group(3)) < 1
    assert any(re.search(r"failed boom .*kaput", line) for line in lines), text
    assert any(re.search(r"skipped after_boom .*needs 'boom', which failed \(\d/4", line) for line in lines), text
    assert any("(4/4)" in line for line in lines), "the progress never reached 4/4"

    # The table at the end: one row per task with its state, attempts, tokens and cost.
    rows = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in result.tasks}
    for tid, record in result.tasks.items():
        assert rows[tid][1:] == [
            record.state,
            str(record.attempts),
            str(record.usage.total_tokens),
            _money(record.cost),
        ]
    total = result.usage.total_tokens
    assert re.search(rf"run.finish c1 failed · {total} tokens · {re.escape(_money(result.cost))}", lines[-1])


def _event(kind: str, task_id: str | None = None, **data: Any) -> Event:
    return Event(kind=kind, time=time.time(), run_id="r", task_id=task_id, data=data)


def test_eta_counts_only_what_is_left_on_resume_and_resets_between_runs() -> None:
    sink, out = _sink()
    sink.taskloom_event(_event("run.start", tasks=10, resumed=True, already_done=8, workflow="w"))
    time.sleep(0.1)
    sink.taskloom_event(_event("task.succeed", "t9", usage=Usage(input_tokens=3, output_tokens=4), cost=Cost()))
    eta = sink.eta()
    # One of the two tasks left is done, at ~0.1 s a task: ~0.1 s to go, not ~0.9 s.
    assert eta is not None and 0.05 <= eta < 0.5, eta
    assert "(9/10 · ETA" in out.getvalue() and "resumed with 8 done" in out.getvalue()
    # Compensations do not count as tasks of the flow.
    sink.taskloom_event(_event("task.compensate", "undo@t9", of="t9", task="undo"))
    sink.taskloom_event(_event("task.succeed", "undo@t9", usage=Usage(), cost=Cost(), compensation_of="t9"))
    assert len(sink.done_times) == 1
    # A second run in the same process starts from zero.
    sink.taskloom_event(_event("run.start", tasks=3, workflow="w2"))
    assert sink.eta() is None and sink.tasks == {} and sink.tokens == 0
    sink.taskloom_event(_event("task.skip", "x", reason="condition 'false' is false"))
    assert out.getvalue().splitlines()[-1].endswith("skipped x 0 tokens $0 condition 'false' is false (1/3 · ETA 0.0s)")
