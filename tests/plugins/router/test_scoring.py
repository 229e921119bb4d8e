"""The complexity score: each factor, the clamp, and the tier it picks."""

from __future__ import annotations

from typing import Any

from taskloom import Message, ModelRequest, ToolSpec
from taskloom.types import RequestMeta
from taskloom_router import router_of
from taskloom_router.scoring import score, size_points

from .conftest import config, make

TABLE = {"classification": 2.0, "multi_step_reasoning": 8.0}


def req(text: str = "hi", task_type: str | None = None, **kw: Any) -> ModelRequest:
    return ModelRequest(model="auto", messages=[Message.user(text)], metadata=RequestMeta(task_type=task_type), **kw)


def test_task_type_is_the_base_and_unknown_uses_the_default() -> None:
    assert score(req(task_type="classification"), TABLE, 4.0).factors["task_type"] == 2.0
    unknown = score(req(task_type="haiku"), TABLE, 4.0)
    assert unknown.factors["task_type"] == 4.0
    assert "task type 'haiku' is not in the table; default 4" in unknown.notes
    assert "no task type" in score(req(), TABLE, 4.0).notes[0]


def test_prompt_size_buckets() -> None:
    assert size_points(10) == (0.0, "tiny")
    assert size_points(500) == (0.5, "small")
    assert size_points(2000) == (1.0, "medium")
    assert size_points(10_000) == (2.0, "large")
    assert size_points(50_000) == (3.0, "huge")
    s = score(req("word " * 2000, task_type="classification"), TABLE, 4.0)
    assert s.bucket == "medium" and s.factors["prompt_tokens"] == 1.0 and 2400 < s.prompt_tokens < 2600


def test_exact_token_count_uses_tiktoken() -> None:
    s = score(req("hello world " * 50), TABLE, 4.0, exact=True)
    assert 100 <= s.prompt_tokens <= 110  # 100 tokens of text + chat overhead


def test_tools_structured_output_and_conversation() -> None:
    tools = [ToolSpec(name=f"t{i}") for i in range(3)]
    many = [ToolSpec(name=f"t{i}") for i in range(8)]
    assert score(req(tools=tools), TABLE, 4.0).factors["tools"] == 1.0
    assert score(req(tools=many), TABLE, 4.0).factors["tools"] == 1.5
    assert score(req(tools=tools, tool_choice="none"), TABLE, 4.0).factors["tools"] == 0.0
    assert score(req(output_schema={"type": "object"}), TABLE, 4.0).factors["structured_output"] == 1.0
    history = [Message.user("a"), Message.assistant("b"), Message.user("c"), Message.assistant("d"), Message.user("e")]
    convo = ModelRequest(model="auto", messages=history, metadata=RequestMeta(depth=1))
    assert score(convo, TABLE, 4.0).factors["conversation"] == 0.5 + 0.5


def test_sum_is_clamped_to_1_to_10() -> None:
    high = score(
        req(
            "x" * 80_000, task_type="multi_step_reasoning", tools=[ToolSpec(name="t")], output_schema={"type": "object"}
        ),
        TABLE,
        4.0,
    )
    assert high.value == 10.0
    low = score(req(task_type="tiny"), {"tiny": 1.0}, 4.0)
    assert low.value == 1.0


def test_tier_follows_the_score_and_the_breakdown_is_kept() -> None:
    router = router_of(make(config({"task_types": {"triage": 1.5}})))
    cases = {
        "triage": "weak",
        "classification": "weak",
        "summarisation": "weak",
        "code_generation": "base",
        "planning": "base",
        "multi_step_reasoning": "strong",
    }
    for task_type, tier in cases.items():
        plan = router.plan(req("short", task_type=task_type))
        assert router.tier_names[plan.tier] == tier, task_type
    r = req("short", task_type="code_generation", output_schema={"type": "object"}, tools=[ToolSpec(name="t")])
    chain = router.decide(r)
    route = r.metadata.route  # type: ignore[attr-defined]
    assert route["score"] == 8.0 and route["tier"] == "strong" and chain == ["big"]
    assert route["factors"] == {
        "task_type": 6.0,
        "prompt_tokens": 0.0,
        "tools": 1.0,
        "structured_output": 1.0,
        "conversation": 0.0,
    }
