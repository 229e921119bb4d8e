"""The plugin in a kernel: tools registered from config, the refusal path, policy, and an
agent (and a workflow) that call the python tool end to end with a scripted model."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from taskloom import hookimpl, load_kernel
from taskloom.agent import Agent, run_agent
from taskloom.testing import register_plugin
from taskloom.types import Denial
from taskloom.workflow.runner import run_workflow
from taskloom.workflow.spec import parse_workflow
from taskloom_sandbox import Sandbox, SandboxConfig, SandboxResult, SandboxUnavailable

pytestmark = pytest.mark.anyio


def kernel(sandbox: dict[str, Any] | None = None, responses: list[Any] | None = None) -> Any:
    return load_kernel(
        {
            "taskloom": {
                "plugins": ["sandbox", "scripted", "memory-store", "memory-cache", "local-executor"],
                "store": "memory",
                "default_model": "bot",
            },
            "models": {"bot": {"provider": "scripted", "responses": responses or []}},
            "plugins": {"sandbox": sandbox or {"limits": {"timeout_s": 5}}},
        }
    )


def test_tools_are_registered_per_enabled_language() -> None:
    assert {"python", "bash"} <= set(kernel().tools.names())
    only_python = kernel({"languages": ["python"]}).tools.names()
    assert "python" in only_python and "bash" not in only_python
    spec = kernel().tools.get("python").spec
    assert set(spec.parameters["properties"]) == {"code", "files", "limits", "return_files"}
    assert spec.parameters["required"] == ["code"]
    assert "no network" in spec.description and "5 s wall clock" in spec.description


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"limits": {"timeout_s": -3}}, "[plugins.sandbox.limits] key 'timeout_s': input should be greater than 0"),
        ({"languages": ["cobol"]}, "[plugins.sandbox.languages] key '0': input should be 'python' or 'bash'"),
        ({"isolaton": "none"}, "unknown key 'isolaton' (did you mean 'isolation'?)"),
    ],
)
def test_nonsense_config_fails_the_plugin_with_the_reason(config: dict[str, Any], message: str) -> None:
    k = kernel(config)
    info = k.plugins.infos["sandbox"]
    assert info.status == "failed" and message in (info.reason or ""), info.reason
    assert "python" not in k.tools.names()


# ---------------------------------------------------------------- refusal


async def test_missing_bwrap_refuses_with_a_clear_error() -> None:
    sandbox = Sandbox(SandboxConfig(bwrap_path="/nonexistent/bwrap"))
    with pytest.raises(SandboxUnavailable) as info:
        await sandbox.run("python", "print(1)")
    message = str(info.value)
    assert "bubblewrap ('/nonexistent/bwrap') is not installed" in message
    assert "apt-get install bubblewrap" in message and 'isolation = "none"' in message
    with pytest.raises(SandboxUnavailable):  # remembered, and still refused
        await sandbox.run("bash", "echo 1")


async def test_missing_bwrap_refusal_reaches_the_model_as_a_tool_error() -> None:
    tool = kernel({"bwrap_path": "/nonexistent/bwrap"}).tools.get("python")
    result = await tool.run({"code": "print('should not run')"})
    assert result.is_error and "bubblewrap" in result.content and "should not run" not in result.content


async def test_bwrap_that_cannot_create_namespaces_is_refused(tmp_path: Path) -> None:
    """A stand-in for a kernel with user namespaces disabled: a bwrap that fails like one."""
    fake = Path("/tmp") / f"fake-bwrap-{tmp_path.name}"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = --help ] && exit 0\n'
        "echo 'bwrap: No permissions to create new namespace, likely because the kernel does not allow "
        "non-privileged user namespaces.' >&2\nexit 1\n"
    )
    fake.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        with pytest.raises(
            SandboxUnavailable, match=r"cannot create a sandbox here: bwrap: No permissions.*user namespaces"
        ):
            await Sandbox(SandboxConfig(bwrap_path=str(fake))).run("python", "print(1)")
    finally:
        fake.unlink()


async def test_isolation_none_runs_without_bwrap() -> None:
    sandbox = Sandbox(SandboxConfig(bwrap_path="/nonexistent/bwrap", isolation="none", limits={"timeout_s": 5}))
    result = await sandbox.run("python", "import os\nprint(os.getcwd().endswith('/work'), sorted(os.environ))")
    assert result.isolation == "none" and result.ok
    assert result.stdout.startswith("True ['HOME', 'LANG', 'PATH', 'PYTHONPATH', 'TMPDIR', 'USER'")
    timed_out = await sandbox.run("bash", "sleep 10", limits={"timeout_s": 0.5})
    assert timed_out.limits_hit == ["timeout"]


# ---------------------------------------------------------------- as a tool


async def test_tool_returns_text_and_structured_value(needs_bwrap: None) -> None:
    tool = kernel().tools.get("python")
    result = await tool.run({"code": "open('r.txt', 'w').write('data')\nprint(6 * 7)", "return_files": ["r.txt"]})
    assert not result.is_error and isinstance(result.value, SandboxResult)
    assert result.content.startswith("exit code 0") and "42" in result.content and "data" in result.content
    failing = await kernel().tools.get("bash").run({"code": "echo oops >&2; exit 4"})
    assert failing.is_error and "exit code 4" in failing.content and "oops" in failing.content


async def test_tool_validates_limits(needs_bwrap: None) -> None:
    tool = kernel().tools.get("python")
    invalid = await tool.run({"code": "print(1)", "limits": {"timeout_s": "soon"}})
    assert invalid.is_error and "invalid arguments for python" in invalid.content and "timeout_s" in invalid.content
    looser = await tool.run({"code": "print(1)", "limits": {"timeout_s": 50}})
    assert looser.is_error and "may only tighten" in looser.content
    tighter = await tool.run({"code": "import time\ntime.sleep(3)", "limits": {"timeout_s": 0.3}})
    assert tighter.is_error and "limits hit: timeout" in tighter.content


class NoBash:
    @hookimpl
    def taskloom_check(self, action: Any, settings: Any) -> Denial | None:
        if action.kind == "tool_call" and action.tool == "bash":
            return Denial(reason="bash is not allowed here", plugin="no-bash")
        return None


async def test_tool_calls_go_through_the_policy_hook(needs_bwrap: None) -> None:
    with register_plugin(NoBash(), "no-bash"):
        k = load_kernel(
            {
                "taskloom": {
                    "plugins": ["sandbox", "scripted", "memory-store", "memory-cache", "local-executor", "no-bash"],
                    "store": "memory",
                    "default_model": "bot",
                },
                "models": {
                    "bot": {
                        "provider": "scripted",
                        "responses": [{"tool": "bash", "arguments": {"code": "echo ran-bash"}}, "done"],
                    }
                },
            }
        )
    result = await run_agent(k, Agent(model="bot", tools=["bash"]), "try bash")
    assert result.tool_calls[0].is_error and "bash is not allowed here" in result.tool_calls[0].result
    assert "exit code" not in result.tool_calls[0].result  # the code never ran


# ---------------------------------------------------------------- end to end


async def test_agent_uses_python_tool_end_to_end(needs_bwrap: None) -> None:
    k = kernel(
        responses=[
            {"tool": "python", "arguments": {"code": "import math\nprint(math.factorial(20))"}},
            "20! is 2432902008176640000",
        ]
    )
    result = await run_agent(k, Agent(model="bot", tools=["python"]), "What is 20 factorial?")
    assert result.ok and result.text == "20! is 2432902008176640000"
    call = result.tool_calls[0]
    assert call.name == "python" and not call.is_error and "2432902008176640000" in call.result
    provider = k.provider("bot")
    tool_message = provider.requests[1].messages[-1]
    assert tool_message.role == "tool" and "2432902008176640000" in tool_message.text
    assert [t.name for t in provider.requests[0].tools] == ["python"]


async def test_workflow_agent_uses_the_sandbox(needs_bwrap: None) -> None:
    k = kernel(
        responses=[
            {
                "tool": "bash",
                "arguments": {"code": "seq 1 10 | paste -sd+ | bc 2>/dev/null || echo $((1+2+3+4+5+6+7+8+9+10))"},
            },
            "The sum is 55",
            "Reported: 55",
        ]
    )
    spec = parse_workflow(
        {
            "workflow": {"name": "sum"},
            "agents": {"coder": {"model": "bot", "tools": ["bash"]}, "writer": {"model": "bot"}},
            "tasks": [
                {"id": "compute", "agent": "coder", "prompt": "Add 1..10 with bash"},
                {"id": "report", "agent": "writer", "prompt": "Report: {{ outputs.compute }}", "needs": ["compute"]},
            ],
        }
    )
    result = await run_workflow(k, spec)
    assert result.status == "succeeded", result.run.error
    tool_message = k.provider("bot").requests[1].messages[-1]
    assert tool_message.role == "tool" and "55" in tool_message.text
    assert "The sum is 55" in k.provider("bot").requests[2].messages[-1].text
