"""Tool schemas from signatures and docstrings."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel
from taskloom.tools import Tool, ToolRegistry

pytestmark = pytest.mark.anyio


class Point(BaseModel):
    x: float
    y: float


def search(query: str, limit: int = 5, mode: Literal["web", "news"] = "web", near: Point | None = None) -> list[str]:
    """Search the web.

    Args:
        query: What to look for.
        limit: How many results,
            at most.
    """
    return [query] * limit


def test_schema_from_type_hints_and_google_docstring() -> None:
    spec = Tool.from_function(search).spec
    assert spec.description == "Search the web."
    props = spec.parameters["properties"]
    assert props["query"] == {"description": "What to look for.", "title": "Query", "type": "string"}
    assert props["limit"]["default"] == 5 and props["limit"]["description"] == "How many results, at most."
    assert props["mode"]["enum"] == ["web", "news"]
    assert spec.parameters["required"] == ["query"]
    assert "Point" in str(spec.parameters)


def test_sphinx_docstring() -> None:
    def f(a: int) -> int:
        """Double it.

        :param a: the number
        """
        return a * 2

    assert Tool.from_function(f).spec.parameters["properties"]["a"]["description"] == "the number"


async def test_sync_tools_run_in_a_thread_and_results_become_text() -> None:
    result = await Tool.from_function(search).run({"query": "q", "limit": 2})
    assert not result.is_error and result.content == '["q", "q"]' and result.value == ["q", "q"]


def test_bad_names_and_duplicates() -> None:
    with pytest.raises(ValueError, match="must be 1-64 letters"):
        Tool.from_function(search, name="has space")
    reg = ToolRegistry()
    reg.register(search, plugin="a")
    with pytest.raises(ValueError, match="'search' is already registered by a"):
        reg.register(search, plugin="b")


async def test_schema_tools_pass_arguments_through() -> None:
    async def remote(**kwargs: object) -> str:
        return f"got {sorted(kwargs)}"

    tool = Tool.from_schema("srv.echo", "Echo", {"type": "object", "properties": {"z": {"type": "string"}}}, remote)
    assert tool.spec.parameters["properties"]["z"]["type"] == "string"
    assert (await tool.run({"z": "1", "a": 2})).content == "got ['a', 'z']"


async def test_results_reach_the_model_as_text() -> None:
    from taskloom.tools import ToolResult

    async def count(n: int) -> int:
        return n + 1

    async def flags() -> dict[str, object]:
        return {"ok": True, "name": "café", "none": None}

    async def own_result() -> ToolResult:
        return ToolResult(content=[1, 2], is_error=False)  # type: ignore[arg-type]

    assert (await Tool.from_function(count).run({"n": 41})).content == "42"
    assert (await Tool.from_function(flags).run({})).content == '{"ok": true, "name": "café", "none": null}'
    assert (await Tool.from_function(own_result).run({})).content == "[1, 2]"


async def test_an_arguments_model_that_keeps_extra_keys_passes_them_on() -> None:
    from pydantic import ConfigDict, create_model

    seen: list[dict[str, object]] = []

    async def echo(**kwargs: object) -> str:
        seen.append(kwargs)
        return "ok"

    model = create_model("echo_args", __config__=ConfigDict(extra="allow"), a=(int, ...))
    tool = Tool("echo", "", echo, model, is_async=True)
    assert (await tool.run({"a": "3", "b": 4})).content == "ok"
    assert seen == [{"a": 3, "b": 4}]


def test_replace_copies_with_changes_like_model_copy() -> None:
    from taskloom.types import RequestMeta, replace

    meta = RequestMeta(run_id="r", custom="kept")  # type: ignore[call-arg]
    changed = replace(meta, agent="a", depth=2)
    assert changed == meta.model_copy(update={"agent": "a", "depth": 2})
    assert changed.model_extra == {"custom": "kept"} and changed.model_extra is not meta.model_extra
    assert meta.agent is None and meta.depth == 0
    assert changed.model_fields_set == {"run_id", "custom", "agent", "depth"}
    with pytest.raises(TypeError, match="no field named colour"):
        replace(meta, colour="red")
