"""Workflows: a graph of agent tasks that taskloom checks, plans, runs in parallel as soon
as each task's dependencies finish, checkpoints, and resumes.

``load_workflow`` / ``Workflow`` (builder) → ``check_workflow`` → ``plan_workflow`` →
``run_workflow`` / ``resume_workflow``.
"""

from __future__ import annotations

from .builder import Workflow
from .checks import Graph, check_workflow
from .executor import Executor, TaskOutcome, TaskSpec
from .planner import Plan, plan_workflow
from .result import RunNotResumable, WorkflowResult
from .runner import resume_workflow, run_workflow
from .spec import AgentSpec, TaskDef, WorkflowSpec, load_workflow, parse_workflow

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
