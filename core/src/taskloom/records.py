"""What a run store keeps: runs, task checkpoints, model calls and tool calls (the ledger),
and the :class:`RunStore` protocol every store implements.

A store is the checkpoint store the workflow engine resumes from, so ``save_task`` must be
durable when it returns.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from .types import Cost, Event, Usage

RunStatus = Literal["running", "succeeded", "failed", "interrupted", "budget_exceeded"]
TaskState = Literal["pending", "running", "succeeded", "failed", "skipped", "interrupted", "compensated"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


class RunRecord(_Record):
    id: str
    workflow: str
    status: RunStatus = "running"
    started_at: float
    finished_at: float | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    spec: dict[str, Any] = Field(default_factory=dict)
    """The workflow definition as run, so ``resume`` needs nothing else."""
    source: str | None = None
    """The workflow file the run came from, if any."""
    usage: Usage = Field(default_factory=Usage)
    cost: Cost = Field(default_factory=Cost)
    error: str | None = None


class TaskRecord(_Record):
    run_id: str
    task_id: str
    state: TaskState = "pending"
    attempts: int = 0
    agent: str | None = None
    prompt: str | None = None
    output: Any = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    usage: Usage = Field(default_factory=Usage)
    cost: Cost = Field(default_factory=Cost)
    compensation_of: str | None = None


class CallRecord(_Record):
    """One model call as the gateway saw it."""

    run_id: str | None = None
    task_id: str | None = None
    agent: str | None = None
    user: str | None = None
    request_hash: str
    alias: str
    model: str
    provider: str
    usage: Usage = Field(default_factory=Usage)
    cost: Cost = Field(default_factory=Cost)
    latency_s: float = 0.0
    cached: bool = False
    error: str | None = None
    time: float = 0.0


class ToolCallRecord(_Record):
    run_id: str | None = None
    task_id: str | None = None
    agent: str | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    """Arguments with secrets redacted."""
    duration_s: float = 0.0
    cost: Decimal = Decimal(0)
    error: str | None = None
    time: float = 0.0


@runtime_checkable
class RunStore(Protocol):
    async def create_run(self, run: RunRecord) -> None: ...

    async def update_run(self, run: RunRecord) -> None: ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(self, limit: int = 50) -> list[RunRecord]: ...

    async def save_task(self, task: TaskRecord) -> None:
        """Insert or replace the task's checkpoint; durable when it returns."""
        ...

    async def get_tasks(self, run_id: str) -> list[TaskRecord]: ...

    async def record_call(self, call: CallRecord) -> None: ...

    async def record_tool_call(self, call: ToolCallRecord) -> None: ...

    async def record_event(self, event: Event) -> None: ...

    async def get_calls(self, run_id: str) -> list[CallRecord]: ...

    async def get_tool_calls(self, run_id: str) -> list[ToolCallRecord]: ...

    async def get_events(self, run_id: str) -> list[Event]:
        """The events recorded for a run, oldest first (events written in batches are
        flushed first, so everything recorded before the call is returned)."""
        ...

    async def aclose(self) -> None: ...
