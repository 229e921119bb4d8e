"""The conformance suite for run stores (:class:`taskloom.records.RunStore`).

Subclass :class:`StoreConformance` in a test module and provide the ``make_store``
fixture: a callable returning a new store. With ``persistent = True``, stores made by
the same factory share their data (the same file or database), which the suite checks::

    class TestMyStore(StoreConformance):
        persistent = True

        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "runs.db")

Every test is an anyio test; the suite closes the stores it makes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import anyio
import pytest

from taskloom.records import CallRecord, RunRecord, RunStore, TaskRecord, ToolCallRecord
from taskloom.types import Cost, Event, Usage

StoreFactory = Callable[[], RunStore]


def make_run(run_id: str = "run-1", started_at: float | None = None, **fields: object) -> RunRecord:
    return RunRecord(
        id=run_id,
        workflow=str(fields.pop("workflow", "wf")),
        started_at=started_at if started_at is not None else time.time(),
        **fields,
    )


def make_call(run_id: str | None = "run-1", task_id: str | None = "t1", n: int = 0, **fields: object) -> CallRecord:
    values: dict[str, object] = {
        "run_id": run_id, "task_id": task_id, "agent": "writer", "request_hash": f"h{n}", "alias": "gpt",
        "model": "gpt-4o-mini", "provider": "openai", "usage": Usage(input_tokens=100 + n, output_tokens=20),
        "cost": Cost(total=Decimal("0.000027") + n, input=Decimal("0.000015"), output=Decimal("0.000012"),
                     source="prices"),
        "latency_s": 0.25, "time": 1000.0 + n,
    }  # fmt: skip
    values.update(fields)
    return CallRecord.model_validate(values)


class StoreConformance:
    """Behaviour every run store must have."""

    persistent: bool = False
    """Stores made by the factory share their data; closing one keeps what it saved."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        raise NotImplementedError("provide a make_store fixture returning a callable that makes a store")

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def stores(self, make_store: StoreFactory) -> AsyncIterator[StoreFactory]:
        made: list[RunStore] = []

        def make() -> RunStore:
            store = make_store()
            made.append(store)
            return store

        yield make
        for store in made:
            await store.aclose()

    @pytest.fixture
    async def store(self, stores: StoreFactory) -> RunStore:
        return stores()

    # ------------------------------------------------------------------ runs

    @pytest.mark.anyio
    async def test_is_a_run_store(self, store: RunStore) -> None:
        assert isinstance(store, RunStore)

    @pytest.mark.anyio
    async def test_run_round_trip(self, store: RunStore) -> None:
        run = make_run(
            inputs={"topic": "bees", "n": 3, "nested": {"list": [1, 2.5, None, "é"]}},
            spec={"workflow": {"name": "wf"}, "tasks": [{"id": "a", "needs": []}]},
            source="/tmp/wf.toml",
            usage=Usage(input_tokens=10, output_tokens=5, cached_input_tokens=2),
            cost=Cost(total=Decimal("0.000000123456789"), input=Decimal("0.0000001"), priced=False),
        )
        await store.create_run(run)
        got = await store.get_run(run.id)
        assert got == run
        assert got is not None and got.cost.total == Decimal("0.000000123456789")
        assert isinstance(got.cost.total, Decimal)

    @pytest.mark.anyio
    async def test_unknown_run_is_none(self, store: RunStore) -> None:
        assert await store.get_run("nope") is None
        assert await store.get_tasks("nope") == []
        assert await store.get_calls("nope") == []
        assert await store.get_tool_calls("nope") == []

    @pytest.mark.anyio
    async def test_create_twice_is_refused(self, store: RunStore) -> None:
        await store.create_run(make_run())
        with pytest.raises(Exception):  # noqa: B017 - any error, as long as the first run stays
            await store.create_run(make_run(workflow="other"))
        got = await store.get_run("run-1")
        assert got is not None and got.workflow == "wf"

    @pytest.mark.anyio
    async def test_update_run(self, store: RunStore) -> None:
        run = make_run()
        await store.create_run(run)
        run.status, run.finished_at, run.error = "failed", run.started_at + 3, "task b failed"
        run.cost = Cost(total=Decimal("1.23"))
        await store.update_run(run)
        assert await store.get_run(run.id) == run

    @pytest.mark.anyio
    async def test_update_unknown_run_is_refused(self, store: RunStore) -> None:
        with pytest.raises(Exception):  # noqa: B017
            await store.update_run(make_run("ghost"))
        assert await store.get_run("ghost") is None

    @pytest.mark.anyio
    async def test_returned_records_are_copies(self, store: RunStore) -> None:
        run = make_run()
        await store.create_run(run)
        run.status = "failed"  # the caller's object changes after the call
        got = await store.get_run("run-1")
        assert got is not None and got.status == "running"
        got.status = "succeeded"
        again = await store.get_run("run-1")
        assert again is not None and again.status == "running"
        task = TaskRecord(run_id="run-1", task_id="a", state="running")
        await store.save_task(task)
        task.state = "failed"
        assert (await store.get_tasks("run-1"))[0].state == "running"

    @pytest.mark.anyio
    async def test_list_runs_newest_first_with_limit(self, store: RunStore) -> None:
        for i in range(5):
            await store.create_run(make_run(f"r{i}", started_at=1000.0 + i))
        runs = await store.list_runs()
        assert [r.id for r in runs] == ["r4", "r3", "r2", "r1", "r0"]
        assert [r.id for r in await store.list_runs(limit=2)] == ["r4", "r3"]

    # ------------------------------------------------------------------ checkpoints

    @pytest.mark.anyio
    async def test_save_task_inserts_then_replaces(self, store: RunStore) -> None:
        await store.create_run(make_run())
        await store.save_task(TaskRecord(run_id="run-1", task_id="a", state="running", attempts=1, started_at=1.0))
        await store.save_task(TaskRecord(run_id="run-1", task_id="b", state="pending"))
        done = TaskRecord(
            run_id="run-1", task_id="a", state="succeeded", attempts=2, agent="writer", prompt="Write about {x}",
            output={"text": "done", "items": [1, 2], "score": 0.5}, started_at=1.0, finished_at=2.5,
            usage=Usage(input_tokens=7, output_tokens=3), cost=Cost(total=Decimal("0.0000042")),
        )  # fmt: skip
        await store.save_task(done)
        tasks = await store.get_tasks("run-1")
        assert [t.task_id for t in tasks] == ["a", "b"], "one record per task, in the order first saved"
        assert tasks[0] == done

    @pytest.mark.anyio
    @pytest.mark.parametrize("output", [None, "text", 42, 1.5, [1, "two"], {"a": {"b": None}}, True])
    async def test_task_outputs_round_trip(self, store: RunStore, output: object) -> None:
        await store.create_run(make_run())
        await store.save_task(TaskRecord(run_id="run-1", task_id="t", state="succeeded", output=output))
        assert (await store.get_tasks("run-1"))[0].output == output

    @pytest.mark.anyio
    async def test_tasks_are_kept_per_run(self, store: RunStore) -> None:
        await store.create_run(make_run("r1"))
        await store.create_run(make_run("r2"))
        await store.save_task(TaskRecord(run_id="r1", task_id="a"))
        await store.save_task(TaskRecord(run_id="r2", task_id="a", state="failed", compensation_of=None))
        await store.save_task(TaskRecord(run_id="r2", task_id="undo-a", state="succeeded", compensation_of="a"))
        assert [t.state for t in await store.get_tasks("r1")] == ["pending"]
        r2 = await store.get_tasks("r2")
        assert [(t.task_id, t.compensation_of) for t in r2] == [("a", None), ("undo-a", "a")]

    @pytest.mark.anyio
    async def test_concurrent_checkpoints(self, store: RunStore) -> None:
        await store.create_run(make_run())

        async def save(i: int) -> None:
            await store.save_task(TaskRecord(run_id="run-1", task_id=f"t{i}", state="running"))
            await store.save_task(TaskRecord(run_id="run-1", task_id=f"t{i}", state="succeeded", output=i))

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(save, i)
        tasks = await store.get_tasks("run-1")
        assert len(tasks) == 100
        assert all(t.state == "succeeded" and t.output == int(t.task_id[1:]) for t in tasks)

    # ------------------------------------------------------------------ ledger

    @pytest.mark.anyio
    async def test_calls_round_trip_in_order(self, store: RunStore) -> None:
        await store.create_run(make_run())
        calls = [make_call(n=i) for i in range(3)]
        calls.append(make_call(n=3, cached=True, cost=Cost(source="cache"), usage=Usage()))
        calls.append(make_call(n=4, cost=Cost.unpriced(), error="boom"))
        for call in calls:
            await store.record_call(call)
        await store.record_call(make_call(run_id="other"))
        await store.record_call(make_call(run_id=None, task_id=None))
        got = await store.get_calls("run-1")
        assert got == calls
        assert got[0].cost.total == Decimal("0.000027")
        assert got[3].cached and not got[4].cost.priced

    @pytest.mark.anyio
    async def test_tool_calls_round_trip(self, store: RunStore) -> None:
        await store.create_run(make_run())
        calls = [
            ToolCallRecord(run_id="run-1", task_id="t1", agent="a", name="web.search",
                           arguments={"q": "bees", "api_key": "**********"}, duration_s=0.5,
                           cost=Decimal("0.005"), time=1.0),
            ToolCallRecord(run_id="run-1", task_id="t2", name="add", arguments={}, error="boom", time=2.0),
        ]  # fmt: skip
        for call in calls:
            await store.record_tool_call(call)
        await store.record_tool_call(ToolCallRecord(run_id="other", name="x"))
        got = await store.get_tool_calls("run-1")
        assert got == calls
        assert got[0].cost == Decimal("0.005") and isinstance(got[0].cost, Decimal)

    @pytest.mark.anyio
    async def test_events_are_kept_per_run_in_order(self, store: RunStore) -> None:
        await store.create_run(make_run())
        await store.create_run(make_run("run-2"))
        await store.record_event(Event(kind="run.start", run_id="run-1", data={"tasks": 3}))
        await store.record_event(Event(kind="run.start", run_id="run-2", data={"tasks": 1}))
        await store.record_event(
            Event(
                kind="model.call", run_id="run-1", task_id="t1", data={"usage": Usage(), "cost": Cost(total=Decimal(1))}
            )
        )
        await store.record_event(Event(kind="untagged", data={}))  # no run: kept, and in no run's list
        events = await store.get_events("run-1")
        assert [e.kind for e in events] == ["run.start", "model.call"]
        assert events[0].data == {"tasks": 3} and events[1].task_id == "t1"
        cost = events[1].data["cost"]  # the object itself, or its JSON form in a store that serialises
        assert Decimal(str(cost.total if isinstance(cost, Cost) else cost["total"])) == 1, events[1].data
        assert [e.data for e in await store.get_events("run-2")] == [{"tasks": 1}]
        assert await store.get_events("no-such-run") == []

    @pytest.mark.anyio
    async def test_ledger_of_a_finished_run_sums_exactly(self, store: RunStore) -> None:
        await store.create_run(make_run())
        for i in range(50):
            await store.record_call(make_call(n=i, cost=Cost(total=Decimal("0.0000001"))))
        total = sum((c.cost.total for c in await store.get_calls("run-1")), Decimal(0))
        assert total == Decimal("0.000005")

    # ------------------------------------------------------------------ persistence

    @pytest.mark.anyio
    async def test_persistence(self, make_store: StoreFactory) -> None:
        if not self.persistent:
            pytest.skip("the store keeps nothing after it is closed")
        first = make_store()
        run = make_run()
        await first.create_run(run)
        await first.save_task(TaskRecord(run_id="run-1", task_id="a", state="succeeded", output="x"))
        await first.record_call(make_call())
        await first.record_tool_call(ToolCallRecord(run_id="run-1", name="t", cost=Decimal("0.01")))
        await first.aclose()
        second = make_store()
        try:
            assert await second.get_run("run-1") == run
            assert [t.output for t in await second.get_tasks("run-1")] == ["x"]
            assert await second.get_calls("run-1") == [make_call()]
            assert [c.cost for c in await second.get_tool_calls("run-1")] == [Decimal("0.01")]
        finally:
            await second.aclose()

    @pytest.mark.anyio
    async def test_checkpoint_is_visible_to_another_store_at_once(self, stores: StoreFactory) -> None:
        if not self.persistent:
            pytest.skip("stores are independent")
        one, two = stores(), stores()
        await one.create_run(make_run())
        await one.save_task(TaskRecord(run_id="run-1", task_id="a", state="succeeded"))
        assert [t.state for t in await two.get_tasks("run-1")] == ["succeeded"]


__all__ = ["StoreConformance", "StoreFactory", "make_call", "make_run"]
