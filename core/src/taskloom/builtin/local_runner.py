"""The ``local`` executor: runs workflow tasks in this process, on the driver's event loop
and kernel.

Each model request of an attempt carries, in its metadata extras, ``attempt`` (1, 2...)
and, on a retry, ``escalation_reason`` (the previous attempt's stop reason) and
``previous_error``, so a router (``model = "auto"``) can send a retry to a stronger tier."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic import BaseModel

from taskloom.agent import Agent, run_agent
from taskloom.types import RequestMeta, build
from taskloom.workflow.executor import TaskOutcome, TaskSpec
from taskloom.workflow.spec import AgentSpec

if TYPE_CHECKING:
    from taskloom.agent import Budget
    from taskloom.kernel import Kernel


class LocalExecutor:
    """In-process: the agent loop runs as an anyio task of the scheduler."""

    name = "local"

    def __init__(self) -> None:
        # The agent built for each agent spec (the tasks of a workflow share a few), with
        # the spec's fields when it was built: a spec changed since gets a new agent.
        self._agents: dict[int, tuple[AgentSpec, dict[str, object], Agent]] = {}

    def _agent(self, a: AgentSpec) -> Agent:
        cached = self._agents.get(id(a))
        if cached is not None and cached[0] is a and cached[1] == a.__dict__:
            return cached[2]
        # Built from values validated already (the workflow spec), so no validation again.
        agent = build(
            Agent,
            name=a.name,
            model=a.model,
            system=a.system,
            tools=list(a.tools),
            tool_choice=a.tool_choice,
            output_schema=a.output_schema,
            temperature=a.temperature,
            max_tokens=a.max_tokens,
            task_type=a.task_type,
            limits=a.limits,
        )
        if len(self._agents) > 256:  # specs of finished runs
            self._agents.clear()
        self._agents[id(a)] = (a, {**a.__dict__, "tools": list(a.tools)}, agent)
        return agent

    async def run(self, spec: TaskSpec, kernel: Kernel, budget: Budget | None = None) -> TaskOutcome:
        a = spec.agent
        agent = self._agent(a)
        # The metadata and the outcome too are built from values validated already.
        meta = build(RequestMeta, run_id=spec.run_id, task_id=spec.task_id, agent=a.name, user=spec.user)
        extra = meta.model_extra
        assert extra is not None  # RequestMeta keeps extra keys: routers read these
        extra["attempt"] = spec.attempt
        meta.model_fields_set.add("attempt")
        if spec.escalation_reason is not None:  # a retry: tell the router why the last attempt failed
            meta.escalation_reason = spec.escalation_reason  # type: ignore[attr-defined]
            meta.previous_error = spec.previous_error  # type: ignore[attr-defined]
        start = time.monotonic()
        result = await run_agent(kernel, agent, spec.prompt, meta=meta, budget=budget)
        output = result.output
        if isinstance(output, BaseModel):
            output = output.model_dump(mode="json")
        return build(
            TaskOutcome,
            ok=result.ok,
            output=output if result.ok else None,
            text=result.text,
            stop_reason=result.stop_reason,
            error=None if result.ok else f"{result.stop_reason}: {result.detail}",
            usage=result.usage,
            cost=result.cost,
            duration_s=time.monotonic() - start,
            charged=budget is not None,
        )

    async def aclose(self) -> None:
        return None
