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
