"""The scheduler: runs a checked workflow, checkpointing every task, and resumes runs.

Event-driven, not level by level: each task keeps a counter of unfinished dependencies;
when a task finishes, its result is saved to the run store, then the counters of its
dependants go down and those reaching zero start at once. With ``max_concurrency`` or
resources, ready tasks wait in a priority queue (longest remaining path first) and take
a slot, and *all* their resources in one step (all or nothing, so they cannot deadlock),
when both are free.

Started tasks are run by workers: anyio tasks of one task group that take jobs from a
queue, most critical first (longest remaining path). A worker whose task finished goes
straight on with a task that finish made ready, and only wakes an idle worker for each
further ready task; when none is idle it spawns one new worker, which spawns the next when
it starts (a chain, so no caller waits for a hundred spawns). A run of 10,000 tasks spawns
about as many workers as ran at once, not 10,000 anyio tasks, and the task on the critical
path starts at once.

A failed attempt is retried after ``backoff * 2**(n-1)`` seconds; each attempt has the
task's ``timeout``. ``fail-fast`` cancels running tasks (recorded ``interrupted``) at the
first failure; ``continue`` lets independent branches finish and skips the dependants of
the failed task. A spent budget stops new tasks; running ones end at their next check.
Ctrl-C or SIGTERM (with ``handle_signals``) cancels running tasks, records them as
interrupted and returns. When the run failed, the ``compensate`` tasks of the tasks that
succeeded run in reverse order of completion (saga).

A new run's record (with its spec as stored, for ``resume``) reaches the store right after
the first tasks have started, not before them; their "running" checkpoints follow it, and
no task's result is saved, nor any dependant started, before it.

A run-store error (database locked, disk full) stops the run like ``fail-fast``: running
tasks are cancelled and recorded interrupted (where the store still takes writes), the run
ends ``failed`` with the store's message, and no compensation runs (nothing went wrong with
the work itself; resume once the store is back). Finished checkpoints are kept.
"""

from __future__ import annotations

import heapq
import math
import operator
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..agent import Budget
from ..collector import RunHeap
from ..errors import ConfigError
from ..records import RunRecord, RunStatus, TaskRecord
from ..types import Action, Cost, Event, RequestMeta, Tally, Usage, assign, build
from . import templates
from .checks import Graph, check_workflow
from .executor import TaskOutcome, TaskSpec
from .planner import bottom_levels
from .result import RunNotResumable, WorkflowResult
from .spec import BudgetSpec, TaskDef, WorkflowSpec, load_workflow, parse_workflow

if TYPE_CHECKING:
    from ..kernel import Kernel

_RESOURCES = operator.attrgetter("resources")
_FINAL = frozenset(("succeeded", "failed", "skipped", "interrupted", "compensated"))
_NO_USAGE = Usage()
_NO_COST = Cost()


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


async def run_workflow(
    kernel: Kernel,
    spec: WorkflowSpec | str | Path,
    inputs: dict[str, Any] | None = None,
    *,
    run_id: str | None = None,
    handle_signals: bool = False,
) -> WorkflowResult:
    """Check and run ``spec`` (a spec or a workflow file) with ``inputs`` over its defaults."""
    # What is built before the first task lives to the run's end: built with the collector
    # paused, then frozen for the run (taskloom.collector).
    with RunHeap() as heap:
        if not isinstance(spec, WorkflowSpec):
            spec = load_workflow(spec)
        graph = check_workflow(spec, kernel)
        values = spec.resolve_inputs(inputs)
        if run_id is not None:  # a name the caller chose may be taken: refuse it before any task runs
            await _check_free(kernel, spec, run_id)
        run_id = run_id or new_run_id()
        user = kernel.settings.taskloom.user
        kernel.check(Action(kind="run", metadata=RequestMeta(run_id=run_id, user=user)))
        # The spec as stored is filled in, and the run stored, once the first tasks are on
        # their way (_Engine._store_run).
        run = RunRecord(id=run_id, workflow=spec.name, started_at=time.time(), inputs=values, source=spec.source)
        budget = Budget(spec.workflow.budget.usd, spec.workflow.budget.tokens)
        engine = _Engine(kernel, spec, graph, run, budget, {}, stored=False, heap=heap)
        heap.settle()
        return await engine.execute(handle_signals)


def _store_name(kernel: Kernel) -> str:
    """The active run store as errors name it: its configured name, else its class."""
    return kernel.settings.taskloom.store or type(kernel.store).__name__


async def _check_free(kernel: Kernel, spec: WorkflowSpec, run_id: str) -> None:
    taken = await kernel.store.get_run(run_id)
    if taken is not None:
        raise ConfigError(
            f"{spec.where}: run id {run_id!r} is taken: the run store ({_store_name(kernel)}) has run {run_id!r} "
            f"({taken.workflow}, {taken.status}); choose another --run-id, or finish that run with "
            f"`taskloom resume {run_id}`"
        )


async def resume_workflow(
    kernel: Kernel, run_id: str, *, handle_signals: bool = False, budget: BudgetSpec | None = None
) -> WorkflowResult:
    """Rerun what did not finish in run ``run_id``; succeeded tasks are never rerun.

    The run's budget counts what its earlier attempts spent; ``budget`` replaces the limits.
    """
    store = kernel.store
    run = await store.get_run(run_id)
    store_name = _store_name(kernel)
    if run is None:
        raise RunNotResumable(
            f"no run {run_id!r} in the run store ({store_name}); check the id printed by `taskloom run` "
            "(runs in the memory store do not outlive their process; a run killed as its first tasks "
            "started was not stored yet and finished nothing: run it again)"
        )
    if run.status == "succeeded":
        raise RunNotResumable(f"run {run_id!r} ({run.workflow}) already succeeded; there is nothing to resume")
    with RunHeap() as heap:  # (as in run_workflow)
        spec = parse_workflow(run.spec, run.source)
        graph = check_workflow(spec, kernel)
        previous = {r.task_id: r for r in await store.get_tasks(run_id) if r.compensation_of is None}
        limits = budget or spec.workflow.budget
        shared = Budget(limits.usd, limits.tokens)
        for record in previous.values():
            shared.charge(record.usage, record.cost)
        run.status, run.error, run.finished_at = "running", None, None
        await store.update_run(run)
        engine = _Engine(kernel, spec, graph, run, shared, previous)
        heap.settle()
        return await engine.execute(handle_signals, resumed=True)


class _Engine:
    def __init__(
        self,
        kernel: Kernel,
        spec: WorkflowSpec,
        graph: Graph,
        run: RunRecord,
        budget: Budget,
        previous: dict[str, TaskRecord],
        stored: bool = True,
        heap: RunHeap | None = None,
    ) -> None:
        self.kernel = kernel
        self.run_heap = heap or RunHeap()  # (one never entered: lasting() leaves the collector be)
        self.store = kernel.store
        self.executor = kernel.executor
        self.spec = spec
        self.graph = graph
        self.run = run
        self.inputs = run.inputs
        self.budget = budget
        self.budget_limited = budget.usd is not None or budget.tokens is not None
        self.previous = previous
        self.user = kernel.settings.taskloom.user
        self.emitting = kernel.has_sinks
        n = len(graph)
        self.state = ["pending"] * n
        self.records: list[TaskRecord | None] = [None] * n
        # The run's usage and cost, added up as each task's record reaches its final state,
        # while its numbers are at hand: summed at the end instead, 10,000 records scattered
        # in memory took some 20 ms after the last task had finished.
        self.totals = Tally()
        self.counted = bytearray(n)  # 1: task i's final record is in self.totals
        self.outputs: dict[str, Any] = {}
        self.remaining = [0] * n
        self.limit = spec.workflow.max_concurrency
        self.free = dict(spec.workflow.resources)
        self.queued = self.limit is not None or any(map(_RESOURCES, graph.tasks))
        self.priority = [-b for b in bottom_levels(graph)]
        self.heap: list[tuple[float, int]] = []
        self.running = 0
        self.scopes: dict[object, anyio.CancelScope] = {}
        self.stopping: RunStatus | None = None
        self.stop_reason: str | None = None
        self.failures: list[str] = []
        self.compensations: list[TaskRecord] = []
        self.store_error: str | None = None
        # Whether the run's record is in the store: True; False, not yet (a new run); None,
        # the store refused it. A new run's record is stored by a job queued behind the
        # first tasks, so they start without waiting for it (a 10,000-task spec takes some
        # 15-25 ms to dump and copy); until then "running" checkpoints wait in ``early``,
        # and any other write stores the run first (checkpoints of finished tasks included).
        self.run_stored: bool | None = stored
        self.early: list[TaskRecord] = []
        self.storing = anyio.Lock()
        self.tg: Any = None
        # Workers: jobs ready to run, events of idle workers, workers woken or spawned that
        # have not looked at the queue yet, jobs running, and whether no job can come any more.
        self.jobs: list[tuple[float, int, Callable[..., Awaitable[None]], tuple[Any, ...]]] = []  # a heap
        self.seq = 0
        self.idle: list[anyio.Event] = []
        self.waking = 0
        self.active = 0
        self.done = False

    # ------------------------------------------------------------------ the run

    async def execute(self, handle_signals: bool, resumed: bool = False) -> WorkflowResult:
        g = self.graph
        state = self.state
        if self.previous:
            for i, tid in enumerate(g.ids):
                record = self.previous.get(tid)
                if record is not None and record.state == "succeeded":
                    state[i] = "succeeded"
                    self.records[i] = record
                    self.outputs[tid] = record.output
                    self._count(i, record)
            self.remaining = [sum(1 for d in deps if state[d] != "succeeded") for deps in g.deps]
        else:  # a new run: nothing is done yet
            self.remaining = list(map(len, g.deps))
        if self.emitting:
            self._emit("run.start", None, {
                "workflow": self.spec.name, "tasks": len(g), "user": self.user, "resumed": resumed,
                "already_done": state.count("succeeded"),
            })  # fmt: skip
        try:
            async with anyio.create_task_group() as outer:
                if handle_signals:
                    outer.start_soon(self._watch_signals)
                async with anyio.create_task_group() as tg:
                    self.tg = tg
                    for i, n in enumerate(self.remaining):
                        if n == 0 and state[i] == "pending":
                            self._make_ready(i)
                    if self.run_stored is False:  # behind every task ready now
                        self.seq += 1
                        heapq.heappush(self.jobs, (math.inf, self.seq, self._store_run_job, ()))
                    self._supply(0)
                outer.cancel_scope.cancel()
            status = self._status()
            if status == "failed" and self.store_error is None:
                await self._compensate()
        except BaseException as exc:
            # Cancelled from outside (KeyboardInterrupt through asyncio, a caller's scope), or
            # a bug: running tasks recorded themselves as interrupted; record the run, go on.
            leaf = _leaf(exc)
            with anyio.CancelScope(shield=True):
                if isinstance(leaf, Exception):
                    self.failures.append(f"internal error: {type(leaf).__name__}: {leaf}")
                    await self._finish("failed")
                else:
                    self.stopping = "interrupted"
                    self.stop_reason = self.stop_reason or "cancelled"
                    await self._finish("interrupted")
            if leaf is not exc:
                raise leaf from exc
            raise
        return await self._finish(status)

    def _status(self) -> RunStatus:
        if self.stopping == "interrupted":
            return "interrupted"
        if self.failures or self.store_error:
            return "failed"
        if self.stopping == "budget_exceeded":
            return "budget_exceeded"
        if not _FINAL.issuperset(self.state):  # (in C: 10,000 states in 0.06 ms, a genexpr 0.3)
            return "failed"
        return "succeeded"

    async def _finish(self, status: RunStatus) -> WorkflowResult:
        run = self.run
        if self.run_stored is False:  # ended before the job that stores it ran (cancelled at once)
            await self._store_run()
        ids, records = self.graph.ids, self.records
        tasks: dict[str, TaskRecord]
        # (``None in records`` would compare every record to None with pydantic's __eq__;
        # the identity test run in C: 10,000 records in 0.16 ms, against 0.27 for a genexpr)
        if any(map(operator.is_, records, repeat(None))):
            tasks = {}
            for i, tid in enumerate(ids):
                record = records[i]
                if record is None:
                    record = TaskRecord(run_id=run.id, task_id=tid, state="pending", agent=self.graph.tasks[i].agent)
                tasks[tid] = record
        else:
            tasks = dict(zip(ids, records, strict=True))  # type: ignore[arg-type]  # (no None in records)
        # The final records were added up as they ended; what is left is records that never
        # reached a final state (a run ended by an internal error) and the compensations.
        rest = []
        if 0 in self.counted:  # (a C scan of the bytearray: usually every record was counted)
            rest = [r for r, done in zip(records, self.counted, strict=True) if not done and r is not None]
        for record in [*rest, *self.compensations]:
            self._add_to_totals(record)
        usage, cost = self.totals.total_usage(), self.totals.total_cost()
        run.status = status
        run.finished_at = time.time()
        run.usage, run.cost = usage, cost
        if status == "failed":
            reasons = [self.store_error] if self.store_error else []
            run.error = "; ".join(reasons + self.failures) or "some tasks did not finish"
        elif status != "succeeded":
            run.error = self.stop_reason
        try:
            if self.run_stored:  # (never a run the store refused: the id may be another run's)
                await self.store.update_run(run)
        except Exception as exc:
            if self.store_error is None:  # the run itself went well; only its record failed
                run.status = status = "failed"
            note = f"the run store ({_store_name(self.kernel)}) could not save the run's final status: {_describe(exc)}"
            run.error = f"{run.error}; {note}" if run.error else note
            self.store_error = self.store_error or note
        self._emit("run.finish", None, {"status": status, "usage": usage, "cost": cost, "error": run.error})
        return WorkflowResult(
            run=run.model_copy(), tasks=tasks, compensations=list(self.compensations), stored=self.run_stored is True
        )

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self._stop("interrupted", f"interrupted by {signal.Signals(signum).name}")
                return

    def _stop(self, status: RunStatus, reason: str | None) -> None:
        if self.stopping is None or status == "interrupted":
            self.stopping = status
            self.stop_reason = reason
        if status in ("failed", "interrupted"):
            for scope in list(self.scopes.values()):
                scope.cancel()

    # ------------------------------------------------------------------ the run store

    def _count(self, i: int, record: TaskRecord) -> None:
        """Task i's record has reached its final state: add its usage and cost to the run's (once)."""
        if not self.counted[i]:
            self.counted[i] = 1
            self._add_to_totals(record)

    def _add_to_totals(self, record: TaskRecord) -> None:
        if record.usage is not _NO_USAGE:  # (the shared zeros add nothing)
            self.totals.add_usage(record.usage)
        if record.cost is not _NO_COST:
            self.totals.add_cost(record.cost)

    async def _store_run_job(self) -> None:
        await self._store_run()

    async def _store_run(self) -> bool:
        """Store the new run's record, once (the first caller does it, shielded; later ones
        wait for it), then the "running" checkpoints that waited for it; False when the store
        refused the run."""
        async with self.storing:
            if self.run_stored is False:
                with anyio.CancelScope(shield=True):
                    await self._create_run()
        return self.run_stored is True

    async def _create_run(self) -> None:
        run = self.run
        try:
            with self.run_heap.lasting():  # (the spec as stored lives to the run's end)
                spec = self.spec.to_dict()
            assign(run, spec=spec)
            await self.store.create_run(run)
        except Exception as exc:
            self.run_stored = None
            self.early.clear()
            self.store_error = (
                f"the run store ({_store_name(self.kernel)}) could not record run {run.id!r}: {_describe(exc)}"
            )
            self._stop("failed", self.store_error)
            return
        early, self.early = self.early, []
        for record in early:  # (those that finished meanwhile wait to save their final state)
            if record.state == "running" and not await self._put(record):
                break
        self.run_stored = True

    async def _save(self, record: TaskRecord) -> bool:
        """Checkpoint ``record``; on a store error, stop the run (once) and return False."""
        if self.run_stored is not True:
            if self.run_stored is False and record.state == "running" and record.compensation_of is None:
                self.early.append(record)  # saved when the run is
                return True
            if not await self._store_run():
                return False
        return await self._put(record)

    async def _put(self, record: TaskRecord) -> bool:
        try:
            await self.store.save_task(record)
        except Exception as exc:
            if self.store_error is None:
                self.store_error = (
                    f"the run store ({_store_name(self.kernel)}) failed while saving task {record.task_id!r} "
                    f"({record.state}): {_describe(exc)}"
                )
                self._stop("failed", self.store_error)
            return False
        return True

    # ------------------------------------------------------------------ workers

    def _start(self, job: Callable[..., Awaitable[None]], i: int, *args: Any) -> None:
        """Queue a job about task i; the worker that made it ready, or :meth:`_supply`, sees it run."""
        self.seq += 1
        heapq.heappush(self.jobs, (self.priority[i], self.seq, job, (i, *args)))

    def _supply(self, taking: int) -> None:
        """Wake idle workers until every queued job has a worker on its way (``taking`` is 1
        when the caller is a worker about to take one itself); if that is not enough, spawn
        one new worker, which supplies the rest when it starts. Spawning costs far more
        than waking, so the caller goes on with its own job (the most critical) after one
        spawn, not after one for every job queued (a run's first 100 roots)."""
        need = len(self.jobs) - self.waking - taking
        idle = self.idle
        while need > 0 and idle:
            need -= 1
            self.waking += 1
            idle.pop().set()
        if need > 0:
            self.waking += 1
            self.tg.start_soon(self._worker)

    async def _worker(self) -> None:
        self.waking -= 1
        jobs = self.jobs
        while True:
            if jobs:
                self._supply(1)
                _, _, job, args = heapq.heappop(jobs)
                self.active += 1
                try:
                    await job(*args)
                finally:
                    self.active -= 1
                continue
            if self.active == 0 or self.done:
                # Nothing runs and nothing is queued: no job can come any more.
                self.done = True
                for event in self.idle:
                    event.set()
                self.idle.clear()
                return
            event = anyio.Event()
            self.idle.append(event)
            await event.wait()
            if self.done:
                return
            self.waking -= 1

    # ------------------------------------------------------------------ readiness

    def _context(self, i: int) -> dict[str, Any]:
        ids, outputs = self.graph.ids, self.outputs
        return {"inputs": self.inputs, "outputs": {ids[d]: outputs[ids[d]] for d in self.graph.deps[i]}}

    def _make_ready(self, i: int) -> None:
        """All of task i's dependencies are done: skip it, or queue it."""
        if self.stopping is not None or self.state[i] != "pending":
            return
        g = self.graph
        for d in g.deps[i]:
            if self.state[d] != "succeeded":
                self.state[i] = "skipped"
                how = "was skipped" if self.state[d] == "skipped" else self.state[d]
                self._start(self._skip, i, f"needs {g.ids[d]!r}, which {how}")
                return
        task = g.tasks[i]
        if task.when is not None:
            try:
                go = templates.evaluate(task.when, self._context(i))
            except templates.TemplateProblem as exc:
                self.state[i] = "running"
                self._start(self._fail_unstarted, i, f"{exc} (in {self.spec.where})")
                return
            if not go:
                self.state[i] = "skipped"
                self._start(self._skip, i, f"condition {task.when!r} is false")
                return
        self.state[i] = "queued"
        if not self.queued:
            self.running += 1
            self._start(self._run_task, i)
            return
        heapq.heappush(self.heap, (self.priority[i], i))
        self._dispatch()

    def _dispatch(self) -> None:
        """Start queued tasks while a slot and all their resources are free."""
        if self.stopping is not None:
            return
        blocked = []
        tasks = self.graph.tasks
        while self.heap and (self.limit is None or self.running < self.limit):
            item = heapq.heappop(self.heap)
            needs = tasks[item[1]].resources
            if needs:
                if any(self.free[r] < c for r, c in needs.items()):
                    blocked.append(item)
                    continue
                for r in sorted(needs):
                    self.free[r] -= needs[r]
            self.running += 1
            self._start(self._run_task, item[1])
        for item in blocked:
            heapq.heappush(self.heap, item)

    def _complete(self, i: int) -> None:
        remaining = self.remaining
        for j in self.graph.dependants[i]:
            remaining[j] -= 1
            if remaining[j] == 0:
                self._make_ready(j)

    # ------------------------------------------------------------------ one task

    def _record(self, task: TaskDef, task_id: str, *, compensation_of: str | None = None) -> TaskRecord:
        prev = self.previous.get(task_id) if compensation_of is None else None
        return build(TaskRecord,
            run_id=self.run.id, task_id=task_id, state="running", attempts=prev.attempts if prev else 0,
            agent=task.agent, prompt=None, output=None, error=None, started_at=time.time(), finished_at=None,
            usage=prev.usage if prev else _NO_USAGE, cost=prev.cost if prev else _NO_COST, compensation_of=compensation_of,
        )  # fmt: skip

    async def _run_task(self, i: int) -> None:
        g = self.graph
        task, tid = g.tasks[i], g.ids[i]
        record: TaskRecord | None = None
        try:
            if self.budget_limited:
                reason = self.budget.exhausted()
                if reason:
                    self._stop("budget_exceeded", reason)
                    self.state[i] = "pending"
                    return
            self.state[i] = "running"
            record = self.records[i] = self._record(task, tid)
            try:
                prompt = task.prompt  # a literal prompt needs no context
                if not templates.is_literal(prompt):
                    prompt = templates.render(prompt, self._context(i))
                # (assign: the attribute set pydantic makes, without its per-attribute dispatch)
                assign(record, prompt=prompt)
            except templates.TemplateProblem as exc:
                record.attempts += 1
                await self._failed(i, record, f"{exc} (in {self.spec.where})")
                return
            if not await self._save(record):
                self.state[i] = "pending"  # it never started; resume runs it
                self.records[i] = None
                return
            if self.emitting:  # the payload is built only for sinks
                self._emit("task.start", record, {"attempt": record.attempts + 1})
            outcome = await self._try(task, record, i, lambda: self.stopping in ("failed", "interrupted"))
            await self._settle(i, record, outcome)
        except BaseException:
            if record is not None and record.state == "running":
                with anyio.CancelScope(shield=True):
                    await self._interrupted(i, record, "cancelled")
            raise
        finally:
            self.running -= 1
            if self.queued:
                for r, c in task.resources.items():
                    self.free[r] += c
                self._dispatch()

    async def _try(
        self, task: TaskDef, record: TaskRecord, key: object, abort: Callable[[], bool]
    ) -> TaskOutcome | None:
        """Attempts with retries and backoff; the last outcome, or None if cancelled."""
        agent = self.spec.agents[task.agent]
        budget = self.budget if record.compensation_of is None else None
        last: TaskOutcome | None = None
        while True:
            if abort():
                return None
            assign(record, attempts=record.attempts + 1)
            spec = build(TaskSpec,
                run_id=self.run.id, task_id=record.task_id, attempt=record.attempts, agent=agent,
                escalation_reason=last.stop_reason if last else None, previous_error=last.error if last else None,
                prompt=record.prompt or "", timeout=task.timeout, resources=task.resources, user=self.user, workflow=self.spec.name,
                budget_usd_left=str(budget.remaining_usd) if budget is not None and budget.usd is not None else None,
                budget_tokens_left=budget.tokens - budget.spent_tokens if budget is not None and budget.tokens is not None else None,
            )  # fmt: skip
            with anyio.CancelScope() as scope:
                self.scopes[key] = scope
                outcome = await self._attempt(spec, task.timeout, budget)
            del self.scopes[key]
            if scope.cancelled_caught:
                return None
            used = outcome.usage
            if used.input_tokens or used.output_tokens:
                # Zero plus the outcome's usage is that usage: share it (int fields, exact).
                assign(record, usage=used if record.usage is _NO_USAGE else record.usage + used)
            if outcome.cost.total or not outcome.cost.priced:
                record.cost = record.cost + outcome.cost
            if budget is not None and not outcome.charged:
                budget.charge(outcome.usage, outcome.cost)
            if outcome.ok or outcome.budget_stop or outcome.stop_reason in ("denied", "config"):
                return outcome
            if record.attempts > task.retries or abort() or self.stopping == "budget_exceeded":
                return outcome
            last = outcome
            delay = task.backoff * 2 ** (record.attempts - 1)
            self._emit("task.retry", record, {"attempt": record.attempts, "error": outcome.error, "delay_s": delay})
            with anyio.CancelScope() as scope:
                self.scopes[key] = scope
                await anyio.sleep(delay)
            del self.scopes[key]
            if scope.cancelled_caught:
                return None

    async def _attempt(self, spec: TaskSpec, timeout: float | None, budget: Budget | None) -> TaskOutcome:
        try:
            if timeout is None:
                return await self.executor.run(spec, self.kernel, budget)
            with anyio.fail_after(timeout):
                return await self.executor.run(spec, self.kernel, budget)
        except TimeoutError:
            return TaskOutcome(ok=False, stop_reason="timeout", error=f"timed out after {timeout:g} s")
        except ConfigError as exc:
            return TaskOutcome(ok=False, stop_reason="config", error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            return TaskOutcome(ok=False, stop_reason="error", error=f"{type(exc).__name__}: {exc}")

    async def _settle(self, i: int, record: TaskRecord, outcome: TaskOutcome | None) -> None:
        if outcome is None:
            await self._interrupted(i, record, self.stop_reason or "cancelled")
        elif outcome.ok:
            assign(record, state="succeeded", output=outcome.output, finished_at=time.time())
            self._count(i, record)
            saved = await self._save(record)  # the checkpoint, before any dependant starts
            self.state[i] = "succeeded"
            self.outputs[record.task_id] = outcome.output
            if self.emitting:
                self._emit(
                    "task.succeed", record, {"usage": record.usage, "cost": record.cost, "attempts": record.attempts}
                )
            if saved:  # else the run stops: dependants must not build on an unsaved result
                self._complete(i)
        elif outcome.budget_stop:
            self._stop("budget_exceeded", outcome.error)
            await self._interrupted(i, record, outcome.error or "the run's budget is spent")
        else:
            await self._failed(i, record, outcome.error or outcome.stop_reason)

    async def _failed(self, i: int, record: TaskRecord, error: str) -> None:
        record.state = "failed"
        record.error = error
        record.finished_at = time.time()
        self._count(i, record)
        await self._save(record)
        self.state[i] = "failed"
        self.failures.append(f"task {record.task_id!r} failed: {error}")
        self._emit(
            "task.fail",
            record,
            {"error": error, "attempts": record.attempts, "usage": record.usage, "cost": record.cost},
        )
        if self.spec.workflow.failure_mode == "fail-fast":
            self._stop("failed", self.failures[-1])
        else:
            self._complete(i)

    async def _fail_unstarted(self, i: int, error: str) -> None:
        g = self.graph
        record = self.records[i] = self._record(g.tasks[i], g.ids[i])
        await self._failed(i, record, error)

    async def _interrupted(self, i: int, record: TaskRecord, reason: str) -> None:
        record.state = "interrupted"
        record.error = reason
        record.finished_at = time.time()
        self.state[i] = "interrupted"
        self._count(i, record)
        await self._save(record)
        self._emit("task.interrupt", record, {"error": reason})

    async def _skip(self, i: int, reason: str) -> None:
        g = self.graph
        now = time.time()
        record = self.records[i] = build(TaskRecord,
            run_id=self.run.id, task_id=g.ids[i], state="skipped", attempts=0, agent=g.tasks[i].agent, prompt=None,
            output=None, error=reason, started_at=now, finished_at=now, usage=_NO_USAGE, cost=_NO_COST, compensation_of=None,
        )  # fmt: skip
        self._count(i, record)
        await self._save(record)
        self._emit("task.skip", record, {"reason": reason})
        self._complete(i)

    # ------------------------------------------------------------------ saga

    async def _compensate(self) -> None:
        """Run the compensations of succeeded tasks, most recently finished first."""
        done = [
            r for r in self.records if r is not None and r.state == "succeeded" and self.spec.task(r.task_id).compensate
        ]
        done.sort(key=lambda r: r.finished_at or 0.0, reverse=True)
        for original in done:
            comp_id = self.spec.task(original.task_id).compensate
            assert comp_id is not None
            task = self.spec.task(comp_id)
            record = self._record(task, f"{comp_id}@{original.task_id}", compensation_of=original.task_id)
            self.compensations.append(record)
            context = {"inputs": self.inputs, "outputs": {original.task_id: original.output}}
            self._emit("task.compensate", record, {"of": original.task_id, "task": comp_id})
            try:
                record.prompt = templates.render(task.prompt, context)
            except templates.TemplateProblem as exc:
                outcome: TaskOutcome | None = TaskOutcome(ok=False, stop_reason="config", error=str(exc))
            else:
                await self._save(record)
                outcome = await self._try(task, record, record.task_id, lambda: self.stopping == "interrupted")
            record.finished_at = time.time()
            if outcome is not None and outcome.ok:
                record.state = "succeeded"
                record.output = outcome.output
                original.state = "compensated"
                await self._save(original)
                self._emit(
                    "task.succeed",
                    record,
                    {"usage": record.usage, "cost": record.cost, "compensation_of": original.task_id},
                )
            else:
                record.state = "interrupted" if outcome is None else "failed"
                record.error = "cancelled" if outcome is None else outcome.error
                self._emit("task.fail", record, {"error": record.error, "compensation_of": original.task_id})
            await self._save(record)
            if outcome is None:
                return

    # ------------------------------------------------------------------ events

    def _emit(self, kind: str, record: TaskRecord | None, data: dict[str, Any]) -> None:
        if self.emitting:
            self.kernel.emit(build(Event,
                kind=kind, time=time.time(), run_id=self.run.id, task_id=record.task_id if record else None,
                agent=record.agent if record else None, data=data,
            ))  # fmt: skip


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _leaf(exc: BaseException) -> BaseException:
    """The one real error inside nested exception groups (task groups wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())]
        if len(inner) != 1:
            return exc
        exc = inner[0]
    return exc


__all__ = ["new_run_id", "resume_workflow", "run_workflow"]
