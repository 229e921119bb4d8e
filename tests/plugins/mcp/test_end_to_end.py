"""An agent, a workflow and the CLI using real MCP servers; ``taskloom mcp serve`` driven by
the SDK's own stdio client."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from taskloom.agent import Agent, run_agent
from taskloom.cli import main
from taskloom.workflow import run_workflow

from .conftest import HERE, kernel_config, lab_server, time_server

pytestmark = pytest.mark.anyio

BOT = {
    "bot": {
        "provider": "scripted",
        "responses": [
            {"tool": "time.get_current_time", "arguments": {"timezone": "Asia/Tokyo"}},
            "It is late in Tokyo.",
        ],
    }
}


async def test_an_agent_calls_a_real_mcp_server(make_kernel) -> None:
    kernel = make_kernel({"time": time_server()}, models=BOT)
    agent = Agent(name="clock", model="bot", tools=["time.get_current_time"])
    result = await run_agent(kernel, agent, "What time is it in Tokyo?")
    assert result.ok, result.detail
    assert result.text == "It is late in Tokyo."
    [logged] = result.tool_calls
    assert logged.name == "time.get_current_time" and not logged.is_error
    assert json.loads(logged.result)["timezone"] == "Asia/Tokyo"
    # The model was sent the tool's schema and then the server's answer.
    first, second = kernel.provider("bot").requests
    assert first.tools[0].name == "time.get_current_time"
    assert first.tools[0].parameters["required"] == ["timezone"]
    assert "Asia/Tokyo" in second.messages[-1].text


async def test_a_workflow_agent_uses_mcp_tools(make_kernel, tmp_path: Path) -> None:
    flow = tmp_path / "clock.toml"
    flow.write_text(
        """
[workflow]
name = "clock"
[workflow.inputs]
zone = { description = "IANA timezone", required = true }

[agents.teller]
model = "bot"
tools = ["time.get_current_time"]

[[tasks]]
id = "tell"
agent = "teller"
prompt = "What time is it in {{ inputs.zone }}?"
"""
    )
    kernel = make_kernel({"time": time_server()}, models=BOT)
    result = await run_workflow(kernel, flow, {"zone": "Asia/Tokyo"})
    assert result.ok, result.to_dict()
    assert result.output("tell") == "It is late in Tokyo."
    tool_message = kernel.provider("bot").requests[-1].messages[-1]
    assert tool_message.role == "tool" and '"timezone": "Asia/Tokyo"' in tool_message.text


def write_config(
    tmp_path: Path,
    servers: dict[str, object],
    models: dict[str, object] | None = None,
    extra_plugins: tuple[str, ...] = (),
) -> Path:
    data = kernel_config(servers, models)
    data["taskloom"]["plugins"] = [*data["taskloom"]["plugins"], *extra_plugins]
    toml = tmp_path / "taskloom.toml"
    toml.write_text(_to_toml(data))
    return toml


def _to_toml(data: dict[str, object], prefix: str = "") -> str:
    scalars, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            scalars.append(f"{json.dumps(key)} = {json.dumps(value)}")
    out = ""
    if prefix and scalars:
        out += f"[{prefix}]\n"
    out += "".join(s + "\n" for s in scalars)
    for key, value in tables:
        name = f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)
        out += _to_toml(value, name)
    return out


def test_cli_list_and_call(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"time": time_server(), "ghost": {"command": "no-such-mcp-server-xyz"}})
    runner = CliRunner()
    listed = runner.invoke(main, ["--config", str(config), "mcp", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["server"]: r for r in json.loads(listed.stdout)}
    assert rows["time"]["status"] == "ready"
    assert {t["name"] for t in rows["time"]["tools"]} == {"time.get_current_time", "time.convert_time"}
    assert rows["ghost"]["status"] == "failed" and "was not found" in rows["ghost"]["error"]

    text = runner.invoke(main, ["--config", str(config), "mcp", "list"])
    assert "time  [stdio]" in text.stdout and "ghost" in text.stdout and "failed:" in text.stdout

    called = runner.invoke(
        main, ["--config", str(config), "mcp", "call", "time.get_current_time", "--args", '{"timezone": "UTC"}']
    )
    assert called.exit_code == 0, called.output
    assert json.loads(called.stdout)["timezone"] == "UTC"

    bad = runner.invoke(main, ["--config", str(config), "mcp", "call", "time.get_current_time", "--args", "{}"])
    assert bad.exit_code == 1
    assert "'timezone' is a required property" in bad.stderr

    ghost = runner.invoke(main, ["--config", str(config), "mcp", "call", "ghost.anything"])
    assert (
        ghost.exit_code == 1 and "ghost.anything is not available" in ghost.stderr and "was not found" in ghost.stderr
    )

    typo = runner.invoke(main, ["--config", str(config), "mcp", "call", "time.get_curent_time", "--args", "{}"])
    assert typo.exit_code == 2 and "did you mean 'time.get_current_time'" in typo.stderr


async def test_mcp_serve_driven_by_the_sdk_client(tmp_path: Path) -> None:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "greet.toml").write_text(
        """
[workflow]
name = "greet"
description = "Greet someone."
[workflow.inputs]
who = { description = "Who to greet", required = true }
punctuation = "!"

[agents.greeter]
model = "echo"

[[tasks]]
id = "hello"
agent = "greeter"
prompt = "Hello, {{ inputs.who }}{{ inputs.punctuation }}"
"""
    )
    config = write_config(
        tmp_path, {"lab": lab_server()}, {"echo": {"provider": "scripted", "default": "{prompt}"}}, ("arith",)
    )
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            str(HERE / "servers" / "serve_with_tools.py"),
            "--config",
            str(config),
            "mcp",
            "serve",
            "--workflows",
            str(flows),
        ],
        env={k: v for k, v in os.environ.items() if k.startswith(("XDG_", "TIKTOKEN", "PYTHON"))},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        # Taskloom's own tools and the workflow; tools bridged from MCP are not re-exported.
        assert set(tools) == {"add", "divide", "greet"}
        assert tools["add"].input_schema["required"] == ["a", "b"]
        assert tools["greet"].input_schema["required"] == ["who"]
        assert tools["greet"].input_schema["properties"]["punctuation"]["default"] == "!"

        added = await session.call_tool("add", {"a": 2, "b": 3})
        assert not added.is_error and added.content[0].text == "5"
        divided = await session.call_tool("divide", {"a": 1, "b": 0})
        assert divided.is_error and "ZeroDivisionError" in divided.content[0].text
        invalid = await session.call_tool("add", {"a": "two"})
        assert invalid.is_error and "invalid arguments for add" in invalid.content[0].text

        greeted = await session.call_tool("greet", {"who": "Ada"})
        assert not greeted.is_error, greeted.content
        assert greeted.content[0].text == "Hello, Ada!"
        assert greeted.structured_content["status"] == "succeeded"
        missing = await session.call_tool("greet", {})
        assert missing.is_error and "input 'who' is required" in missing.content[0].text
