"""Where workflow tasks run: the :class:`Executor` protocol and the data it exchanges.

The scheduler decides *when* a task runs; the active executor (``[taskloom] executor``,
built-in ``local``) decides *where*. A task crosses as a :class:`TaskSpec` (plain,
serialisable data: the agent's definition and the rendered prompt), and comes back as a
:class:`TaskOutcome`, so an executor may run it in another process or on another machine
(Ray). Retries, timeouts, checkpoints and compensation stay in the scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..types import Cost, Usage
from .spec import AgentSpec

if TYPE_CHECKING:
    from ..agent import Budget
    from ..kernel import Kernel


class TaskSpec(BaseModel):
    """One attempt of one task, ready to run anywhere."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    task_id: str
    attempt: int = 1
    """1 for the first attempt of the task in this run, 2 for its first retry..."""
    escalation_reason: str | None = None
    """On a retry: why the previous attempt failed, as its stop reason (``error``,
    ``timeout``, ``invalid_output``, ``max_turns``...), so a router can escalate."""
    previous_error: str | None = None
    """On a retry: the previous attempt's error message."""
    agent: AgentSpec
    prompt: str
    timeout: float | None = None
    """Seconds for this attempt; the scheduler also enforces it."""
    resources: dict[str, int] = Field(default_factory=dict)
    """The task's named resources (``resources`` in the workflow), for executors that
    place attempts by them (Ray maps them to its own resources)."""
    user: str | None = None
    workflow: str = ""
    budget_usd_left: str | None = None
    """What is left of the run's USD budget when the attempt starts (a decimal string), for
    executors that cannot share the in-process :class:`~taskloom.agent.Budget`."""
    budget_tokens_left: int | None = None


class TaskOutcome(BaseModel):
    """What an attempt produced. ``ok`` is False when the agent did not reach a final answer."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    output: Any = None
    """The structured output (JSON) when the agent has an output schema, else the answer text."""
    text: str = ""
    stop_reason: str = "final"
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost: Cost = Field(default_factory=Cost)
    duration_s: float = 0.0
    charged: bool = False
    """True when the executor already charged the run's shared budget (in-process)."""

    @property
    def budget_stop(self) -> bool:
        return self.stop_reason == "budget"


@runtime_checkable
class Executor(Protocol):
    """Runs task attempts. One instance per kernel (``factory(settings)``)."""

    async def run(self, spec: TaskSpec, kernel: Kernel, budget: Budget | None = None) -> TaskOutcome:
        """Run one attempt and return its outcome; raise only for failures of the executor
        itself (the scheduler treats an exception as a failed attempt). ``budget`` is the
        run's shared budget: an in-process executor passes it to the agent loop and sets
        ``charged``; a remote one enforces ``spec.budget_*_left`` instead. Cancellation
        (timeout, Ctrl-C) must stop the attempt."""
        ...

    async def aclose(self) -> None:
        """Release workers, connections or clusters."""
        ...


__all__ = ["Executor", "TaskOutcome", "TaskSpec"]
