"""The planner: levels, critical path, parallelism and the token and cost estimate."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from taskloom.workflow import Workflow, check_workflow, plan_workflow


def _diamond(**estimates: float) -> Any:
    wf = Workflow("d").agent("a", model="m", max_tokens=100)
    for tid, needs in (
        ("src", []),
        ("left", ["src"]),
        ("right", ["src"]),
        ("mid", ["src"]),
        ("sink", ["left", "right", "mid"]),
    ):
        extra = {"estimate": estimates[tid]} if tid in estimates else {}
        wf.task(tid, agent="a", prompt=f"do {tid}", needs=needs, **extra)
    return wf.build()


def test_levels_critical_path_and_parallelism_without_estimates() -> None:
    spec = _diamond()
    plan = plan_workflow(spec, check_workflow(spec))
    assert plan.levels == [["src"], ["left", "right", "mid"], ["sink"]]
    assert plan.critical_path[0] == "src" and plan.critical_path[-1] == "sink" and len(plan.critical_path) == 3
    assert plan.critical_length == 3
    assert plan.max_parallelism == 3


def test_critical_path_follows_estimated_durations() -> None:
    spec = _diamond(src=1, left=2, right=10, mid=3, sink=1)
    plan = plan_workflow(spec, check_workflow(spec))
    assert plan.critical_path == ["src", "right", "sink"]
    assert plan.critical_length == 12


def test_parallelism_counts_overlap_not_level_width() -> None:
    # b (long) overlaps both a2 and a3, which run one after the other: at most 2 at once.
    wf = Workflow("p").agent("a", model="m")
    wf.task("a1", agent="a", prompt="x", estimate=1).task("a2", agent="a", prompt="x", needs=["a1"], estimate=1)
    wf.task("b", agent="a", prompt="x", estimate=5)
    spec = wf.build()
    assert plan_workflow(spec, check_workflow(spec)).max_parallelism == 2


def test_estimate_of_tokens_and_cost(make_kernel: Any) -> None:
    kernel = make_kernel({"m": {"provider": "scripted", "default": "x", "price": {"input": 1.0, "output": 2.0}}})
    spec = (
        Workflow("e", inputs={"topic": "the history of the printing press"})
        .agent("a", model="m", system="You are terse.", max_tokens=100)
        .task("one", agent="a", prompt="Write about {{ inputs.topic }}")
        .task("two", agent="a", prompt="Summarise {{ outputs.one }}", needs=["one"])
        .build()
    )
    plan = plan_workflow(spec, check_workflow(spec, kernel), kernel)
    one, two = plan.estimates
    assert one.output_tokens == 100 and two.output_tokens == 100
    assert 10 < one.input_tokens < 40
    assert two.input_tokens >= 100  # reads one's output
    expected = (Decimal(plan.input_tokens) * 1 + Decimal(plan.output_tokens) * 2) / Decimal(1_000_000)
    assert plan.cost.priced and plan.cost.total == expected
    data = plan.to_dict()
    assert data["estimate"]["total_tokens"] == plan.input_tokens + plan.output_tokens
    assert Decimal(data["estimate"]["cost_usd"]) == expected
