"""The plan of a workflow before it runs: levels, critical path, maximum useful
parallelism, and an estimate of tokens and cost.

Durations come from each task's ``estimate`` (seconds); a task without one weighs 1, so
the critical path is then the longest chain of tasks. The token estimate assumes one
model turn per task: the system prompt and the prompt template (inputs rendered), plus
an assumed answer size for every upstream output the prompt reads; the answer is
``max_tokens`` when the agent sets it, else :data:`ASSUMED_OUTPUT_TOKENS`. Agents that
call tools take more turns than this, so the figure is a floor.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..tokens import count_text
from ..types import Cost, Usage
from . import templates
from .checks import Graph
from .spec import WorkflowSpec

if TYPE_CHECKING:
    from ..kernel import Kernel

ASSUMED_OUTPUT_TOKENS = 256


@dataclass
class TaskEstimate:
    id: str
    agent: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: Cost


@dataclass
class Plan:
    workflow: str
    tasks: int
    levels: list[list[str]]
    critical_path: list[str]
    critical_length: float
    """Sum of the critical path's weights (seconds when every task has an estimate)."""
    max_parallelism: int
    estimates: list[TaskEstimate] = field(default_factory=list)
    compensation_tasks: list[str] = field(default_factory=list)

    @property
    def input_tokens(self) -> int:
        return sum(e.input_tokens for e in self.estimates)

    @property
    def output_tokens(self) -> int:
        return sum(e.output_tokens for e in self.estimates)

    @property
    def cost(self) -> Cost:
        total = Cost()
        for e in self.estimates:
            total = total + e.cost
        return total

    def to_dict(self) -> dict[str, Any]:
        cost = self.cost
        return {
            "workflow": self.workflow,
            "tasks": self.tasks,
            "levels": self.levels,
            "critical_path": self.critical_path,
            "critical_length": self.critical_length,
            "max_parallelism": self.max_parallelism,
            "compensation_tasks": self.compensation_tasks,
            "estimate": {
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "total_tokens": self.input_tokens + self.output_tokens,
                "cost_usd": str(cost.total) if cost.priced else None,
                "priced": cost.priced,
                "tasks": [
                    {
                        "id": e.id,
                        "agent": e.agent,
                        "model": e.model,
                        "input_tokens": e.input_tokens,
                        "output_tokens": e.output_tokens,
                        "cost_usd": str(e.cost.total) if e.cost.priced else None,
                    }
                    for e in self.estimates
                ],
            },
        }


def weights(graph: Graph) -> list[float]:
    return [1.0 if e is None else e for e in map(_ESTIMATE, graph.tasks)]


_ESTIMATE = operator.attrgetter("estimate")


def levels(graph: Graph) -> list[int]:
    level = [0] * len(graph)
    for i in graph.order:
        deps = graph.deps[i]
        if deps:
            level[i] = 1 + max(level[d] for d in deps)
    return level


def bottom_levels(graph: Graph, w: list[float] | None = None) -> list[float]:
    """Longest weighted path from each task to the end (the task included): the priority
    of a ready task when slots are scarce."""
    w = w or weights(graph)
    bl = [0.0] * len(graph)
    dependants, at = graph.dependants, bl.__getitem__
    for i in reversed(graph.order):
        after = dependants[i]
        bl[i] = w[i] + (max(map(at, after)) if after else 0.0)
    return bl


def critical_path(graph: Graph, w: list[float] | None = None) -> tuple[list[str], float, list[float], list[float]]:
    """The longest weighted chain; also each task's earliest start and finish."""
    w = w or weights(graph)
    start = [0.0] * len(graph)
    finish = [0.0] * len(graph)
    prev = [-1] * len(graph)
    for i in graph.order:
        best = -1
        for d in graph.deps[i]:
            if best < 0 or finish[d] > finish[best]:
                best = d
        if best >= 0:
            start[i] = finish[best]
            prev[i] = best
        finish[i] = start[i] + w[i]
    if not finish:
        return [], 0.0, start, finish
    end = max(range(len(graph)), key=lambda i: finish[i])
    path = []
    node = end
    while node >= 0:
        path.append(graph.ids[node])
        node = prev[node]
    path.reverse()
    return path, finish[end], start, finish


def max_parallelism(start: list[float], finish: list[float]) -> int:
    """Most tasks running at once in the as-soon-as-possible schedule with unlimited slots."""
    events = sorted([(f, -1) for f in finish] + [(s, 1) for s in start])
    best = running = 0
    for _, delta in events:
        running += delta
        best = max(best, running)
    return best


def plan_workflow(
    spec: WorkflowSpec, graph: Graph, kernel: Kernel | None = None, inputs: dict[str, Any] | None = None
) -> Plan:
    w = weights(graph)
    level = levels(graph)
    by_level: list[list[str]] = [[] for _ in range(max(level, default=-1) + 1)]
    for i, lv in enumerate(level):
        by_level[lv].append(graph.ids[i])
    path, length, start, finish = critical_path(graph, w)
    plan = Plan(
        workflow=spec.name,
        tasks=len(graph),
        levels=by_level,
        critical_path=path,
        critical_length=length,
        max_parallelism=max_parallelism(start, finish),
        compensation_tasks=sorted(spec.compensation_ids()),
    )
    if kernel is not None:
        plan.estimates = [_estimate(spec, tid, kernel, inputs) for tid in graph.ids]
    return plan


def _output_tokens(spec: WorkflowSpec, task_id: str) -> int:
    agent = spec.agents[spec.task(task_id).agent]
    return agent.max_tokens or agent.limits.max_output_tokens or ASSUMED_OUTPUT_TOKENS


def _estimate(spec: WorkflowSpec, task_id: str, kernel: Kernel, inputs: dict[str, Any] | None) -> TaskEstimate:
    task = spec.task(task_id)
    agent = spec.agents[task.agent]
    alias = agent.model or kernel.settings.taskloom.default_model
    config = kernel.settings.models.get(alias)
    model = config.model if config else alias
    prompt = _rough_prompt(spec, task.prompt, inputs)
    input_tokens = count_text(agent.system or "", model) + count_text(prompt, model) + 7
    outs, _ = templates.references(task.prompt)
    input_tokens += sum(_output_tokens(spec, ref) for ref in outs)
    output_tokens = _output_tokens(spec, task_id)
    if config is None:
        cost = Cost.unpriced()
    else:
        cost = kernel.price(
            alias, config.model, config.provider, Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        )
    return TaskEstimate(task_id, task.agent, alias, input_tokens, output_tokens, cost)


def _rough_prompt(spec: WorkflowSpec, source: str, inputs: dict[str, Any] | None) -> str:
    """The prompt with inputs filled in and upstream outputs left out (counted separately)."""
    try:
        values = spec.resolve_inputs(inputs)
    except Exception:
        values = {k: v.default for k, v in spec.workflow.inputs.items()}

    class _Blank:
        def __getattr__(self, name: str) -> Any:
            return _Blank()

        def __getitem__(self, name: str) -> Any:
            return _Blank()

        def __iter__(self) -> Any:
            return iter(())

        def __str__(self) -> str:
            return ""

    try:
        return templates.render(source, {"inputs": values, "outputs": _Blank()})
    except Exception:
        return source


__all__ = [
    "ASSUMED_OUTPUT_TOKENS",
    "Plan",
    "TaskEstimate",
    "bottom_levels",
    "critical_path",
    "levels",
    "max_parallelism",
    "plan_workflow",
]
