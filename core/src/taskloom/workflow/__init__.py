"""Workflows: a graph of agent tasks that taskloom checks, plans, runs in parallel as soon
as each task's dependencies finish, checkpoints, and resumes.

``load_workflow`` / ``Workflow`` (builder) → ``check_workflow`` → ``plan_workflow`` →
``run_workflow`` / ``resume_workflow``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr

if TYPE_CHECKING:
    from .builder import Workflow
    from .checks import Graph, check_workflow
    from .executor import Executor, TaskOutcome, TaskSpec
    from .planner import Plan, plan_workflow
    from .result import RunNotResumable, WorkflowResult
    from .runner import resume_workflow, run_workflow
    from .spec import AgentSpec, TaskDef, WorkflowSpec, load_workflow, parse_workflow

# Each name's module, imported on first use: an executor plugin imports
# ``taskloom.workflow.executor`` at start-up, and that must not pull in Jinja2, the
# checks, the planner and the runner (``taskloom plugins`` needs none of them).
_WHERE = {
    "Workflow": ".builder",
    "Graph": ".checks",
    "check_workflow": ".checks",
    "Executor": ".executor",
    "TaskOutcome": ".executor",
    "TaskSpec": ".executor",
    "Plan": ".planner",
    "plan_workflow": ".planner",
    "RunNotResumable": ".result",
    "WorkflowResult": ".result",
    "resume_workflow": ".runner",
    "run_workflow": ".runner",
    "AgentSpec": ".spec",
    "TaskDef": ".spec",
    "WorkflowSpec": ".spec",
    "load_workflow": ".spec",
    "parse_workflow": ".spec",
}


__getattr__ = lazy_getattr(__name__, _WHERE)


__all__ = [
    "AgentSpec",
    "Executor",
    "Graph",
    "Plan",
    "RunNotResumable",
    "TaskDef",
    "TaskOutcome",
    "TaskSpec",
    "Workflow",
    "WorkflowResult",
    "WorkflowSpec",
    "check_workflow",
    "load_workflow",
    "parse_workflow",
    "plan_workflow",
    "resume_workflow",
    "run_workflow",
]
