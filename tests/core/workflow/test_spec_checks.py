"""Parsing workflow files and every check, with the exact error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from taskloom.errors import ConfigError
from taskloom.workflow import Workflow, check_workflow, load_workflow, parse_workflow
from taskloom.workflow.checks import build_graph

from .conftest import write

GOOD = """
[workflow]
name = "trip"
description = "plan a trip"
max_concurrency = 4
failure_mode = "continue"
budget = { usd = 0.5, tokens = 10000 }
resources = { browser = 1 }

[workflow.inputs]
city = "Lisbon"
days = 3
who = { description = "traveller", required = true }

[agents.scout]
model = "m"
system = "You scout."
limits = { max_turns = 2 }

[agents.clerk]
model = "m"
output_schema = { type = "object", properties = { label = { type = "string" } } }

[[tasks]]
id = "scout"
agent = "scout"
prompt = "Find things in {{ inputs.city }} for {{ inputs.who }}"
retries = 2
backoff = 0.5
timeout = 30
resources = { browser = 1 }
compensate = "undo"

[[tasks]]
id = "plan"
agent = "clerk"
needs = "scout"
prompt = "Plan {{ inputs.days }} days from {{ outputs.scout }}"
when = "outputs.scout != ''"

[[tasks]]
id = "undo"
agent = "scout"
prompt = "Cancel what {{ outputs.scout }} booked"
"""


def _spec(tasks: list[dict[str, Any]], **workflow: Any) -> dict[str, Any]:
    return {"workflow": {"name": "w", **workflow}, "agents": {"a": {"model": "m"}}, "tasks": tasks}


def _check(data: dict[str, Any], kernel: Any = None) -> str:
    with pytest.raises(ConfigError) as info:
        check_workflow(parse_workflow(data, "wf.toml"), kernel)
    return str(info.value)


def test_parses_a_full_toml_file(tmp_path: Path) -> None:
    spec = load_workflow(write(tmp_path / "trip.toml", GOOD))
    assert spec.name == "trip" and spec.source == str(tmp_path / "trip.toml")
    assert spec.workflow.failure_mode == "continue" and spec.workflow.max_concurrency == 4
    assert str(spec.workflow.budget.usd) == "0.5" and spec.workflow.budget.tokens == 10000
    assert spec.workflow.inputs["city"].default == "Lisbon" and spec.workflow.inputs["who"].required
    assert spec.agents["scout"].limits.max_turns == 2 and spec.agents["scout"].name == "scout"
    scout = spec.task("scout")
    assert (scout.retries, scout.backoff, scout.timeout, scout.resources, scout.compensate) == (
        2,
        0.5,
        30,
        {"browser": 1},
        "undo",
    )
    assert spec.task("plan").needs == ["scout"]
    graph = check_workflow(spec)
    assert graph.ids == ["scout", "plan"]  # "undo" only runs as compensation
    assert spec.resolve_inputs({"who": "Ana"}) == {"city": "Lisbon", "days": 3, "who": "Ana"}


def test_json_files_are_accepted(tmp_path: Path) -> None:
    data = _spec([{"id": "x", "agent": "a", "prompt": "hi"}])
    spec = load_workflow(write(tmp_path / "w.json", json.dumps(data)))
    assert [t.id for t in spec.tasks] == ["x"]


def test_builder_gives_the_same_spec_as_a_file(tmp_path: Path) -> None:
    built = (
        Workflow("w", inputs={"topic": "rust"}, max_concurrency=2)
        .agent("a", model="m", system="s")
        .task("x", agent="a", prompt="{{ inputs.topic }}")
        .task("y", agent="a", prompt="{{ outputs.x }}", needs=["x"], retries=1)
        .build()
    )
    text = """
[workflow]
name = "w"
max_concurrency = 2
inputs = { topic = "rust" }
[agents.a]
model = "m"
system = "s"
[[tasks]]
id = "x"
agent = "a"
prompt = "{{ inputs.topic }}"
[[tasks]]
id = "y"
agent = "a"
prompt = "{{ outputs.x }}"
needs = ["x"]
retries = 1
"""
    assert built.to_dict() == load_workflow(write(tmp_path / "w.toml", text)).to_dict()


def test_shape_errors_name_the_file_and_the_task() -> None:
    with pytest.raises(ConfigError) as info:
        parse_workflow(_spec([{"id": "x", "agent": "a", "prompt": "p", "retrys": 2}]), "wf.toml")
    assert str(info.value) == "wf.toml: task 'x' unknown key 'retrys' (did you mean 'retries'?)"
    with pytest.raises(ConfigError) as info:
        parse_workflow({**_spec([]), "agents": {"a": {"modle": "m"}}}, "wf.toml")
    assert str(info.value) == "wf.toml: [agents.a] unknown key 'modle' (did you mean 'model'?)"
    with pytest.raises(ConfigError) as info:
        parse_workflow(_spec([{"id": "x", "agent": "a", "prompt": "p"}], failure_mode="stop"), "wf.toml")
    assert "wf.toml: [workflow] key 'failure_mode'" in str(info.value) and "'fail-fast' or 'continue'" in str(
        info.value
    )


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML"):
        load_workflow(write(tmp_path / "bad.toml", "[workflow\n"))
    with pytest.raises(ConfigError, match=r"workflow file .*nope.toml does not exist"):
        load_workflow(tmp_path / "nope.toml")


def test_cycle_is_printed() -> None:
    msg = _check(_spec([
        {"id": "plan", "agent": "a", "prompt": "p", "needs": ["build"]},
        {"id": "build", "agent": "a", "prompt": "b", "needs": ["plan"]},
    ]))  # fmt: skip
    assert msg == "wf.toml: cycle: plan -> build -> plan; remove one of these needs"


def test_longer_cycle_behind_a_root() -> None:
    msg = _check(_spec([
        {"id": "root", "agent": "a", "prompt": "p"},
        {"id": "a1", "agent": "a", "prompt": "p", "needs": ["root", "a3"]},
        {"id": "a2", "agent": "a", "prompt": "p", "needs": ["a1"]},
        {"id": "a3", "agent": "a", "prompt": "p", "needs": ["a2"]},
    ]))  # fmt: skip
    assert msg == "wf.toml: cycle: a1 -> a2 -> a3 -> a1; remove one of these needs"


def test_unknown_need_with_did_you_mean() -> None:
    msg = _check(
        _spec(
            [
                {"id": "build", "agent": "a", "prompt": "p"},
                {"id": "ship", "agent": "a", "prompt": "p", "needs": ["biuld"]},
            ]
        )
    )
    assert msg == "wf.toml: task 'ship': needs unknown task 'biuld' (did you mean 'build'?)"


def test_unknown_agent_and_duplicate_ids() -> None:
    msg = _check(_spec([{"id": "x", "agent": "aa", "prompt": "p"}, {"id": "x", "agent": "a", "prompt": "q"}]))
    assert msg.splitlines() == [
        "wf.toml: task 'x': duplicate task id; each [[tasks]] entry needs its own id",
        "wf.toml: task 'x': unknown agent 'aa' (did you mean 'a'?); defined agents: a",
    ]


def test_template_reading_an_output_it_does_not_need() -> None:
    msg = _check(_spec([
        {"id": "scout", "agent": "a", "prompt": "p"},
        {"id": "plan", "agent": "a", "prompt": "p"},
        {"id": "build", "agent": "a", "prompt": "use {{ outputs.scout }} and {{ outputs['plan'] }}", "needs": ["plan"]},
        {"id": "ship", "agent": "a", "prompt": "x", "needs": ["build"], "when": "outputs.scuot.ok"},
    ]))  # fmt: skip
    assert msg.splitlines() == [
        "wf.toml: task 'build': prompt reads outputs.scout but the task does not need 'scout'; add it to needs",
        "wf.toml: task 'ship': when reads outputs.scuot: no task is named 'scuot' (did you mean 'scout'?)",
    ]


def test_template_syntax_inputs_and_resources() -> None:
    msg = _check(_spec(
        [
            {"id": "x", "agent": "a", "prompt": "{{ inputs.topik }}", "resources": {"gpu": 1, "browser": 3}},
            {"id": "y", "agent": "a", "prompt": "{% if %}"},
        ],
        inputs={"topic": "t"}, resources={"browser": 2},
    ))  # fmt: skip
    lines = msg.splitlines()
    assert lines[0] == "wf.toml: task 'x': resource 'gpu' is not declared; add it under [workflow.resources]"
    assert lines[1] == "wf.toml: task 'x': takes 3 of resource 'browser' but its capacity is 2"
    assert (
        lines[2]
        == "wf.toml: task 'x': prompt reads inputs.topik, which is not declared (did you mean 'topic'?); add it under [workflow.inputs]"
    )
    assert lines[3].startswith("wf.toml: task 'y': prompt does not parse: ")


def test_compensation_rules() -> None:
    msg = _check(_spec([
        {"id": "x", "agent": "a", "prompt": "p", "compensate": "undo"},
        {"id": "undo", "agent": "a", "prompt": "p", "needs": ["x"]},
        {"id": "z", "agent": "a", "prompt": "p", "compensate": "nope"},
        {"id": "w", "agent": "a", "prompt": "p", "compensate": "undo2"},
        {"id": "undo2", "agent": "a", "prompt": "p"},
        {"id": "v", "agent": "a", "prompt": "p", "needs": ["undo2"]},
    ]))  # fmt: skip
    assert msg.splitlines() == [
        "wf.toml: task 'x': compensation task 'undo' must not have needs; it runs after the failure",
        "wf.toml: task 'z': compensate names unknown task 'nope'",
        "wf.toml: task 'v': needs 'undo2', which only runs as compensation",
    ]


_PLAIN = [{"id": f"p{n}", "agent": "a", "prompt": f"step {n}", "needs": [f"p{n - 1}"] if n else []} for n in range(300)]


@pytest.mark.parametrize(
    ("bad", "line"),
    [
        ({"needs": ["bad"]}, "task 'bad': needs itself"),
        ({"needs": ["p3", "p3"]}, "task 'bad': lists the same task twice in needs"),
        ({"agent": "b"}, "task 'bad': unknown agent 'b'"),
        ({"needs": ["p1000"]}, "task 'bad': needs unknown task 'p1000'"),
        ({"needs": ["p7"], "prompt": "{{ outputs.p8 }}"}, "prompt reads outputs.p8 but the task does not need 'p8'"),
        ({"when": "outputs.p9.ok"}, "when reads outputs.p9 but the task does not need 'p9'"),
        ({"resources": {"gpu": 1}}, "task 'bad': resource 'gpu' is not declared"),
        ({"compensate": "p1000"}, "task 'bad': compensate names unknown task 'p1000'"),
        ({"id": "p5"}, "task 'p5': duplicate task id"),
        ({"compensate": "p0"}, "task 'p1': needs 'p0', which only runs as compensation"),
    ],
)
def test_one_bad_task_among_hundreds_of_plain_ones_is_found(bad: dict[str, Any], line: str) -> None:
    # Plain tasks are checked a whole workflow at a time; one task with something wrong
    # must still be reported, with the same line as in a small workflow.
    tasks = [*_PLAIN[:150], {"id": "bad", "agent": "a", "prompt": "p", **bad}, *_PLAIN[150:]]
    lines = _check(_spec(tasks)).splitlines()
    assert any(line in problem for problem in lines), lines
    assert all("'bad'" in problem or "'p" in problem for problem in lines)


def test_hundreds_of_plain_tasks_pass_with_their_graph() -> None:
    graph = check_workflow(parse_workflow(_spec(_PLAIN), "wf.toml"))
    assert graph.order == list(range(300))
    assert graph.deps[0] == () and graph.deps[299] == (298,)
    assert graph.dependants[298] == (299,) and graph.dependants[299] == ()


@pytest.mark.parametrize(
    "extra",
    [
        [],  # plain: the checks' columns serve the graph as they are
        [  # a compensation-only task: the graph leaves it out and numbers the rest itself
            {"id": "undo", "agent": "a", "prompt": "undo"},
            {"id": "last", "agent": "a", "prompt": "x", "needs": ["p299", "p0"], "compensate": "undo"},
        ],
    ],
)
def test_the_checked_graph_is_the_graph_built_on_its_own(extra: list[dict[str, Any]]) -> None:
    spec = parse_workflow(_spec([*_PLAIN, *extra]), "wf.toml")
    checked, built = check_workflow(spec), build_graph(spec)
    assert checked.ids == built.ids and checked.index == built.index
    assert checked.deps == built.deps and checked.dependants == built.dependants and checked.order == built.order
    assert "undo" not in checked.index and len(checked) == 300 + (1 if extra else 0)
    if extra:
        assert checked.deps[checked.index["last"]] == (299, 0)


@pytest.mark.parametrize("listing", ["in order", "reversed", "one late"])
def test_the_run_order_puts_every_task_after_what_it_needs(listing: str) -> None:
    tasks = list(_PLAIN)
    if listing == "reversed":
        tasks.reverse()
    elif listing == "one late":  # p10 listed after p11, which needs it
        tasks[10], tasks[11] = tasks[11], tasks[10]
    graph = check_workflow(parse_workflow(_spec(tasks), "wf.toml"))
    position = {task: n for n, task in enumerate(graph.order)}
    assert sorted(graph.order) == list(range(300))
    assert all(position[d] < position[i] for i, deps in enumerate(graph.deps) for d in deps)
    assert (graph.order == list(range(300))) == (listing == "in order")


def test_the_graph_of_a_workflow_with_bad_needs_leaves_them_out() -> None:
    tasks = [*_PLAIN[:3], {"id": "odd", "agent": "a", "prompt": "p", "needs": ["p1", "nope", "odd"]}]
    graph = build_graph(parse_workflow(_spec(tasks), "wf.toml"))
    assert graph.deps[3] == (1,), "the unknown need and the task itself are left out"
    with pytest.raises(ConfigError, match="needs unknown task 'nope'"):
        check_workflow(parse_workflow(_spec(tasks), "wf.toml"))


def test_unknown_model_and_tool_against_the_kernel(make_kernel: Any) -> None:
    kernel = make_kernel()
    data = {
        "workflow": {"name": "w"},
        "agents": {"a": {"model": "mm", "tools": ["serch"]}, "b": {"model": "auto"}},
        "tasks": [{"id": "x", "agent": "a", "prompt": "p"}, {"id": "y", "agent": "b", "prompt": "p"}],
    }
    lines = _check(data, kernel).splitlines()
    assert (
        lines[0]
        == "wf.toml: agent 'a': unknown model alias 'mm' (did you mean 'm'?); configured: local, m (define [models.mm] in the configuration)"
    )
    assert lines[1] == "wf.toml: agent 'a': unknown tool 'serch'; `taskloom tools` lists them"
    assert (
        lines[2] == "wf.toml: agent 'b': model \"auto\" needs a router; enable a plugin that implements taskloom_route"
    )


def test_inputs_unknown_and_required(tmp_path: Path) -> None:
    spec = load_workflow(write(tmp_path / "trip.toml", GOOD))
    with pytest.raises(ConfigError) as info:
        spec.resolve_inputs({"cty": "x", "who": "y"})
    assert (
        str(info.value)
        == f"{tmp_path / 'trip.toml'}: unknown input 'cty' (did you mean 'city'?); declared inputs: city, days, who (declare it under [workflow.inputs])"
    )
    with pytest.raises(ConfigError, match="input 'who' is required; pass --input who=VALUE"):
        spec.resolve_inputs({})
