"""What a workflow run returns: the run record, each task's record, and the compensations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import TaskloomError
from ..records import RunRecord, RunStatus, TaskRecord
from ..types import Cost, Usage


class RunNotResumable(TaskloomError):
    """``resume`` of an unknown run, or of one that already succeeded."""

    exit_code = 2


@dataclass
class WorkflowResult:
    run: RunRecord
    tasks: dict[str, TaskRecord]
    """Every task of the normal flow, in file order (``pending`` if it never started)."""
    compensations: list[TaskRecord] = field(default_factory=list)
    """Compensation runs, in the order they ran."""
    stored: bool = True
    """Whether the run is in the run store (so ``resume`` can finish it): False when the
    store refused to record it."""

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def status(self) -> RunStatus:
        return self.run.status

    @property
    def ok(self) -> bool:
        return self.run.status == "succeeded"

    @property
    def usage(self) -> Usage:
        return self.run.usage

    @property
    def cost(self) -> Cost:
        return self.run.cost

    def output(self, task_id: str) -> Any:
        return self.tasks[task_id].output

    @property
    def outputs(self) -> dict[str, Any]:
        return {tid: r.output for tid, r in self.tasks.items() if r.state == "succeeded"}

    def to_dict(self) -> dict[str, Any]:
        def task(r: TaskRecord) -> dict[str, Any]:
            return {
                "id": r.task_id,
                "state": r.state,
                "attempts": r.attempts,
                "output": r.output,
                "error": r.error,
                "usage": _usage(r.usage),
                "cost": _cost(r.cost),
                "duration_s": round(r.finished_at - r.started_at, 6) if r.started_at and r.finished_at else None,
                **({"compensation_of": r.compensation_of} if r.compensation_of else {}),
            }

        return {
            "run_id": self.run.id,
            "workflow": self.run.workflow,
            "status": self.run.status,
            "error": self.run.error,
            "tasks": [task(r) for r in self.tasks.values()],
            "compensations": [task(r) for r in self.compensations],
            "totals": {"usage": _usage(self.run.usage), "cost": _cost(self.run.cost)},
        }


def _usage(u: Usage) -> dict[str, int]:
    return {**u.model_dump(), "total_tokens": u.total_tokens}


def _cost(c: Cost) -> dict[str, Any]:
    return {"total_usd": str(c.total) if c.priced else None, "priced": c.priced}


__all__ = ["RunNotResumable", "WorkflowResult"]
