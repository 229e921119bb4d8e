"""Outcomes derived from the run store, for adaptive mode.

The run store keeps, through the kernel's public :class:`taskloom.records.RunStore` API,
what adaptive mode needs, only spread over three records:

* the run (``list_runs``): its ``spec`` names each agent's ``model`` and ``task_type``;
* its tasks (``get_tasks``): the final ``state`` and, when failed, the ``error`` whose
  prefix is the agent's stop reason (``invalid_output: ...``);
* its model calls (``get_calls``): per call the ``alias`` (hence the tier), the task,
  the agent, ``usage.input_tokens`` (hence the prompt-size bucket) and, for a call that
  failed after every retry and fallback, its ``error``.

From the finished runs, for each task and each ``model = "auto"`` agent, every recorded call
is one outcome in the cell (task type, size bucket of its input tokens, tier of its
alias). It is a success, except:

* the last call on a tier that the task then left for a higher one (an escalation: a
  fallback, a repair one tier up, or a retried attempt) is a failure;
* when the task failed for a reason a stronger model could help with (an error, invalid
  output; not a limit, a timeout, the budget or a denial), its last call is a failure.

A call that failed (its ``error`` is set; request faults such as ``BadRequest`` aside) is
a failure, in the size bucket of the nearest answered call of that task and agent (it
reported no tokens), and is left out when there is none.

These are the rules the router applies to the events it sees itself. The ledger keeps a
failed call once, on the last deployment tried, so a deployment that failed inside a
chain that then succeeded is missing here; and the size bucket comes from the provider's
input tokens instead of the router's estimate of the prompt. Running runs are left for
later.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .health import DeploymentState, is_request_fault
from .outcomes import escalates, retry_reason
from .scoring import size_points

Outcome = tuple[str, str, str, bool]


async def outcomes_from_store(
    store: Any,
    deployments: dict[str, DeploymentState],
    tiers: list[str],
    skip: set[str],
    runs: int = 200,
) -> list[tuple[str, list[Outcome]]]:
    """(run id, outcomes) for each finished run among the last ``runs`` not in ``skip``."""
    found: list[tuple[str, list[Outcome]]] = []
    for run in await store.list_runs(limit=runs):
        if run.id in skip or run.status == "running":
            continue
        agents = run.spec.get("agents") or {}
        auto = {
            str(name): str(a.get("task_type") or "-")
            for name, a in agents.items()
            if isinstance(a, dict) and a.get("model") == "auto"
        }
        rows: list[Outcome] = []
        if auto:
            tasks = {t.task_id: t for t in await store.get_tasks(run.id) if t.compensation_of is None}
            by_task: dict[tuple[str, str], list[Any]] = {}
            for call in await store.get_calls(run.id):
                if call.cached or call.agent not in auto or call.alias not in deployments:
                    continue
                if call.error and is_request_fault(call.error):
                    continue
                by_task.setdefault((str(call.task_id), call.agent), []).append(call)
            for (task_id, _agent), calls in by_task.items():
                task = tasks.get(task_id)
                failed = task is not None and task.state == "failed" and escalates(retry_reason(task.error))
                rows.extend(_task_outcomes(calls, auto, deployments, tiers, failed))
        found.append((run.id, rows))
    return found


def _task_outcomes(
    calls: list[Any], auto: dict[str, str], deployments: dict[str, DeploymentState], tiers: list[str], failed: bool
) -> Iterable[Outcome]:
    calls = sorted(calls, key=lambda c: c.time)
    levels = [deployments[c.alias].tier for c in calls]
    buckets: list[str | None] = [None if c.error else size_points(c.usage.input_tokens)[1] for c in calls]
    for i, call in enumerate(calls):
        bucket = buckets[i] or _nearest(buckets, i)
        if bucket is None:
            continue
        left_for_higher = i + 1 < len(calls) and levels[i + 1] > levels[i]
        last = i + 1 == len(calls)
        ok = not call.error and not left_for_higher and not (last and failed)
        yield auto[call.agent], bucket, tiers[levels[i]], ok


def _nearest(buckets: list[str | None], i: int) -> str | None:
    for j in [*range(i - 1, -1, -1), *range(i + 1, len(buckets))]:
        if buckets[j] is not None:
            return buckets[j]
    return None
