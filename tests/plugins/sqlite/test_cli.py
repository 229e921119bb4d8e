"""``taskloom runs``, ``runs show``, ``cost`` and ``cache``: on the SQLite store, on the
memory store (any RunStore works), and the billing invariant: totals equal the sum of rows."""

from __future__ import annotations

import csv
import io
import json
import random
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from taskloom.cli import main
from taskloom.records import RunRecord, TaskRecord, ToolCallRecord
from taskloom.testing.store_conformance import make_call
from taskloom.types import Cost, Usage
from taskloom_sqlite.report import build_cost_report
from taskloom_sqlite.store import SqliteStore

from .conftest import write_toml

AGENTS = ["writer", "critic", None]
MODELS = [("gpt", "gpt-4o-mini"), ("big", "gpt-4o"), ("local", "local")]


def _populate(path: Path, seed: int = 3) -> dict[str, Any]:
    """A finished run with many sub-cent calls (where naive rounding goes wrong) and tools."""
    rng = random.Random(seed)
    expected: dict[str, Any] = {"tokens": 0, "cost": Decimal(0)}

    async def main() -> None:
        store = SqliteStore(path)
        spec = {
            "tasks": [
                {"id": "plan"},
                {"id": "a", "needs": ["plan"]},
                {"id": "b", "needs": ["plan"]},
                {"id": "join", "needs": ["a", "b"]},
            ]
        }
        run = RunRecord(
            id="r-1",
            workflow="demo",
            started_at=time.time() - 30,
            finished_at=time.time(),
            status="succeeded",
            spec=spec,
        )
        await store.create_run(run)
        await store.create_run(RunRecord(id="r-0", workflow="older", started_at=time.time() - 3600))
        for tid in ("plan", "a", "b", "join"):
            await store.save_task(
                TaskRecord(
                    run_id="r-1",
                    task_id=tid,
                    state="succeeded",
                    attempts=1 + (tid == "b"),
                    agent="writer",
                    started_at=1.0,
                    finished_at=2.5,
                )
            )
        await store.save_task(TaskRecord(run_id="r-1", task_id="undo-b", state="compensated", compensation_of="b"))
        for n in range(120):
            alias, model = rng.choice(MODELS)
            total = Decimal(rng.randint(1, 9999)) / Decimal(10**7)  # $0.0000001 .. $0.0009999
            usage = Usage(input_tokens=rng.randint(1, 500), output_tokens=rng.randint(1, 200))
            call = make_call(
                run_id="r-1",
                task_id=rng.choice(["plan", "a", "b", "join", None]),
                n=n,
                agent=rng.choice(AGENTS),
                alias=alias,
                model=model,
                usage=usage,
                cost=Cost(total=total),
            )
            await store.record_call(call)
            expected["tokens"] += usage.total_tokens
            expected["cost"] += total
        for n in range(15):
            price = Decimal("0.005") if n % 2 else Decimal("0.0015")
            await store.record_tool_call(
                ToolCallRecord(
                    run_id="r-1",
                    task_id=rng.choice(["a", "b"]),
                    agent="writer",
                    name=rng.choice(["web.search", "add"]),
                    cost=price,
                )
            )
            expected["cost"] += price
        await store.record_call(make_call(run_id="r-1", task_id="a", n=999, cost=Cost.unpriced(), usage=Usage()))
        await store.aclose()

    anyio.run(main)
    return expected


@pytest.fixture
def cli(tmp_path: Path, config: dict[str, Any]) -> Any:
    path = write_toml(tmp_path / "taskloom.toml", config)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["--config", str(path), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output + (result.stderr if result.stderr_bytes else "")
        return result.output

    return invoke


def test_runs_lists_newest_first(cli: Any, tmp_path: Path) -> None:
    assert "no runs in the run store" in cli("runs")
    expected = _populate(tmp_path / "runs.sqlite")
    text = cli("runs")
    assert text.index("r-1") < text.index("r-0") and "succeeded" in text and "demo" in text
    rows = json.loads(cli("runs", "--json"))
    assert [r["id"] for r in rows] == ["r-1", "r-0"]
    first = rows[0]
    assert first["tokens"] == expected["tokens"] and Decimal(first["cost"]) == expected["cost"]
    assert first["unpriced_calls"] == 1 and 29 < first["duration_s"] < 31
    assert set(first) >= {"id", "workflow", "status", "started_at", "duration_s", "tokens", "cost"}


def test_runs_show_is_a_task_tree(cli: Any, tmp_path: Path) -> None:
    _populate(tmp_path / "runs.sqlite")
    data = json.loads(cli("runs", "show", "r-1", "--json"))
    (plan,) = data["tasks"]
    assert plan["task_id"] == "plan"
    assert [c["task_id"] for c in plan["children"]] == ["a", "b"]
    a, b = plan["children"]
    assert [c["task_id"] for c in a["children"]] == ["join"] and a["children"][0]["needs"] == ["a", "b"]
    assert [c["task_id"] for c in b["children"]] == ["undo-b"] and b["attempts"] == 2
    assert plan["duration_s"] == 1.5
    text = cli("runs", "show", "r-1")
    for word in ("plan", "join", "undo-b", "attempts 2", "succeeded", "compensated"):
        assert word in text


def test_unknown_run_is_a_clear_error(cli: Any, tmp_path: Path) -> None:
    _populate(tmp_path / "runs.sqlite")
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(tmp_path / "taskloom.toml"), "cost", "nope"])
    assert result.exit_code == 2
    assert "no run 'nope'" in result.output and "r-1" in result.output


@pytest.mark.parametrize("by", ["task", "agent", "model", "tool"])
def test_cost_totals_equal_the_sum_of_rows(cli: Any, tmp_path: Path, by: str) -> None:
    expected = _populate(tmp_path / "runs.sqlite")
    for places in ("2", "6"):
        data = json.loads(cli("cost", "r-1", "--by", by, "--format", "json", "--places", places))
        rows = data["rows"]
        assert Decimal(data["total"]["cost"]) == sum(Decimal(r["cost"]) for r in rows)
        assert Decimal(data["total"]["cost_exact"]) == expected["cost"]
        assert data["total"]["model_calls"] == 121 and data["total"]["tool_calls"] == 15
        assert data["total"]["unpriced_calls"] == 1

        table = list(csv.reader(io.StringIO(cli("cost", "r-1", "--by", by, "--format", "csv", "--places", places))))
        assert table[0][0] == by and table[-1][0] == "TOTAL"
        body = table[1:-1]
        assert Decimal(table[-1][5]) == sum(Decimal(r[5]) for r in body)
        assert int(table[-1][3]) + int(table[-1][4]) == expected["tokens"]

    text = cli("cost", "r-1", "--by", by, "--places", "2")
    lines = [line.strip() for line in text.splitlines()]
    shown = [
        next(line for line in lines if line.startswith(row["key"] + " ")).split()[-1].rstrip("+?")
        for row in json.loads(cli("cost", "r-1", "--by", by, "--format", "json", "--places", "2"))["rows"]
    ]
    total = next(line for line in lines if line.startswith("TOTAL")).split()[-1].rstrip("+?")
    assert Decimal(total) == sum(Decimal(x) for x in shown)


def test_rounding_to_cents_keeps_the_invariant_where_naive_rounding_breaks() -> None:
    run = RunRecord(id="r", workflow="w", started_at=0)
    calls = [make_call(run_id="r", task_id=f"t{i}", n=i, cost=Cost(total=Decimal("0.004"))) for i in range(3)]
    report = build_cost_report(run, calls, [], "task", places=2)
    assert [r.cost for r in report.rows] == [Decimal("0.00")] * 3
    assert report.total == Decimal("0.00") and report.total_exact == Decimal("0.012")
    report = build_cost_report(
        run, [*calls, make_call(run_id="r", task_id="t3", cost=Cost(total=Decimal("0.005")))], [], "task", places=2
    )
    assert Decimal("0.00") in [r.cost for r in report.rows]  # 0.005 rounds half to even: 0.00
    assert report.total == sum(r.cost for r in report.rows)


def test_cost_report_covers_every_call_once() -> None:
    rng = random.Random(11)
    run = RunRecord(id="r", workflow="w", started_at=0)
    calls = [
        make_call(
            run_id="r",
            task_id=rng.choice(["a", "b", None]),
            agent=rng.choice(AGENTS),
            n=i,
            cost=Cost(total=Decimal(rng.randint(0, 10**6)) / 10**9),
        )
        for i in range(300)
    ]
    tools = [ToolCallRecord(run_id="r", name=rng.choice(["x", "y"]), cost=Decimal("0.001")) for _ in range(20)]
    exact = sum((c.cost.total for c in calls), Decimal(0)) + Decimal("0.020")
    for by in ("task", "agent", "model", "tool"):
        report = build_cost_report(run, calls, tools, by, places=4)  # type: ignore[arg-type]
        assert report.total_exact == exact
        assert sum(r.totals.model_calls for r in report.rows) == 300
        assert sum(r.totals.tool_calls for r in report.rows) == 20
        assert abs(report.total - exact) <= Decimal("0.00005") * len(report.rows)


def test_commands_work_on_the_memory_store(tmp_path: Path, config: dict[str, Any]) -> None:
    """The commands use only the RunStore protocol; with a memory store a fresh process has no runs."""
    config["taskloom"]["store"] = "memory"
    path = write_toml(tmp_path / "memory.toml", config)
    result = CliRunner().invoke(main, ["--config", str(path), "runs", "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == []


def test_cache_stats_and_clear(cli: Any, tmp_path: Path) -> None:
    from taskloom_sqlite.cache import SqliteCache

    async def fill() -> None:
        cache = SqliteCache(tmp_path / "cache.sqlite")
        for key in ("gpt:1", "gpt:2", "local:1"):
            await cache.set(key, b"v")
        await cache.get("gpt:1")
        await cache.get("nope")
        await cache.aclose()

    anyio.run(fill)
    stats = json.loads(cli("cache", "stats", "--json"))
    assert (stats["entries"], stats["hits"], stats["misses"]) == (3, 1, 1)
    assert stats["hit_rate"] == 0.5 and stats["path"] == str(tmp_path / "cache.sqlite")
    assert "entries" in cli("cache", "stats")
    assert "removed 2 cached response(s) with prefix 'gpt:'" in cli("cache", "clear", "--prefix", "gpt:")
    assert json.loads(cli("cache", "stats", "--json"))["entries"] == 1
    assert "removed 1" in cli("cache", "clear")
