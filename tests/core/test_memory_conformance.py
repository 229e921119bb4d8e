"""The built-in memory cache and memory store pass the conformance suites."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from taskloom.builtin.memory_cache import MemoryCache
from taskloom.builtin.memory_store import MemoryStore
from taskloom.testing.cache_conformance import CacheConformance, CacheFactory
from taskloom.testing.store_conformance import StoreConformance, StoreFactory


class TestMemoryCache(CacheConformance):
    ttl_slack = 0.05

    @pytest.fixture
    def make_cache(self) -> CacheFactory:
        def make(max_entries: int | None = None, max_bytes: int | None = None, **_: Any) -> MemoryCache:
            return MemoryCache(max_entries=max_entries or 10_000, max_bytes=max_bytes or 64 * 1024 * 1024)

        return make


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def make_store(self) -> StoreFactory:
        return MemoryStore


@pytest.mark.anyio
async def test_checkpoints_come_back_equal_field_for_field() -> None:
    # Checkpoints are kept packed as tuples; read back they must be equal records with the
    # same set fields, whatever order the record's fields were set in, and independent of
    # the caller's record (a structured output is copied, not shared).
    from decimal import Decimal

    from taskloom.records import TaskRecord
    from taskloom.types import Cost, Usage, build

    store = MemoryStore()
    output = {"items": [1, 2], "label": "x"}
    built = build(
        TaskRecord,
        **dict(
            reversed(
                {
                    "run_id": "r", "task_id": "a", "state": "succeeded", "attempts": 2, "agent": "w", "prompt": "p",
                    "output": output, "error": None, "started_at": 1.0, "finished_at": 2.0,
                    "usage": Usage(input_tokens=3), "cost": Cost(total=Decimal("5E+1"), source="prices"),
                    "compensation_of": None,
                }.items()
            )
        ),
    )  # fmt: skip
    partial = TaskRecord(run_id="r", task_id="b", output=("not", "json"))
    for record in (built, partial):
        await store.save_task(record)
    output["items"].append(3)
    got = {r.task_id: r for r in await store.get_tasks("r")}
    assert got["a"].output == {"items": [1, 2], "label": "x"}
    for record in (built, partial):
        back = got[record.task_id]
        if record is built:
            record.output = {"items": [1, 2], "label": "x"}
        assert back == record
        assert back.model_fields_set == record.model_fields_set
        assert back.usage.model_fields_set == record.usage.model_fields_set
        assert str(back.cost.total) == str(record.cost.total)
    assert got["b"].output == ("not", "json") and got["b"].model_fields_set == {"run_id", "task_id", "output"}


@pytest.mark.anyio
async def test_a_run_update_keeps_the_spec_pickled_at_creation_and_takes_a_new_one() -> None:
    from taskloom.builtin.memory_store import _deserialise
    from taskloom.records import RunRecord

    store = MemoryStore()
    spec = {"workflow": {"name": "w"}, "tasks": [{"id": "a"}]}
    run = RunRecord(id="r", workflow="w", started_at=1.0, spec=spec, inputs={"n": 1})
    await store.create_run(run)
    blob = store._runs["r"][1]["spec"]
    run.status = "succeeded"
    await store.update_run(run)
    assert store._runs["r"][1]["spec"] is blob  # the same spec object: its pickle is kept
    assert _deserialise(blob) == spec
    got = await store.get_run("r")
    assert got is not None and got.status == "succeeded" and got.spec == spec and got.spec is not spec
    run.spec = {"workflow": {"name": "w"}, "tasks": [{"id": "a"}, {"id": "b"}]}
    run.inputs = {"n": 2}
    await store.update_run(run)
    got = await store.get_run("r")
    assert got is not None and [t["id"] for t in got.spec["tasks"]] == ["a", "b"] and got.inputs == {"n": 2}


class _Label(str):
    """A str subclass: marshal cannot restore it, so the store must pickle it."""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("spec", "marshalled"),
    [
        ({"workflow": {"name": "w"}, "tasks": [{"id": "a", "needs": [], "estimate": 0.25, "retries": 0}]}, True),
        ({"workflow": {"name": "w"}, "tasks": [{"id": _Label("a")}]}, False),
        ({"workflow": {"name": "w"}, "budget": {"usd": Decimal("0.50")}}, False),
    ],
)
async def test_a_runs_spec_comes_back_exact_whichever_way_it_is_kept(spec: dict[str, Any], marshalled: bool) -> None:
    # Plain data is kept with marshal, anything else with pickle; both give back equal
    # values of the same types, and a copy, never the caller's object.
    from taskloom.records import RunRecord

    store = MemoryStore()
    await store.create_run(RunRecord(id="r", workflow="w", started_at=1.0, spec=spec))
    assert store._runs["r"][1]["spec"][0] is marshalled
    got = await store.get_run("r")
    assert got is not None and got.spec == spec and got.spec is not spec
    assert repr(got.spec) == repr(spec) and type(next(iter(got.spec.values()))) is dict

    def types(value: Any) -> list[type]:
        if isinstance(value, dict):
            return [type(value), *[t for v in value.values() for t in types(v)]]
        if isinstance(value, list):
            return [type(value), *[t for v in value for t in types(v)]]
        return [type(value)]

    assert types(got.spec) == types(spec)
