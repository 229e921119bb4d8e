"""Run summaries and the billing report, computed from any :class:`RunStore` through the
protocol methods only (``get_run``, ``get_tasks``, ``get_calls``, ``get_tool_calls``).

Money stays :class:`~decimal.Decimal` throughout. A report's rows are rounded to its
precision (half to even) and its total is the sum of the rounded rows, so the total always
equals the sum of the rows as printed; the exact figures are kept beside them.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from taskloom.errors import TaskloomError
from taskloom.records import CallRecord, RunRecord, RunStore, TaskRecord, ToolCallRecord

GroupBy = Literal["task", "agent", "model", "tool"]
ZERO = Decimal(0)


class RunNotFound(TaskloomError):
    exit_code = 2


def quantize(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


@dataclass
class Totals:
    """Tokens and money of a set of ledger rows."""

    model_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = ZERO
    unpriced: int = 0
    """Model calls no cost model could price: the cost is then a lower bound."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add_call(self, call: CallRecord) -> None:
        self.model_calls += 1
        self.input_tokens += call.usage.input_tokens
        self.output_tokens += call.usage.output_tokens
        if call.cost.priced:
            self.cost += call.cost.total
        else:
            self.unpriced += 1

    def add_tool_call(self, call: ToolCallRecord) -> None:
        self.tool_calls += 1
        self.cost += call.cost


def ledger_totals(calls: Iterable[CallRecord], tool_calls: Iterable[ToolCallRecord]) -> Totals:
    totals = Totals()
    for call in calls:
        totals.add_call(call)
    for tool_call in tool_calls:
        totals.add_tool_call(tool_call)
    return totals


# ---------------------------------------------------------------- the billing report


@dataclass
class CostRow:
    key: str
    totals: Totals
    cost: Decimal = ZERO
    """The exact cost rounded to the report's precision."""

    def as_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "key": self.key, "model_calls": t.model_calls, "tool_calls": t.tool_calls,
            "input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "cost": str(self.cost),
            "cost_exact": str(t.cost), "unpriced_calls": t.unpriced,
        }  # fmt: skip


@dataclass
class CostReport:
    run_id: str
    workflow: str
    by: GroupBy
    places: int
    rows: list[CostRow] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        """The sum of the rounded rows: what the printed rows add up to."""
        return sum((r.cost for r in self.rows), ZERO)

    @property
    def total_exact(self) -> Decimal:
        return sum((r.totals.cost for r in self.rows), ZERO)

    @property
    def totals(self) -> Totals:
        out = Totals()
        for r in self.rows:
            t = r.totals
            out.model_calls += t.model_calls
            out.tool_calls += t.tool_calls
            out.input_tokens += t.input_tokens
            out.output_tokens += t.output_tokens
            out.cost += t.cost
            out.unpriced += t.unpriced
        return out

    def as_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "run_id": self.run_id, "workflow": self.workflow, "by": self.by, "currency": "USD",
            "rows": [r.as_dict() for r in self.rows],
            "total": {
                "model_calls": t.model_calls, "tool_calls": t.tool_calls, "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens, "cost": str(self.total), "cost_exact": str(self.total_exact),
                "unpriced_calls": t.unpriced,
            },
        }  # fmt: skip

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        header = [self.by, "model_calls", "tool_calls", "input_tokens", "output_tokens", "cost_usd", "unpriced_calls"]
        writer.writerow(header)
        for r in self.rows:
            t = r.totals
            writer.writerow([r.key, t.model_calls, t.tool_calls, t.input_tokens, t.output_tokens, r.cost, t.unpriced])
        t = self.totals
        writer.writerow(["TOTAL", t.model_calls, t.tool_calls, t.input_tokens, t.output_tokens, self.total, t.unpriced])
        return buf.getvalue()


def _call_key(call: CallRecord, by: GroupBy) -> str:
    if by == "task":
        return call.task_id or "(no task)"
    if by == "agent":
        return call.agent or "(no agent)"
    if by == "model":
        return call.alias if call.alias == call.model or not call.model else f"{call.alias} ({call.model})"
    return "(model calls)"


def _tool_key(call: ToolCallRecord, by: GroupBy) -> str:
    if by == "task":
        return call.task_id or "(no task)"
    if by == "agent":
        return call.agent or "(no agent)"
    if by == "model":
        return "(tool calls)"
    return call.name


def build_cost_report(
    run: RunRecord,
    calls: Iterable[CallRecord],
    tool_calls: Iterable[ToolCallRecord],
    by: GroupBy = "task",
    places: int = 6,
) -> CostReport:
    """Group the run's ledger by ``by``; every call lands in exactly one row."""
    groups: dict[str, Totals] = {}
    for call in calls:
        groups.setdefault(_call_key(call, by), Totals()).add_call(call)
    for tool_call in tool_calls:
        groups.setdefault(_tool_key(tool_call, by), Totals()).add_tool_call(tool_call)
    rows = [CostRow(key, t, quantize(t.cost, places)) for key, t in groups.items()]
    rows.sort(key=lambda r: (-r.totals.cost, r.key))
    return CostReport(run.id, run.workflow, by, places, rows)


async def cost_report(store: RunStore, run_id: str, by: GroupBy = "task", places: int = 6) -> CostReport:
    run = await require_run(store, run_id)
    return build_cost_report(run, await store.get_calls(run_id), await store.get_tool_calls(run_id), by, places)


async def require_run(store: RunStore, run_id: str) -> RunRecord:
    run = await store.get_run(run_id)
    if run is None:
        recent = ", ".join(r.id for r in await store.list_runs(5)) or "none"
        raise RunNotFound(
            f"no run {run_id!r} in the run store ({type(store).__name__}); recent runs: {recent} "
            "(list them with `taskloom runs`)"
        )
    return run


# ---------------------------------------------------------------- run summaries


def duration(started: float | None, finished: float | None, running: bool) -> float | None:
    if started is None:
        return None
    if finished is None:
        return time.time() - started if running else None
    return finished - started


@dataclass
class RunSummary:
    run: RunRecord
    totals: Totals

    def as_dict(self) -> dict[str, Any]:
        run = self.run
        return {
            "id": run.id, "workflow": run.workflow, "status": run.status, "started_at": run.started_at,
            "finished_at": run.finished_at,
            "duration_s": duration(run.started_at, run.finished_at, run.status == "running"),
            "tokens": self.totals.tokens, "input_tokens": self.totals.input_tokens,
            "output_tokens": self.totals.output_tokens, "cost": str(self.totals.cost),
            "unpriced_calls": self.totals.unpriced, "error": run.error,
        }  # fmt: skip


def _run_totals(run: RunRecord, calls: list[CallRecord], tool_calls: list[ToolCallRecord]) -> Totals:
    """From the ledger; from the run record when the ledger has nothing for it."""
    if calls or tool_calls:
        return ledger_totals(calls, tool_calls)
    return Totals(
        input_tokens=run.usage.input_tokens,
        output_tokens=run.usage.output_tokens,
        cost=run.cost.total,
        unpriced=0 if run.cost.priced else 1,
    )


async def summarize_runs(store: RunStore, limit: int = 50) -> list[RunSummary]:
    out = []
    for run in await store.list_runs(limit):
        out.append(RunSummary(run, _run_totals(run, await store.get_calls(run.id), await store.get_tool_calls(run.id))))
    return out


@dataclass
class TaskNode:
    record: TaskRecord
    totals: Totals
    needs: list[str]
    children: list[TaskNode] = field(default_factory=list)

    def as_dict(self, running: bool) -> dict[str, Any]:
        r = self.record
        return {
            "task_id": r.task_id, "state": r.state, "attempts": r.attempts, "agent": r.agent,
            "started_at": r.started_at, "finished_at": r.finished_at,
            "duration_s": duration(r.started_at, r.finished_at, running and r.state == "running"),
            "tokens": self.totals.tokens, "cost": str(self.totals.cost), "unpriced_calls": self.totals.unpriced,
            "needs": self.needs, "compensation_of": r.compensation_of, "error": r.error,
            "children": [c.as_dict(running) for c in self.children],
        }  # fmt: skip


@dataclass
class RunDetail:
    summary: RunSummary
    roots: list[TaskNode]

    def as_dict(self) -> dict[str, Any]:
        running = self.summary.run.status == "running"
        return {
            **self.summary.as_dict(),
            "inputs": self.summary.run.inputs,
            "tasks": [n.as_dict(running) for n in self.roots],
        }


async def run_detail(store: RunStore, run_id: str) -> RunDetail:
    """The run and its task tree: a task hangs under its first dependency (the others are
    listed in ``needs``); a compensation step under the task it undoes."""
    run = await require_run(store, run_id)
    tasks = await store.get_tasks(run_id)
    calls, tool_calls = await store.get_calls(run_id), await store.get_tool_calls(run_id)
    by_task: dict[str | None, Totals] = {}
    for call in calls:
        by_task.setdefault(call.task_id, Totals()).add_call(call)
    for tool_call in tool_calls:
        by_task.setdefault(tool_call.task_id, Totals()).add_tool_call(tool_call)
    needs: dict[str, list[str]] = {}
    spec_order: dict[str, int] = {}
    for i, t in enumerate(run.spec.get("tasks", []) if isinstance(run.spec, dict) else []):
        if isinstance(t, dict) and isinstance(t.get("id"), str):
            needs[t["id"]] = [n for n in t.get("needs", []) if isinstance(n, str)]
            spec_order[t["id"]] = i
    nodes: dict[str, TaskNode] = {}
    order = sorted(tasks, key=lambda r: (r.compensation_of is not None, spec_order.get(r.task_id, len(spec_order))))
    for record in order:
        totals = by_task.get(record.task_id)
        if totals is None:  # no ledger rows: what the checkpoint says
            totals = Totals(
                input_tokens=record.usage.input_tokens,
                output_tokens=record.usage.output_tokens,
                cost=record.cost.total,
                unpriced=0 if record.cost.priced else 1,
            )
        nodes[record.task_id] = TaskNode(record, totals, needs.get(record.task_id, []))
    roots: list[TaskNode] = []
    for node in nodes.values():
        parent_id = node.record.compensation_of or next((n for n in node.needs if n in nodes), None)
        parent = nodes.get(parent_id) if parent_id else None
        (parent.children if parent is not None and parent is not node else roots).append(node)
    return RunDetail(RunSummary(run, _run_totals(run, calls, tool_calls)), roots)
