"""``memory-store``: a run store kept in process memory. Nothing outlives the process;
use the SQLite store for resumable runs."""

from __future__ import annotations

from collections.abc import Callable

from taskloom import hookimpl
from taskloom.config import Settings
from taskloom.records import CallRecord, RunRecord, TaskRecord, ToolCallRecord
from taskloom.types import Event


class MemoryStore:
    def __init__(self, keep_events: int = 10_000) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.tasks: dict[str, dict[str, TaskRecord]] = {}
        self.calls: list[CallRecord] = []
        self.tool_calls: list[ToolCallRecord] = []
        self.events: list[Event] = []
        self.keep_events = keep_events

    async def create_run(self, run: RunRecord) -> None:
        if run.id in self.runs:
            raise ValueError(f"run {run.id} already exists")
        self.runs[run.id] = run.model_copy(deep=True)
        self.tasks.setdefault(run.id, {})

    async def update_run(self, run: RunRecord) -> None:
        if run.id not in self.runs:
            raise KeyError(f"unknown run {run.id}")
        self.runs[run.id] = run.model_copy(deep=True)

    async def get_run(self, run_id: str) -> RunRecord | None:
        run = self.runs.get(run_id)
        return run.model_copy(deep=True) if run else None

    async def list_runs(self, limit: int = 50) -> list[RunRecord]:
        runs = sorted(self.runs.values(), key=lambda r: r.started_at, reverse=True)
        return [r.model_copy(deep=True) for r in runs[:limit]]

    async def save_task(self, task: TaskRecord) -> None:
        self.tasks.setdefault(task.run_id, {})[task.task_id] = task.model_copy(deep=True)

    async def get_tasks(self, run_id: str) -> list[TaskRecord]:
        return [t.model_copy(deep=True) for t in self.tasks.get(run_id, {}).values()]

    async def record_call(self, call: CallRecord) -> None:
        self.calls.append(call)

    async def record_tool_call(self, call: ToolCallRecord) -> None:
        self.tool_calls.append(call)

    async def record_event(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) > self.keep_events:
            del self.events[: len(self.events) - self.keep_events]

    async def get_calls(self, run_id: str) -> list[CallRecord]:
        return [c for c in self.calls if c.run_id == run_id]

    async def get_tool_calls(self, run_id: str) -> list[ToolCallRecord]:
        return [c for c in self.tool_calls if c.run_id == run_id]

    async def aclose(self) -> None:
        return None


@hookimpl
def taskloom_register_stores(register: Callable[..., None], settings: Settings) -> None:
    register("memory", lambda settings: MemoryStore())
