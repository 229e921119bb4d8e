"""MCP servers' tools as taskloom tools: real servers over stdio and streamable HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import taskloom_mcp
from taskloom.kernel import load_kernel
from taskloom.types import ToolCall

from .conftest import lab_server, time_server

pytestmark = pytest.mark.anyio


def call(tool: str, /, **arguments: object) -> ToolCall:
    return ToolCall(id="c1", name=tool, arguments=dict(arguments))


async def test_time_server_tools_have_their_schemas(make_kernel) -> None:
    kernel = make_kernel({"time": time_server()})
    assert {"time.get_current_time", "time.convert_time"} <= set(kernel.tools.names())
    spec = kernel.tools.get("time.get_current_time").spec
    assert spec.parameters["required"] == ["timezone"]
    assert "timezone" in spec.parameters["properties"]
    assert kernel.tools.get("time.get_current_time").plugin == "mcp"

    result = await kernel.tools.call(call("time.get_current_time", timezone="UTC"))
    assert not result.is_error, result.content
    assert result.value["timezone"] == "UTC"  # structured content becomes the value
    assert json.loads(result.content)["timezone"] == "UTC"


async def test_git_server_on_a_temporary_repository(make_kernel, git_repo: Path) -> None:
    kernel = make_kernel(
        {
            "git": {
                "command": sys.executable,
                "args": ["-m", "mcp_server_git", "--repository", str(git_repo)],
                "tools": ["git_status", "git_log"],
            }
        }
    )
    # The allowlist keeps only these two of the server's tools.
    assert sorted(n for n in kernel.tools.names() if n.startswith("git.")) == ["git.git_log", "git.git_status"]
    status = await kernel.tools.call(call("git.git_status", repo_path=str(git_repo)))
    assert not status.is_error, status.content
    assert "notes.txt" in status.content
    log = await kernel.tools.call(call("git.git_log", repo_path=str(git_repo)))
    assert "first commit: add README" in log.content
    # A path outside the allowed repository is the server's own error, seen as a tool error.
    outside = await kernel.tools.call(call("git.git_status", repo_path=str(git_repo.parent)))
    assert outside.is_error and "outside" in outside.content


async def test_streamable_http_server_with_a_secret_header(http_server: str, make_kernel, monkeypatch) -> None:
    monkeypatch.setenv("LAB_TOKEN", "s3cret-value")
    kernel = make_kernel({"web": {"url": http_server, "headers": {"X-Lab-Token": {"env": "LAB_TOKEN"}}}})
    assert "web.echo" in kernel.tools
    echoed = await kernel.tools.call(call("web.echo", text="over http"))
    assert echoed.content == "over http" and not echoed.is_error
    header = await kernel.tools.call(call("web.header", name="X-Lab-Token"))
    assert header.content == "s3cret-value"
    # The secret is not in the effective configuration shown to users.
    assert "s3cret-value" not in json.dumps(kernel.settings.to_dict())


async def test_a_failing_tool_is_an_error_the_model_sees(make_kernel) -> None:
    kernel = make_kernel({"lab": lab_server()})
    result = await kernel.tools.call(call("lab.explode", reason="no fuel"))
    assert result.is_error
    assert result.content.startswith("error: ") and "explode: no fuel" in result.content


async def test_images_are_described_and_kept(make_kernel) -> None:
    kernel = make_kernel({"lab": lab_server()})
    result = await kernel.tools.call(call("lab.picture"))
    assert not result.is_error
    assert "[image image/png" in result.content
    assert result.value["attachments"][0]["mime_type"] == "image/png"


async def test_arguments_failing_the_schema_never_reach_the_server(make_kernel) -> None:
    kernel = make_kernel({"time": time_server()})
    missing = await kernel.tools.call(call("time.get_current_time"))
    assert missing.is_error
    assert (
        missing.content
        == "error: invalid arguments for time.get_current_time: arguments: 'timezone' is a required property"
    )
    wrong = await kernel.tools.call(call("time.get_current_time", timezone=42))
    assert wrong.is_error and "timezone: 42 is not of type 'string'" in wrong.content


async def test_a_call_past_its_timeout_is_a_clear_error(make_kernel) -> None:
    kernel = make_kernel({"lab": lab_server(call_timeout=0.5)})
    result = await kernel.tools.call(call("lab.slow", seconds=5))
    assert result.is_error
    assert "'slow' on MCP server 'lab' did not answer within 0.5 s" in result.content
    assert "call_timeout" in result.content
    again = await kernel.tools.call(call("lab.echo", text="still here"))
    assert again.content == "still here"


async def test_listing_cache_makes_the_server_start_on_first_call(make_kernel) -> None:
    first = make_kernel({"time": time_server()})
    assert taskloom_mcp.bridge_of(first).connections["time"].status == "ready"  # cold cache: listed at assembly
    taskloom_mcp.close(first)

    second = make_kernel({"time": time_server()})
    conn = taskloom_mcp.bridge_of(second).connections["time"]
    assert conn.status == "stopped"  # warm cache: nothing started at assembly
    assert "time.get_current_time" in second.tools
    result = await second.tools.call(call("time.get_current_time", timezone="Europe/Paris"))
    assert not result.is_error and result.value["timezone"] == "Europe/Paris"
    assert conn.status == "ready"


async def test_allowlisted_tools_the_server_lacks_are_reported(make_kernel) -> None:
    kernel = make_kernel({"time": time_server(tools=["get_current_time", "get_moon_phase"])})
    assert [n for n in kernel.tools.names() if n.startswith("time.")] == ["time.get_current_time"]
    row = taskloom_mcp.bridge_of(kernel).status(connect=False)[0]
    assert row["missing"] == ["get_moon_phase"]


def test_config_errors_name_the_server_and_the_fix() -> None:
    def reason(servers: dict[str, object]) -> str:
        kernel = load_kernel({"taskloom": {"plugins": ["mcp"]}, "plugins": {"mcp": {"servers": servers}}})
        info = kernel.plugins.infos["mcp"]
        assert info.status == "failed"
        return info.reason or ""

    both = reason({"both": {"command": "x", "url": "http://127.0.0.1:1/mcp"}})
    assert "[plugins.mcp.servers] key 'both'" in both and "either command (a stdio server) or url" in both
    typo = reason({"t": {"comand": "x"}})
    assert "[plugins.mcp.servers.t] unknown key 'comand'" in typo
    dotted = reason({"my.server": {"command": "x"}})
    assert "server name 'my.server' must be 1-32 letters" in dotted


def test_no_servers_configured_costs_nothing() -> None:
    kernel = load_kernel({"taskloom": {"plugins": ["mcp"]}})
    assert taskloom_mcp.bridge_of(kernel) is None
    assert not [t for t in kernel.tools if t.plugin == "mcp"]


QUICK_SCHEMAS = [
    {"type": "object", "properties": {"timezone": {"type": "string", "title": "Timezone"}}, "required": ["timezone"]},
    {"type": "object", "properties": {"n": {"type": "integer"}, "x": {"type": ["number", "null"]}}},
    {
        "type": "object",
        "properties": {"flag": {"type": "boolean"}, "tags": {"type": "array"}},
        "additionalProperties": False,
    },
    {"type": "object", "properties": {"any": {}, "o": {"type": "object"}}, "required": ["any"]},
]
QUICK_VALUES = [
    {},
    {"timezone": "UTC"},
    {"timezone": 42},
    {"timezone": None},
    {"n": 1, "x": 2.5},
    {"n": True},
    {"n": 1.0},
    {"n": 1.5, "x": None},
    {"x": "no"},
    {"flag": 0},
    {"flag": False, "tags": []},
    {"flag": True, "other": 1},
    {"tags": {}},
    {"any": None, "o": {"a": 1}},
    {"any": 1, "o": []},
]


@pytest.mark.parametrize("schema", QUICK_SCHEMAS)
def test_the_quick_argument_check_agrees_with_jsonschema(schema: dict) -> None:
    import jsonschema
    from taskloom_mcp.results import ArgumentChecker

    checker = ArgumentChecker(schema)
    assert checker._quick is not None, "these schemas are meant to take the quick path"
    validator = jsonschema.Draft202012Validator(schema)
    for value in QUICK_VALUES:
        expected = sorted(e.message for e in validator.iter_errors(value))
        assert bool(checker.problems(value)) == bool(expected), (value, expected)
        if checker._quick(value):
            assert not expected, f"the quick check passed {value!r}, which jsonschema rejects: {expected}"


def test_other_schemas_go_to_jsonschema() -> None:
    from taskloom_mcp.results import ArgumentChecker

    pattern = ArgumentChecker({"type": "object", "properties": {"s": {"type": "string", "pattern": "^a"}}})
    assert pattern._quick is None
    assert pattern.problems({"s": "b"}) == ["s: 'b' does not match '^a'"]
    assert pattern.problems({"s": "abc"}) == []
    nested = ArgumentChecker({"type": "object", "$defs": {"x": {"type": "string"}}, "properties": {}})
    assert nested._quick is None


async def test_a_call_made_on_the_hub_loop_takes_no_hop(make_kernel, monkeypatch) -> None:
    import asyncio

    kernel = make_kernel({"time": time_server()})
    bridge = taskloom_mcp.bridge_of(kernel)
    bridged = bridge.tools["time.get_current_time"]

    async def no_hop(coro):  # a hop from the hub to itself would be wasted work
        coro.close()
        raise AssertionError("Hub.call was used from the hub loop")

    monkeypatch.setattr(bridge.hub, "call", no_hop)
    future = bridge.hub.submit(bridge.call(bridged, {"timezone": "UTC"}))
    result = await asyncio.wrap_future(future)
    assert not result.is_error, result.content
    assert json.loads(result.content)["timezone"] == "UTC"
