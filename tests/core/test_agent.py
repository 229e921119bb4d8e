"""The agent loop: tool rounds, every bad input, limits, structured output, delegation."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from taskloom import Agent, AgentLimits, Budget, Denial, hookimpl, load_kernel, run_agent
from taskloom.testing import Step, register_plugin
from taskloom.types import Usage

pytestmark = pytest.mark.anyio


class Tools:
    @hookimpl
    def taskloom_register_tools(self, register, settings):  # type: ignore[no-untyped-def]
        def add(a: int, b: int) -> int:
            """Add two integers.

            Args:
                a: The first number.
                b: The second number.
            """
            return a + b

        async def slow(seconds: float) -> str:
            """Sleep, then answer."""
            await anyio.sleep(seconds)
            return f"slept {seconds}"

        def explode() -> str:
            """Always fails."""
            raise RuntimeError("kaboom")

        arrived: list[str] = []
        everyone_here = anyio.Event()

        async def meet(name: str, expected: int) -> str:
            """Wait until ``expected`` calls have arrived: only calls that run at the same
            time can all return (one at a time, the first would wait forever)."""
            arrived.append(name)
            if len(arrived) >= expected:
                everyone_here.set()
            await everyone_here.wait()
            return f"met {name}"

        register(add)
        register(slow)
        register(explode)
        register(slow, name="sleepy", timeout=0.05)
        register(meet, timeout=5)


class NoExplode:
    @hookimpl
    def taskloom_check(self, action, settings):  # type: ignore[no-untyped-def]
        if action.kind == "tool_call" and action.tool == "explode":
            return Denial(reason="explode is not allowed", plugin="no-explode")
        return None


def make_kernel(*plugins: object, models: dict[str, Any] | None = None):
    from contextlib import ExitStack

    config = {
        "taskloom": {"store": "memory", "default_model": "fake"},
        "models": models or {"fake": {"provider": "scripted", "model": "gpt-4o-mini"}},
    }
    with ExitStack() as stack:
        stack.enter_context(register_plugin(Tools(), "test-tools"))
        for i, p in enumerate(plugins):
            stack.enter_context(register_plugin(p, f"extra-{i}"))
        return load_kernel(config)


async def test_tool_round_trip() -> None:
    kernel = make_kernel()
    p = kernel.provider("fake")
    p.add_tool_call("add", {"a": 2, "b": 40}).add_text("The sum is 42.")
    result = await run_agent(kernel, Agent(tools=["add"]), "add 2 and 40")
    assert result.ok and result.output == "The sum is 42."
    assert result.turns == 2 and result.tool_calls[0].result == "42" and not result.tool_calls[0].is_error
    tool_message = p.requests[1].messages[-1]
    assert tool_message.role == "tool" and tool_message.text == "42"
    assert p.requests[0].tools[0].name == "add"
    assert p.requests[0].tools[0].parameters["properties"]["a"]["description"] == "The first number."
    recorded = kernel.store.tool_calls
    assert [(c.name, c.arguments, c.error) for c in recorded] == [("add", {"a": 2, "b": 40}, None)]


async def test_usage_is_the_one_calls_usage_or_the_sum_of_every_call() -> None:
    kernel = make_kernel()
    kernel.provider("fake").add_text("hello")
    one = await run_agent(kernel, Agent(), "hi")
    (call,) = kernel.store.calls
    assert one.usage is call.usage and one.usage.total_tokens > 0  # shared with the ledger, not a copy
    kernel.provider("fake").add_tool_call("add", {"a": 1, "b": 2}).add_text("3")
    two = await run_agent(kernel, Agent(tools=["add"]), "add 1 and 2")
    first, second = kernel.store.calls[1:]
    assert two.usage == first.usage + second.usage
    assert two.usage is not first.usage and two.usage is not second.usage


async def test_tool_calls_run_concurrently_and_keep_order() -> None:
    kernel = make_kernel()
    p = kernel.provider("fake")
    meetings = [("meet", {"name": n, "expected": 2}) for n in ("a", "b")]
    p.add_tool_calls([("slow", {"seconds": 0.2}), *meetings]).add_text("done")
    result = await run_agent(kernel, Agent(tools=["meet", "slow"]), "go")
    # One after another, "a" would wait for "b" until its 5 s timeout and fail.
    assert result.ok and all(not c.is_error for c in result.tool_calls), result.tool_calls
    # The meetings end at once, the slow call 0.2 s later; the results keep the calls' order.
    assert [c.name for c in result.tool_calls] == ["meet", "meet", "slow"]  # the log is in finishing order
    tool_messages = [m.text for m in p.requests[1].messages if m.role == "tool"]
    assert tool_messages == ["slept 0.2", "met a", "met b"]


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("add", {"a": "two", "b": 1}, "invalid arguments for add: a: Input should be a valid integer"),
        ("add", {"a": 1}, "invalid arguments for add: b: Field required"),
        ("add", {"a": 1, "b": 2, "c": 3}, "c: Extra inputs are not permitted"),
        ("add", '{"a": 1, "b": ', "arguments for add are not a JSON object"),
        ("ad", {"a": 1, "b": 2}, "there is no tool named 'ad' (did you mean 'add'?)"),
        ("explode", {}, "explode failed: RuntimeError: kaboom"),
        ("sleepy", {"seconds": 5}, "sleepy timed out after 0.05 s"),
    ],
)
async def test_bad_tool_calls_become_errors_the_model_sees(name: str, arguments: Any, expected: str) -> None:
    kernel = make_kernel()
    p = kernel.provider("fake")
    p.add_tool_call(name, arguments).add_text("recovered")
    result = await run_agent(kernel, Agent(tools=["add", "explode", "sleepy"]), "go")
    assert result.ok and result.output == "recovered"
    log = result.tool_calls[0]
    assert log.is_error and expected in log.result
    sent = p.requests[1].messages[-1]
    assert sent.role == "tool" and sent.is_error and expected in sent.text


async def test_policy_denied_tool_call_is_an_error_message_not_a_crash() -> None:
    kernel = make_kernel(NoExplode())
    p = kernel.provider("fake")
    p.add_tool_call("explode").add_text("fine")
    result = await run_agent(kernel, Agent(tools=["explode"]), "go")
    assert result.ok
    assert "denied by no-explode: explode is not allowed" in result.tool_calls[0].result


async def test_turn_limit_keeps_the_best_answer() -> None:
    kernel = make_kernel()
    p = kernel.provider("fake")
    for i in range(5):
        p.add_tool_call("add", {"a": i, "b": 0}, text=f"thinking {i}")
    result = await run_agent(kernel, Agent(tools=["add"], limits=AgentLimits(max_turns=3)), "loop")
    assert result.stop_reason == "max_turns" and result.turns == 3
    assert result.text == "thinking 2"
    assert "3 turns" in result.detail
    assert len(p.requests) == 3


async def test_tool_call_limit() -> None:
    kernel = make_kernel()
    p = kernel.provider("fake")
    p.add_tool_call("add", {"a": 1, "b": 1}).add_tool_calls([("add", {"a": 1, "b": 2}), ("add", {"a": 1, "b": 3})])
    result = await run_agent(kernel, Agent(tools=["add"], limits=AgentLimits(max_tool_calls=2)), "go")
    assert result.stop_reason == "max_tool_calls" and len(result.tool_calls) == 1


async def test_token_limit_is_checked_before_the_next_call() -> None:
    kernel = make_kernel()
    p = kernel.provider("fake")
    p.queue.clear()
    from taskloom.testing import Step

    p.queue.append(Step(text="partial", tool_calls=[], usage=Usage(input_tokens=900, output_tokens=200)))
    p.queue[0].tool_calls = [
        __import__("taskloom").ToolCall(id="c1", name="add", arguments={"a": 1, "b": 1}, raw_arguments="{}")
    ]
    p.add_text("never reached")
    result = await run_agent(kernel, Agent(tools=["add"], limits=AgentLimits(max_total_tokens=1000)), "go")
    assert result.stop_reason == "max_tokens" and "1100" in result.detail
    assert result.text == "partial"
    assert len(p.requests) == 1


async def test_cost_limit_and_shared_budget() -> None:
    models = {"fake": {"provider": "scripted", "model": "m", "price": {"input": 1000, "output": 1000}, "default": "ok"}}
    kernel = make_kernel(models=models)
    p = kernel.provider("fake")
    p.add_tool_call("add", {"a": 1, "b": 1}).add_text("done")
    result = await run_agent(kernel, Agent(tools=["add"], limits=AgentLimits(max_cost_usd=Decimal("0.001"))), "go")
    assert result.stop_reason == "max_cost" and result.cost.total > Decimal("0.001")

    budget = Budget(usd=Decimal("0.05"))
    first = await run_agent(kernel, Agent(name="one"), "x" * 200, budget=budget)
    assert first.ok
    second = await run_agent(kernel, Agent(name="two"), "again", budget=budget)
    assert second.stop_reason == "budget" and "budget of $0.05 is spent" in second.detail


async def test_wall_time_limit() -> None:
    kernel = make_kernel()
    p = kernel.provider("fake")
    p.add_tool_call("slow", {"seconds": 0.3}).add_text("late")
    result = await run_agent(kernel, Agent(tools=["slow"], limits=AgentLimits(timeout_s=0.1)), "go")
    assert result.stop_reason == "timeout"
    assert result.tool_calls[0].is_error and "timed out" in result.tool_calls[0].result


async def test_wall_time_is_one_deadline_across_retries_and_fallbacks() -> None:
    models = {
        "fake": {"provider": "scripted", "fallbacks": ["backup"], "retry": {"attempts": 3, "base_delay": 0.001}},
        "backup": {"provider": "scripted"},
    }
    kernel = make_kernel(models=models)
    p, backup = kernel.provider("fake"), kernel.provider("backup")
    p.add_tool_call("add", {"a": 1, "b": 2}, text="working on it")
    for _ in range(3):
        p.add_delay(0.5, "too slow")  # every attempt of the primary would take 0.5 s
    backup.add_delay(0.5, "too slow as well")
    start = time.monotonic()
    result = await run_agent(kernel, Agent(tools=["add"], limits=AgentLimits(timeout_s=0.2)), "go")
    elapsed = time.monotonic() - start
    assert result.stop_reason == "timeout", result.detail
    assert "time limit of 0.2 s is up" in result.detail
    assert result.text == "working on it" and len(result.tool_calls) == 1  # the best answer so far
    assert elapsed < 0.45, elapsed  # was 0.62 s: each retry and fallback got the remaining time anew
    assert len(p.requests) == 2 and backup.requests == []


async def test_requests_carry_the_remaining_budget() -> None:
    models = {"fake": {"provider": "scripted", "model": "m", "price": {"input": 100, "output": 100}}}
    kernel = make_kernel(models=models)
    p = kernel.provider("fake")
    call = __import__("taskloom").ToolCall(id="c1", name="add", arguments={"a": 1, "b": 1}, raw_arguments="{}")
    p.queue.append(Step(tool_calls=[call], usage=Usage(input_tokens=100, output_tokens=50)))
    p.queue.append(Step(text="done", usage=Usage(input_tokens=200, output_tokens=10)))
    budget = Budget(usd=Decimal("1"), tokens=10_000)
    result = await run_agent(kernel, Agent(tools=["add"]), "go", budget=budget)
    assert result.ok
    first, second = (r.metadata for r in p.requests)
    assert first.budget_remaining_usd == Decimal("1") and first.budget_remaining_tokens == 10_000
    # 150 tokens at $100 per million spent by the first call.
    assert second.budget_remaining_usd == Decimal("0.985") and second.budget_remaining_tokens == 9_850
    # The agent's own cost limit is the tighter one.
    p.add_text("ok")
    await run_agent(kernel, Agent(limits=AgentLimits(max_cost_usd=Decimal("0.5"))), "again", budget=budget)
    assert p.requests[-1].metadata.budget_remaining_usd == Decimal("0.5")
    # No limit, no figure.
    p.add_text("ok")
    await run_agent(kernel, Agent(), "free")
    assert p.requests[-1].metadata.budget_remaining_usd is None
    assert p.requests[-1].metadata.budget_remaining_tokens is None


async def test_a_raising_router_ends_the_run_with_an_error_naming_it() -> None:
    class BrokenRouter:
        @hookimpl
        def taskloom_route(self, request, settings):  # type: ignore[no-untyped-def]
            raise ZeroDivisionError("no tiers")

    kernel = make_kernel(BrokenRouter())
    kernel.provider("fake").add_text("never")
    result = await run_agent(kernel, Agent(), "go")
    assert result.stop_reason == "error"
    assert "HookFailed: plugin 'extra-0' failed in taskloom_route: ZeroDivisionError: no tiers" in result.detail


async def test_provider_error_ends_the_run_with_the_reason() -> None:
    kernel = make_kernel(models={"fake": {"provider": "scripted", "retry": {"attempts": 1}}})
    p = kernel.provider("fake")
    p.add_tool_call("add", {"a": 1, "b": 2}, text="half way").add_error("auth", message="key revoked")
    result = await run_agent(kernel, Agent(tools=["add"]), "go")
    assert result.stop_reason == "error" and "AuthenticationError: key revoked" in result.detail
    assert result.text == "half way" and len(result.tool_calls) == 1


class Verdict(BaseModel):
    label: str
    confidence: float


async def test_structured_output_is_validated_and_repaired() -> None:
    kernel = make_kernel()
    p = kernel.provider("fake")
    p.add_text("I think it is a bug").add_text('{"label": "bug"}').add_text('{"label": "bug", "confidence": 0.9}')
    result = await run_agent(kernel, Agent(output_type=Verdict), "classify")
    assert result.ok and result.output == Verdict(label="bug", confidence=0.9)
    assert p.requests[0].output_schema["required"] == ["label", "confidence"]
    repair = p.requests[1].messages[-1].text
    assert "not JSON" in repair
    assert "confidence: Field required" in p.requests[2].messages[-1].text
    assert result.turns == 1 and result.requests == 3


async def test_structured_output_gives_up_after_bounded_retries() -> None:
    kernel = make_kernel()
    p = kernel.provider("fake")
    for _ in range(3):
        p.add_text("nope")
    result = await run_agent(kernel, Agent(output_type=Verdict, limits=AgentLimits(output_retries=2)), "classify")
    assert result.stop_reason == "invalid_output" and result.output is None
    assert len(p.requests) == 3


async def test_output_schema_without_a_model_type() -> None:
    kernel = make_kernel()
    p = kernel.provider("fake")
    p.add_text('{"n": "x"}').add_text('{"n": 3}')
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    result = await run_agent(kernel, Agent(output_schema=schema), "count")
    assert result.ok and result.output == {"n": 3}


async def test_delegation_and_depth_limit() -> None:
    models = {"fake": {"provider": "scripted"}, "sub": {"provider": "scripted", "default": "sub says {prompt}"}}
    kernel = make_kernel(models=models)
    p = kernel.provider("fake")
    p.add_tool_call("researcher", {"task": "find facts"}).add_text("boss done")
    researcher = Agent(name="researcher", model="sub")
    result = await run_agent(kernel, Agent(name="boss", delegates=[researcher]), "go")
    assert result.ok and result.tool_calls[0].result == "sub says find facts"

    p.add_tool_call("researcher", {"task": "deeper"}).add_text("stopped")
    shallow = Agent(name="boss", delegates=[researcher], limits=AgentLimits(max_depth=0))
    result = await run_agent(kernel, shallow, "go")
    assert "delegation depth 1 passes the limit of 0" in result.tool_calls[0].result


async def test_unknown_tool_name_in_agent_is_a_clear_error() -> None:
    kernel = make_kernel()
    with pytest.raises(KeyError, match=r"unknown tool 'addd'.*did you mean 'add'"):
        await run_agent(kernel, Agent(tools=["addd"]), "go")
