"""The agent loop: messages → gateway → tool calls? → policy check per call → run the
calls concurrently → append results → repeat, until a final answer or a limit.

Limits are checked *before* each model call and each round of tool calls. Hitting one
ends the run cleanly: the result says which limit and keeps the best answer so far. A
failing or invalid tool call becomes an error message the model sees, never a crash.
"""

from __future__ import annotations

import functools
import json
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import BudgetExceeded, PolicyDenied, ProviderError
from .plugins import HookFailed
from .records import ToolCallRecord
from .resilience import DeadlineExceeded
from .tools import Tool, ToolResult
from .types import (
    ZERO,
    Action,
    Cost,
    Event,
    Message,
    ModelRequest,
    RequestMeta,
    Tally,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
    build,
    replace,
)

if TYPE_CHECKING:
    from .kernel import Kernel

StopReason = Literal[
    "final", "max_turns", "max_requests", "max_tool_calls", "max_tokens", "max_cost",
    "timeout", "budget", "invalid_output", "denied", "error",
]  # fmt: skip

_SECRET_KEYS = ("key", "token", "secret", "password", "authorization")


class AgentLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    max_turns: int = Field(8, ge=1, description="Model calls in the loop.")
    max_requests: int | None = Field(None, ge=1, description="Model calls including output-repair calls.")
    max_tool_calls: int | None = Field(None, ge=0)
    max_input_tokens: int | None = Field(None, ge=0)
    max_output_tokens: int | None = Field(None, ge=0)
    max_total_tokens: int | None = Field(None, ge=0)
    max_cost_usd: Decimal | None = Field(None, ge=0)
    timeout_s: float | None = Field(None, gt=0, description="Wall time for the whole run.")
    tool_timeout_s: float | None = Field(None, gt=0, description="Per tool call (default: the tool's own).")
    output_retries: int = Field(2, ge=0, description="Times an invalid structured answer is sent back.")
    max_depth: int = Field(3, ge=0, description="Delegation depth.")


class Budget:
    """A spending limit shared by every agent of a run (USD and tokens)."""

    def __init__(self, usd: Decimal | float | None = None, tokens: int | None = None) -> None:
        self.usd = Decimal(str(usd)) if usd is not None else None
        self.tokens = tokens
        self.spent_usd = Decimal(0)
        self.spent_tokens = 0

    def exhausted(self) -> str | None:
        if self.usd is not None and self.spent_usd >= self.usd:
            return f"the run's budget of ${self.usd} is spent (${self.spent_usd})"
        if self.tokens is not None and self.spent_tokens >= self.tokens:
            return f"the run's budget of {self.tokens} tokens is spent ({self.spent_tokens})"
        return None

    def charge(self, usage: Usage, cost: Cost | None) -> None:
        self.spent_tokens += usage.total_tokens
        if cost is not None:
            self.spent_usd += cost.total

    @property
    def remaining_usd(self) -> Decimal | None:
        return None if self.usd is None else max(Decimal(0), self.usd - self.spent_usd)

    @property
    def remaining_tokens(self) -> int | None:
        return None if self.tokens is None else max(0, self.tokens - self.spent_tokens)


class Agent(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, defer_build=True)

    name: str = "agent"
    model: str = ""
    """Model alias, ``auto`` for the router, or empty for the default model."""
    system: str | None = None
    tools: list[str] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    """Tool choice for the first turn; later turns use ``auto`` so the loop can end."""
    output_type: type[BaseModel] | None = None
    output_schema: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    task_type: str | None = None
    limits: AgentLimits = Field(default_factory=AgentLimits)
    delegates: list[Agent] = Field(default_factory=list)
    """Agents this one may call as tools (named after them)."""

    def json_schema(self) -> dict[str, Any] | None:
        if self.output_type is not None:
            return self.output_type.model_json_schema()
        return self.output_schema


class ToolCallLog(BaseModel):
    model_config = ConfigDict(defer_build=True)

    id: str
    name: str
    arguments: dict[str, Any] | None
    result: str
    is_error: bool
    duration_s: float


class AgentResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, defer_build=True)

    agent: str
    text: str
    output: Any = None
    """The structured output (validated) when an output type or schema was given, else the text."""
    stop_reason: StopReason
    detail: str | None = None
    messages: list[Message]
    usage: Usage = Field(default_factory=Usage)
    cost: Cost = Field(default_factory=Cost)
    turns: int = 0
    requests: int = 0
    tool_calls: list[ToolCallLog] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.stop_reason == "final"


class _Run(Tally):
    """The mutable state of one agent run. Usage and cost are kept as running totals
    (plain ints and Decimals) and made into records once, for the result."""

    def __init__(self, kernel: Kernel, agent: Agent, meta: RequestMeta, budget: Budget | None) -> None:
        self.kernel = kernel
        self.agent = agent
        self.meta = meta
        self.budget = budget
        self.emitting = kernel.has_sinks
        super().__init__()
        self.only_usage: Usage | None = None  # the usage of the run's one call, while it has one
        self.calls = 0
        self.turns = 0
        self.requests = 0
        self.tool_log: list[ToolCallLog] = []
        self.models: list[str] = []
        self.started = time.monotonic()
        lim = agent.limits
        self.deadline = self.started + lim.timeout_s if lim.timeout_s else None
        # Whether a request carries what is left of a budget, and whether any limit but
        # the turn count is set: when not, the per-turn checks are one comparison.
        self.metered = budget is not None or lim.max_cost_usd is not None or lim.max_total_tokens is not None
        self.limited = (
            self.metered
            or self.deadline is not None
            or lim.max_requests is not None
            or lim.max_input_tokens is not None
            or lim.max_output_tokens is not None
        )

    @property
    def usage(self) -> Usage:
        if self.calls == 1 and self.only_usage is not None:
            return self.only_usage  # the total of one call is its usage: shared, not rebuilt
        return self.total_usage()

    @property
    def cost(self) -> Cost:
        return self.total_cost()

    def add(self, usage: Usage, cost: Cost | None) -> None:
        """Count one model call's usage and cost."""
        self.calls += 1
        self.only_usage = usage if self.calls == 1 else None
        self.add_usage(usage)
        if cost is not None:
            self.add_cost(cost)
        if self.budget is not None:
            self.budget.charge(usage, cost)

    def limit_reached(self, *, repair: bool = False) -> tuple[StopReason, str] | None:
        lim = self.agent.limits
        if not repair and self.turns >= lim.max_turns:
            return "max_turns", f"{lim.max_turns} turns used without a final answer"
        if not self.limited:
            return None
        if lim.max_requests is not None and self.requests >= lim.max_requests:
            return "max_requests", f"{lim.max_requests} model requests used"
        if lim.max_input_tokens is not None and self.input_tokens >= lim.max_input_tokens:
            return "max_tokens", f"input tokens {self.input_tokens} reached the limit of {lim.max_input_tokens}"
        if lim.max_output_tokens is not None and self.output_tokens >= lim.max_output_tokens:
            return "max_tokens", f"output tokens {self.output_tokens} reached the limit of {lim.max_output_tokens}"
        total = self.input_tokens + self.output_tokens
        if lim.max_total_tokens is not None and total >= lim.max_total_tokens:
            return "max_tokens", f"total tokens {total} reached the limit of {lim.max_total_tokens}"
        if lim.max_cost_usd is not None and self.cost_total >= lim.max_cost_usd:
            return "max_cost", f"cost ${self.cost_total} reached the limit of ${lim.max_cost_usd}"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "timeout", f"the agent's time limit of {lim.timeout_s:g} s is up"
        if self.budget is not None:
            reason = self.budget.exhausted()
            if reason:
                return "budget", reason
        return None

    def request_meta(self) -> RequestMeta:
        """The metadata for the next request: with what is left of the budget (the run's
        ``Budget`` and the agent's own cost and token limits, the tighter of each) when a
        limit is active, so routers and policies can pick a model that fits."""
        if not self.metered:
            return self.meta
        lim = self.agent.limits
        budget = self.budget
        usd = budget.remaining_usd if budget is not None else None
        if lim.max_cost_usd is not None:
            own = max(ZERO, lim.max_cost_usd - self.cost_total)
            usd = own if usd is None else min(usd, own)
        tokens = budget.remaining_tokens if budget is not None else None
        if lim.max_total_tokens is not None:
            own_tokens = max(0, lim.max_total_tokens - self.input_tokens - self.output_tokens)
            tokens = own_tokens if tokens is None else min(tokens, own_tokens)
        if usd is None and tokens is None:
            return self.meta
        return replace(self.meta, budget_remaining_usd=usd, budget_remaining_tokens=tokens)

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Send an event to the sinks; callers check ``emitting`` first, so that no event
        data is made when no sink wants events."""
        m = self.meta
        self.kernel.emit(
            build(
                Event, kind=kind, time=time.time(), run_id=m.run_id, task_id=m.task_id, agent=self.agent.name, data=data
            )
        )


async def run_agent(
    kernel: Kernel,
    agent: Agent,
    prompt: str | list[Message],
    *,
    meta: RequestMeta | None = None,
    budget: Budget | None = None,
) -> AgentResult:
    """Run ``agent`` on ``prompt`` until it answers or a limit ends it."""
    changes: dict[str, Any] = {"agent": agent.name}
    if meta is None or meta.user is None:
        changes["user"] = kernel.settings.taskloom.user
    if agent.task_type and (meta is None or not meta.task_type):
        changes["task_type"] = agent.task_type
    meta = replace(meta, **changes) if meta is not None else build(RequestMeta, **changes)
    state = _Run(kernel, agent, meta, budget)
    messages: list[Message] = []
    if agent.system:
        messages.append(build(Message, role="system", content=agent.system))
    if isinstance(prompt, str):
        messages.append(build(Message, role="user", content=str(prompt)))
    else:
        messages.extend(prompt)
    tools = _resolve_tools(kernel, agent, meta, budget)
    specs = [t.spec for t in tools.values()]
    schema = agent.json_schema()
    if state.emitting:
        state.emit(
            "agent.start", {"model": agent.model or kernel.settings.taskloom.default_model, "tools": list(tools)}
        )
    complete = kernel.gateway.complete

    best_text = ""
    repairs = 0
    stop: tuple[StopReason, str | None] = ("final", None)
    output: Any = None
    repairing = False
    while True:
        limit = state.limit_reached(repair=repairing)
        if limit:
            stop = limit
            break
        # Each turn's request: its own copy of the messages, tool choice and metadata, the
        # rest from the agent. Every value comes from the validated agent, messages and
        # specs: no revalidation.
        request = build(
            ModelRequest,
            model=agent.model,
            messages=list(messages),
            tools=specs,
            tool_choice=(agent.tool_choice if state.turns == 0 else "auto") if specs else "none",
            temperature=agent.temperature,
            top_p=None,
            max_tokens=agent.max_tokens,
            stop=None,
            seed=None,
            output_schema=schema,
            metadata=state.request_meta(),
            cache=True,
            deadline=state.deadline,
        )
        try:
            response = await complete(request)
        except PolicyDenied as exc:
            stop = ("denied", str(exc))
            break
        except DeadlineExceeded as exc:
            stop = ("timeout", f"the agent's time limit of {agent.limits.timeout_s:g} s is up ({exc})")
            break
        except (ProviderError, BudgetExceeded, HookFailed) as exc:
            stop = ("error", f"{type(exc).__name__}: {exc}")
            break
        state.requests += 1
        if not repairing:
            state.turns += 1
        state.add(response.usage, response.cost)
        state.models.append(response.alias)
        message = response.message
        messages.append(message)
        text = message.text
        if text:
            best_text = text
        calls = message.tool_calls
        if calls:
            repairing = False
            limit = state.limit_reached(repair=True)
            lim = agent.limits
            if lim.max_tool_calls is not None and len(state.tool_log) + len(calls) > lim.max_tool_calls:
                limit = ("max_tool_calls", f"the limit of {lim.max_tool_calls} tool calls would be passed")
            if limit:
                stop = limit
                break
            if len(calls) == 1:
                call = calls[0]
                messages.append(_tool_message(call, await _run_tool_call(state, tools, call)))
            else:
                messages.extend(await _run_tool_calls(state, tools, calls))
            continue
        if schema is None:
            output = text
            break
        parsed, problem = _parse_output(text, agent)
        if problem is None:
            output = parsed
            break
        if repairs >= agent.limits.output_retries:
            stop = ("invalid_output", problem)
            break
        repairs += 1
        repairing = True
        if state.emitting:
            state.emit("agent.output_invalid", {"error": problem, "attempt": repairs})
        messages.append(
            Message.user(
                f"Your answer is not valid: {problem}. Answer again with only a JSON value that matches the schema."
            )
        )

    result = build(
        AgentResult,
        agent=agent.name,
        text=best_text,
        output=output if stop[0] == "final" else None,
        stop_reason=stop[0],
        detail=stop[1],
        messages=messages,
        usage=state.usage,
        cost=state.cost,
        turns=state.turns,
        requests=state.requests,
        tool_calls=state.tool_log,
        models=state.models,
        duration_s=time.monotonic() - state.started,
    )
    if state.emitting:
        state.emit(
            "agent.finish",
            {
                "stop_reason": result.stop_reason,
                "detail": result.detail,
                "turns": result.turns,
                "usage": result.usage,
                "cost": result.cost,
            },
        )
    return result


def _parse_output(text: str, agent: Agent) -> tuple[Any, str | None]:
    raw = text.strip()
    if raw.startswith("```"):
        raw = raw.strip("`")
        raw = raw[raw.find("\n") + 1 :] if "\n" in raw else raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"the answer is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if agent.output_type is not None:
        try:
            return agent.output_type.model_validate(value), None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
            return None, problems
    if agent.output_schema is not None:
        try:
            import jsonschema

            jsonschema.validate(value, agent.output_schema)
        except ImportError:
            pass
        except jsonschema.ValidationError as exc:
            return None, exc.message
    return value, None


def _resolve_tools(kernel: Kernel, agent: Agent, meta: RequestMeta, budget: Budget | None) -> dict[str, Tool]:
    tools: dict[str, Tool] = {}
    for name in agent.tools:
        tools[name] = kernel.tools.get(name)  # KeyError with "did you mean"
    for sub in agent.delegates:
        tools[sub.name] = _delegate_tool(kernel, agent, sub, meta, budget)
    return tools


def _delegate_tool(kernel: Kernel, parent: Agent, sub: Agent, meta: RequestMeta, budget: Budget | None) -> Tool:
    async def delegate(task: str) -> str:
        depth = meta.depth + 1
        if depth > parent.limits.max_depth:
            raise PolicyDenied(f"delegation depth {depth} passes the limit of {parent.limits.max_depth}", "agent")
        sub_meta = meta.model_copy(update={"depth": depth})
        kernel.check(Action(kind="delegate", tool=sub.name, arguments={"task": task}, metadata=sub_meta))
        result = await run_agent(kernel, sub, task, meta=sub_meta, budget=budget)
        if not result.ok:
            raise RuntimeError(
                f"{sub.name} stopped ({result.stop_reason}: {result.detail}); best answer: {result.text!r}"
            )
        return result.text if not isinstance(result.output, BaseModel) else result.output.model_dump_json()

    delegate.__doc__ = f"Ask the {sub.name} agent to do a task and return its answer.\n\nArgs:\n    task: What {sub.name} should do, in full."
    return Tool.from_function(delegate, name=sub.name, plugin="agent")


async def _run_tool_calls(state: _Run, tools: dict[str, Tool], calls: list[ToolCall]) -> list[Message]:
    """Run the calls concurrently; return their tool messages in the calls' order."""
    results: list[ToolResult | None] = [None] * len(calls)

    async def one(i: int, call: ToolCall) -> None:
        results[i] = await _run_tool_call(state, tools, call)

    async with anyio.create_task_group() as tg:
        for i, call in enumerate(calls):
            tg.start_soon(one, i, call)
    out = []
    for call, result in zip(calls, results, strict=True):
        assert result is not None
        out.append(_tool_message(call, result))
    return out


def _tool_message(call: ToolCall, result: ToolResult) -> Message:
    return build(
        Message,
        role="tool",
        content=result.content,
        tool_call_id=call.id,
        name=call.name,
        is_error=result.is_error,
    )


async def _run_tool_call(state: _Run, tools: dict[str, Tool], call: ToolCall) -> ToolResult:
    kernel = state.kernel
    tool = tools.get(call.name)
    arguments = call.arguments
    if tool is None:
        result = await kernel.tools.call(call, allowed=set(tools))
    else:
        try:
            if "tool_call" in kernel.checked:
                kernel.check(build(Action, kind="tool_call", tool=call.name, arguments=arguments, metadata=state.meta))
        except PolicyDenied as exc:
            result = ToolResult(f"error: {exc}", True)
        else:
            timeout = state.agent.limits.tool_timeout_s
            if state.deadline is not None:
                remaining = max(0.0, state.deadline - time.monotonic())
                timeout = min(timeout or remaining, remaining)
            result = await tool.run(arguments, timeout)
    cost = (
        kernel.tool_price(call.name, arguments or {}, state.meta)
        if kernel.has_tool_pricers and (not result.is_error or tool is not None)
        else None
    )
    if cost is not None:
        state.cost_total += cost.total
        state.cost_tools += cost.total
        if state.budget is not None:
            state.budget.charge(build(Usage), cost)
    state.tool_log.append(
        build(
            ToolCallLog,
            id=call.id,
            name=call.name,
            arguments=arguments,
            result=result.content,
            is_error=result.is_error,
            duration_s=result.duration_s,
        )
    )
    meta = state.meta
    record = build(
        ToolCallRecord,
        run_id=meta.run_id,
        task_id=meta.task_id,
        agent=state.agent.name,
        name=call.name,
        arguments=redact(arguments) if arguments else {},
        duration_s=result.duration_s,
        cost=cost.total if cost is not None else ZERO,
        error=result.content if result.is_error else None,
        time=time.time(),
    )
    try:
        await kernel.store.record_tool_call(record)
    except Exception as exc:
        kernel.plugins.warn_once(
            "ledger-tools", f"the run store could not record a tool call ({type(exc).__name__}: {exc})"
        )
    if state.emitting:
        state.emit(
            "tool.call",
            {"name": call.name, "is_error": result.is_error, "duration_s": result.duration_s, "cost": cost},
        )
    return result


@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEYS)


def redact(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments with values under secret-looking keys replaced."""
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        if _is_secret(key):
            out[key] = "**********"
        elif isinstance(value, dict):
            out[key] = redact(value)
        else:
            out[key] = value
    return out


__all__ = ["Agent", "AgentLimits", "AgentResult", "Budget", "ToolSpec", "run_agent"]
