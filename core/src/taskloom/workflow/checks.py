"""Checks a workflow before anything runs, and builds its :class:`Graph`.

Every problem is reported at once, one line each, naming the file and the task:
duplicate ids, unknown agents, ``needs`` naming an unknown task (with "did you mean"),
cycles (printed as ``plan -> build -> plan``), templates that read the output of a task
they do not need, unknown inputs and resources, and (with a kernel) unknown models and
tools. All of them raise :class:`~taskloom.errors.ConfigError` (exit code 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import attrgetter, contains, lt
from typing import TYPE_CHECKING

from ..config import did_you_mean
from ..errors import ConfigError
from . import templates
from .spec import TaskDef, WorkflowSpec

if TYPE_CHECKING:
    from ..kernel import Kernel


@dataclass
class Graph:
    """The tasks that run in the normal flow (compensation-only tasks excluded), by index."""

    ids: list[str]
    tasks: list[TaskDef]
    index: dict[str, int]
    deps: list[tuple[int, ...]]
    dependants: list[tuple[int, ...]]
    """Tuples, not lists: the garbage collector stops tracking tuples of ints, so a big
    graph costs the collector nothing while it runs."""
    order: list[int] = field(default_factory=list)
    """A topological order."""

    def __len__(self) -> int:
        return len(self.ids)


def _problem(spec: WorkflowSpec, task: str | None, text: str) -> str:
    return f"{spec.where}: task {task!r}: {text}" if task else f"{spec.where}: {text}"


def check_workflow(spec: WorkflowSpec, kernel: Kernel | None = None) -> Graph:
    """Check ``spec`` (and its names against ``kernel``'s registries); return its graph."""
    columns = _Columns.of(spec)
    problems = _problems(spec, columns)
    if kernel is not None:
        problems.extend(check_names(spec, kernel))
    # The graph leaves out needs already reported (unknown tasks, a task needing itself),
    # so a cycle is reported together with every other problem.
    graph = _build_graph(spec, columns)
    cycle = find_cycle(graph)
    if cycle:
        problems.insert(0, _problem(spec, None, "cycle: " + " -> ".join(cycle) + "; remove one of these needs"))
    if problems:
        raise ConfigError("\n".join(problems))
    return graph


_ID, _AGENT, _NEEDS, _PROMPT = attrgetter("id"), attrgetter("agent"), attrgetter("needs"), attrgetter("prompt")
_WHEN, _COMPENSATE, _RESOURCES = attrgetter("when"), attrgetter("compensate"), attrgetter("resources")
_NONE_ONLY = {None}


@dataclass
class _Columns:
    """What the checks and the graph both read of every task, read once (one pass in C
    each; a benchmark workflow has 10,000 tasks)."""

    ids: list[str]
    needs: list[list[str]]
    compensates: set[str | None]
    """Every task's ``compensate`` value, None included."""
    index: dict[str, int]
    """Task id to position (the last one for a duplicate id)."""
    plain: bool = False
    """Set by the checks: ids unique, every need names another, known, non-compensation
    task, once. The graph then needs no filtering."""

    @classmethod
    def of(cls, spec: WorkflowSpec) -> _Columns:
        tasks = spec.tasks
        ids = list(map(_ID, tasks))
        index = dict(zip(ids, range(len(ids)), strict=True))
        return cls(ids, list(map(_NEEDS, tasks)), set(map(_COMPENSATE, tasks)), index)

    @property
    def compensations(self) -> set[str]:
        """Tasks that only run as compensation (as ``WorkflowSpec.compensation_ids``)."""
        return {c for c in self.compensates if c}


def _problems(spec: WorkflowSpec, columns: _Columns) -> list[str]:
    """Every problem of the tasks themselves, in task order.

    Whole-workflow tests first, each one pass in C over all tasks (a benchmark workflow has
    10,000): unique ids, known agents, needs that name known, distinct, non-compensation
    tasks other than the task itself. When they all hold, only tasks with something more
    (a template, a condition, resources, a compensation) are looked at one by one; when
    any fails, every task is, so each problem is reported with its task."""
    tasks = spec.tasks
    compensations = columns.compensations
    capacities = spec.workflow.resources
    declared = set(spec.workflow.inputs)
    if tasks and len(columns.index) == len(tasks) and _plain_names(spec, columns, compensations):
        columns.plain = True
        problems: list[str] = []
        suspects = _with_more_to_check(tasks, columns)
        by_id = dict(zip(columns.ids, tasks, strict=True)) if suspects else {}
    else:
        problems, by_id = [], {}
        for task in tasks:
            if task.id in by_id:
                problems.append(_problem(spec, task.id, "duplicate task id; each [[tasks]] entry needs its own id"))
            else:
                by_id[task.id] = task
        if not tasks:
            problems.append(_problem(spec, None, "the workflow has no [[tasks]]"))
        suspects = list(by_id.values())
    for task in suspects:
        problems += _check_task(spec, task, by_id, compensations, capacities, declared)
    return problems


def _plain_names(spec: WorkflowSpec, columns: _Columns, compensations: set[str]) -> bool:
    if not set(map(_AGENT, spec.tasks)) <= spec.agents.keys():
        return False
    needs, index = columns.needs, columns.index
    named = set(chain.from_iterable(needs))
    if not named <= index.keys() or not named.isdisjoint(compensations):
        return False
    if any(map(contains, needs, index)):  # (index is in task order: a task that needs itself)
        return False
    return sum(map(len, needs)) == sum(map(len, map(set, needs)))  # no task names a need twice


def _with_more_to_check(tasks: list[TaskDef], columns: _Columns) -> list[TaskDef]:
    """The tasks with a templated prompt, a condition, resources or a compensation."""
    if (
        columns.compensates <= _NONE_ONLY
        and set(map(_WHEN, tasks)) <= _NONE_ONLY
        and not any(map(_RESOURCES, tasks))
        and templates.is_literal("\0".join(map(_PROMPT, tasks)))
    ):
        return []
    return [
        t
        for t in tasks
        if t.when is not None or t.compensate is not None or t.resources or not templates.is_literal(t.prompt)
    ]


def _check_task(
    spec: WorkflowSpec,
    task: TaskDef,
    by_id: dict[str, TaskDef],
    compensations: set[str],
    capacities: dict[str, int],
    declared: set[str],
) -> list[str]:
    # Called for every task of a workflow (10,000 in the benchmark): the usual task (known
    # agent, distinct needs, literal prompt, nothing else) goes through a few cheap tests.
    problems: list[str] = []
    tid = task.id
    needs = task.needs

    def bad(text: str) -> None:
        problems.append(_problem(spec, tid, text))

    if task.agent not in spec.agents:
        known = ", ".join(sorted(spec.agents)) or "none"
        bad(f"unknown agent {task.agent!r}{did_you_mean(task.agent, spec.agents)}; defined agents: {known}")
    for need in needs:
        if need == tid:
            bad("needs itself")
        elif need not in by_id:
            bad(f"needs unknown task {need!r}{did_you_mean(need, by_id)}")
        elif need in compensations:
            bad(f"needs {need!r}, which only runs as compensation")
    if len(needs) > 1 and len(set(needs)) != len(needs):
        bad("lists the same task twice in needs")
    if task.compensate is not None:
        if task.compensate not in by_id:
            bad(f"compensate names unknown task {task.compensate!r}{did_you_mean(task.compensate, by_id)}")
        elif task.compensate == tid:
            bad("compensates itself")
        elif by_id[task.compensate].needs:
            bad(f"compensation task {task.compensate!r} must not have needs; it runs after the failure")
    if tid in compensations and task.compensate:
        bad("a compensation task cannot have its own compensate")
    for name, count in task.resources.items():
        if name not in capacities:
            bad(f"resource {name!r} is not declared{did_you_mean(name, capacities)}; add it under [workflow.resources]")
        elif count > capacities[name]:
            bad(f"takes {count} of resource {name!r} but its capacity is {capacities[name]}")
    # Templates: they must parse, and read only outputs of tasks they need.
    templated = [] if templates.is_literal(task.prompt) else [("prompt", task.prompt, False)]
    if task.when is not None:
        templated.append(("when", task.when, True))
    if templated:
        readable = set(needs)
        if tid in compensations:
            readable = {t.id for t in by_id.values() if t.compensate == tid}
        for what, source, expr in templated:
            _check_template(spec, what, source, expr, readable, by_id, declared, bad)
    return problems


def _check_template(
    spec: WorkflowSpec,
    what: str,
    source: str,
    expr: bool,
    readable: set[str],
    by_id: dict[str, TaskDef],
    declared: set[str],
    bad: Callable[[str], None],
) -> None:
    error = templates.parse_error(source, expression=expr)
    if error:
        bad(f"{what} does not parse: {error}")
        return
    private = templates.private_names(source, expression=expr)
    if private:
        bad(
            f"{what} reads {', '.join(map(repr, private))}: the template sandbox refuses names starting "
            "with '_' (no access to Python internals); read inputs and outputs only"
        )
    outs, ins = templates.references(source, expression=expr)
    for ref in sorted(outs - readable):
        if ref in by_id:
            bad(f"{what} reads outputs.{ref} but the task does not need {ref!r}; add it to needs")
        else:
            bad(f"{what} reads outputs.{ref}: no task is named {ref!r}{did_you_mean(ref, by_id)}")
    for ref in sorted(ins - declared):
        bad(
            f"{what} reads inputs.{ref}, which is not declared{did_you_mean(ref, spec.workflow.inputs)}; add it under [workflow.inputs]"
        )


def check_names(spec: WorkflowSpec, kernel: Kernel) -> list[str]:
    """Models and tools the agents name, checked against the kernel's settings and registries."""
    out: list[str] = []
    settings = kernel.settings
    used = {t.agent for t in spec.tasks}
    has_router = bool(kernel.plugins.pm.hook.taskloom_route.get_hookimpls())
    for name, agent in spec.agents.items():
        if name not in used:
            continue
        where = f"{spec.where}: agent {name!r}"
        model = agent.model or settings.taskloom.default_model
        if model == "auto":
            if not has_router:
                out.append(f'{where}: model "auto" needs a router; enable a plugin that implements taskloom_route')
        elif model not in settings.models:
            known = ", ".join(sorted(settings.models)) or "none"
            out.append(
                f"{where}: unknown model alias {model!r}{did_you_mean(model, settings.models)}; "
                f"configured: {known} (define [models.{model}] in {settings.where})"
            )
        for tool in agent.tools:
            if tool not in kernel.tools:
                out.append(
                    f"{where}: unknown tool {tool!r}{did_you_mean(tool, kernel.tools.names())}; `taskloom tools` lists them"
                )
    return out


def build_graph(spec: WorkflowSpec) -> Graph:
    """The graph of ``spec``'s normal flow (compensation-only tasks left out); needs that
    name no task, or the task itself, are left out too (the checks report them)."""
    return _build_graph(spec, _Columns.of(spec))


def _build_graph(spec: WorkflowSpec, columns: _Columns) -> Graph:
    compensations = columns.compensations
    if compensations:
        tasks = [t for t in spec.tasks if t.id not in compensations]
        ids = list(map(_ID, tasks))
        index = dict(zip(ids, range(len(ids)), strict=True))
        needs = list(map(_NEEDS, tasks))
    else:  # every task is in the graph: the columns are its own
        tasks, ids, index, needs = list(spec.tasks), columns.ids, columns.index, columns.needs
    found = list(map(tuple, map(map, repeat(index.get), needs)))  # None for a need no task has
    if not columns.plain and (
        len(index) != len(ids) or None in chain.from_iterable(found) or any(map(contains, found, range(len(found))))
    ):
        # Unknown needs and a task needing itself (reported by the checks) are left out.
        found = [tuple([index[n] for n in t.needs if n in index and n != t.id]) for t in tasks]
    deps: list[tuple[int, ...]] = found  # type: ignore[assignment]  # (no None left)
    dependants: list[list[int]] = [[] for _ in tasks]
    for i, ds in enumerate(deps):
        for d in ds:
            dependants[d].append(i)
    graph = Graph(ids, tasks, index, deps, [tuple(js) for js in dependants])
    graph.order = _topological(graph)
    return graph


def _topological(graph: Graph) -> list[int]:
    deps = graph.deps
    # Tasks listed after every task they need (as files and the builder usually have them)
    # are in an order that is topological already: one test in C, which stops at the first
    # task listed before one of its needs (10,000 tasks: 2.0 ms instead of 2.9).
    if all(map(lt, map(max, filter(None, deps)), compress(range(len(deps)), deps))):
        return list(range(len(deps)))
    indeg = list(map(len, deps))
    stack = [i for i, n in enumerate(indeg) if n == 0]
    stack.reverse()
    order: list[int] = []
    push, take, dependants = stack.append, stack.pop, graph.dependants
    while stack:
        i = take()
        order.append(i)
        for j in dependants[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                push(j)
    return order


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle as task ids in run order (``a -> b -> a``: b needs a, a needs b), or None."""
    if len(graph.order) == len(graph):
        return None
    white, grey, black = 0, 1, 2
    colour = [white] * len(graph)
    for start in range(len(graph)):
        if colour[start] != white:
            continue
        path: list[int] = []
        stack: list[tuple[int, int]] = [(start, 0)]
        while stack:
            node, k = stack.pop()
            if k == 0:
                colour[node] = grey
                path.append(node)
            nxt = graph.dependants[node]
            if k < len(nxt):
                stack.append((node, k + 1))
                child = nxt[k]
                if colour[child] == grey:
                    cycle = path[path.index(child) :]
                    return [graph.ids[i] for i in [*cycle, child]]
                if colour[child] == white:
                    stack.append((child, 0))
            else:
                colour[node] = black
                path.pop()
    return None


__all__ = ["Graph", "build_graph", "check_names", "check_workflow", "find_cycle"]
