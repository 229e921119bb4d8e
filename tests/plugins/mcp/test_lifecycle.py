"""Server lifecycle with real processes: shared session, crash and restart, tools/list_changed,
clean shutdown, and servers that cannot start."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import anyio
import pytest
import taskloom_mcp
from taskloom.types import ToolCall

from .conftest import lab_server, process_alive, time_server

pytestmark = pytest.mark.anyio


def call(tool: str, /, **arguments: object) -> ToolCall:
    return ToolCall(id="c1", name=tool, arguments=dict(arguments))


async def server_pid(kernel) -> int:
    result = await kernel.tools.call(call("lab.pid"))
    assert not result.is_error, result.content
    return int(result.content)


async def test_concurrent_calls_share_one_session(make_kernel) -> None:
    kernel = make_kernel({"lab": lab_server()})
    pid = await server_pid(kernel)
    results: list[str] = []

    async def one(i: int) -> None:
        r = await kernel.tools.call(call("lab.slow", seconds=0.5))
        results.append(r.content)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(one, i)
    elapsed = time.monotonic() - started
    assert results == ["slept 0.5"] * 8
    assert elapsed < 2.0, f"8 concurrent 0.5 s calls took {elapsed:.2f} s: they were not concurrent"
    assert await server_pid(kernel) == pid  # the same single server process
    assert taskloom_mcp.bridge_of(kernel).connections["lab"].restarts == 0


async def test_a_server_killed_mid_call_is_reported_and_restarted(make_kernel) -> None:
    kernel = make_kernel({"lab": lab_server(backoff=0.1)})
    pid = await server_pid(kernel)
    outcome = {}

    async def slow_call() -> None:
        outcome["result"] = await kernel.tools.call(call("lab.slow", seconds=30))

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_call)
        await anyio.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
    result = outcome["result"]
    assert time.monotonic() - started < 10, "the failed call hung"
    assert result.is_error
    assert "MCP server 'lab' closed the connection during the call to 'slow'" in result.content
    # The next call gets a restarted server.
    new_pid = await server_pid(kernel)
    assert new_pid != pid
    conn = taskloom_mcp.bridge_of(kernel).connections["lab"]
    assert conn.restarts == 1 and conn.status == "ready"


async def test_a_server_that_died_while_idle_is_restarted_on_the_next_call(make_kernel) -> None:
    kernel = make_kernel({"lab": lab_server(backoff=0.1)})
    pid = await server_pid(kernel)
    os.kill(pid, signal.SIGKILL)
    await anyio.sleep(0.5)  # the end of its stdout is noticed; a restart is under way
    result = await kernel.tools.call(call("lab.echo", text="back"))
    assert result.content == "back" and not result.is_error
    assert await server_pid(kernel) != pid


async def test_tools_list_changed_refreshes_the_tools(make_kernel) -> None:
    kernel = make_kernel({"lab": lab_server()})
    assert "lab.double" not in kernel.tools
    grown = await kernel.tools.call(call("lab.grow", name="double"))
    assert grown.content == "added double"
    for _ in range(100):
        if "lab.double" in kernel.tools:
            break
        await anyio.sleep(0.05)
    assert "lab.double" in kernel.tools, "tools/list_changed did not register the new tool"
    assert kernel.tools.get("lab.double").spec.parameters["required"] == ["x"]
    doubled = await kernel.tools.call(call("lab.double", x=21))
    assert doubled.content == "42"


async def test_shutdown_leaves_no_process_and_no_cancel_scope_error(make_kernel, caplog) -> None:
    caplog.set_level(logging.WARNING)
    kernel = make_kernel({"lab": lab_server(), "time": time_server()})
    pid = await server_pid(kernel)
    await kernel.tools.call(call("time.get_current_time", timezone="UTC"))
    await kernel.aclose()
    taskloom_mcp.close(kernel)
    assert not process_alive(pid)
    bridge = taskloom_mcp.bridge_of(kernel)
    assert {c.status for c in bridge.connections.values()} == {"closed"}
    assert not [r for r in caplog.records if "cancel scope" in r.getMessage().lower()]
    after = await kernel.tools.call(call("lab.echo", text="x"))
    assert after.is_error and "closed" in after.content


def test_exit_without_close_leaves_no_orphan(tmp_path) -> None:
    """A program that never closes the bridge: the atexit handler stops the servers."""
    script = tmp_path / "prog.py"
    script.write_text(
        f"""
import sys, anyio
from taskloom.kernel import load_kernel
from taskloom.types import ToolCall
k = load_kernel({{"taskloom": {{"plugins": ["mcp"]}}, "plugins": {{"mcp": {{"servers": {{"lab": {{"command": sys.executable, "args": [{str(lab_server()["args"][0])!r}]}}}}}}}}}})
r = anyio.run(k.tools.call, ToolCall(id="1", name="lab.pid", arguments={{}}))
print(r.content, flush=True)
"""
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.strip())
    assert not process_alive(pid)
    assert "cancel scope" not in proc.stderr.lower() and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- servers that cannot start


async def test_a_command_that_does_not_exist(make_kernel) -> None:
    kernel = make_kernel({"ghost": {"command": "no-such-mcp-server-xyz"}, "time": time_server()})
    assert not [n for n in kernel.tools.names() if n.startswith("ghost.")]
    assert "time.get_current_time" in kernel.tools  # the other server is unaffected
    row = taskloom_mcp.bridge_of(kernel).status(connect=False)[0]
    assert row["status"] == "failed"
    assert row["error"] == (
        "MCP server 'ghost': command 'no-such-mcp-server-xyz' was not found; install it, give its full path, "
        "or fix command in [plugins.mcp.servers.ghost]"
    )


async def test_a_server_that_exits_at_start_up(make_kernel) -> None:
    kernel = make_kernel({"quitter": lab_server("--exit")})
    row = taskloom_mcp.bridge_of(kernel).status(connect=False)[0]
    assert row["status"] == "failed"
    assert "MCP server 'quitter' exited or closed the connection during start-up" in row["error"]
    assert "its stderr said: lab: LAB_TOKEN is not set, giving up" in row["error"]


async def test_a_server_that_writes_garbage_to_stdout(make_kernel) -> None:
    kernel = make_kernel({"noisy": lab_server("--garbage", startup_timeout=20)})
    started = time.monotonic()
    row = taskloom_mcp.bridge_of(kernel).status(connect=False)[0]
    assert row["status"] == "failed"
    assert "MCP server 'noisy' wrote to stdout something that is not a JSON-RPC message" in row["error"]
    assert "Starting lab server v1.0" in row["error"]
    assert "logs go to stderr" in row["error"]
    assert time.monotonic() - started < 20


async def test_a_server_too_slow_to_start(make_kernel, tmp_path) -> None:
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\ntime.sleep(30)\n")
    started = time.monotonic()
    kernel = make_kernel({"sleepy": {"command": sys.executable, "args": [str(sleeper)], "startup_timeout": 1}})
    assert time.monotonic() - started < 8
    row = taskloom_mcp.bridge_of(kernel).status(connect=False)[0]
    assert row["status"] == "failed"
    assert "did not finish start-up (initialize and tools/list) within 1 s" in row["error"]
    assert "raise startup_timeout in [plugins.mcp.servers.sleepy]" in row["error"]


# ---------------------------------------------------------------- environment and working directory


async def test_stdio_env_with_env_references_and_cwd(make_kernel, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LAB_TOKEN_SOURCE", "s3cret-from-the-parent")
    monkeypatch.setenv("LAB_NOT_PASSED", "parent only")
    workdir = tmp_path / "server-home"
    workdir.mkdir()
    env = {"LAB_PLAIN": "plain value", "LAB_TOKEN": {"env": "LAB_TOKEN_SOURCE"}}
    kernel = make_kernel({"lab": lab_server(env=env, cwd=str(workdir))})

    async def environ(name: str) -> str:
        result = await kernel.tools.call(call("lab.environ", name=name))
        assert not result.is_error, result.content
        return result.content

    assert await environ("LAB_PLAIN") == "plain value"
    assert await environ("LAB_TOKEN") == "s3cret-from-the-parent"
    assert await environ("LAB_NOT_PASSED") == "<unset>", "only env and the SDK's safe default set are inherited"
    assert await environ("LAB_TOKEN_SOURCE") == "<unset>"
    assert await environ("PATH") == os.environ["PATH"]
    here = await kernel.tools.call(call("lab.cwd"))
    assert here.content == str(workdir)
    row = taskloom_mcp.bridge_of(kernel).status(connect=False)[0]
    assert "s3cret" not in repr(row) and "s3cret" not in repr(kernel.settings.to_dict())


async def test_an_env_reference_to_an_unset_variable_is_a_clear_error(make_kernel, monkeypatch) -> None:
    monkeypatch.delenv("LAB_MISSING_SOURCE", raising=False)
    kernel = make_kernel({"lab": lab_server(env={"LAB_TOKEN": {"env": "LAB_MISSING_SOURCE"}})})
    row = taskloom_mcp.bridge_of(kernel).status(connect=False)[0]
    assert row["status"] == "failed"
    assert "the environment variable LAB_MISSING_SOURCE is not set" in row["error"]
    assert "MCP server 'lab'" in row["error"]


async def test_a_cwd_that_is_not_a_directory(make_kernel, tmp_path) -> None:
    kernel = make_kernel({"lab": lab_server(cwd=str(tmp_path / "nowhere"))})
    row = taskloom_mcp.bridge_of(kernel).status(connect=False)[0]
    assert row["status"] == "failed"
    assert row["error"] == (
        f"MCP server 'lab': cwd {tmp_path / 'nowhere'} is not a directory; fix [plugins.mcp.servers.lab] cwd"
    )


# ---------------------------------------------------------------- restarts: backoff and giving up


def read_starts(path) -> list[tuple[str, float]]:
    return [(event, float(at)) for event, at in (line.split() for line in path.read_text().splitlines())]


async def test_restarts_back_off_doubling_then_give_up_after_max_restarts(make_kernel, tmp_path) -> None:
    starts, once = tmp_path / "starts.log", tmp_path / "started-once"
    flags = ("--starts", str(starts), "--exit-if-exists", str(once))  # only the first start succeeds
    kernel = make_kernel({"lab": lab_server(*flags, backoff=0.4, backoff_max=10, max_restarts=3)})
    conn = taskloom_mcp.bridge_of(kernel).connections["lab"]
    pid = await server_pid(kernel)
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    with anyio.fail_after(60):
        while conn.status != "failed":
            await anyio.sleep(0.05)
    assert conn.delays == [0.4, 0.8, 1.6], "backoff doubles before each restart"
    events = read_starts(starts)
    assert [e for e, _ in events] == ["start"] + ["start", "exit"] * 3, "three restarts, then it gave up"
    restarts = [at for e, at in events[1:] if e == "start"]
    exits = [at for e, at in events[1:] if e == "exit"]
    # Each restart began at least its delay after the previous failure ended (generous upper bounds).
    waits = [restarts[0] - killed_at, restarts[1] - exits[0], restarts[2] - exits[1]]
    for waited, delay in zip(waits, [0.4, 0.8, 1.6], strict=True):
        assert delay <= waited < delay + 5, (waits, conn.delays)
    assert conn.error is not None
    assert "gave up after 3 failed restarts" in conn.error and "lab: refusing to start again" in conn.error
    # A failed server is tried again on the next use: the call reports why it cannot start.
    result = await kernel.tools.call(call("lab.echo", text="hello?"))
    assert result.is_error
    assert "exited or closed the connection during start-up" in result.content
    assert "lab: refusing to start again" in result.content
    assert read_starts(starts)[-2][0] == "start", "the call started the server once more"


async def test_max_restarts_zero_never_restarts(make_kernel, tmp_path) -> None:
    starts = tmp_path / "starts.log"
    kernel = make_kernel({"lab": lab_server("--starts", str(starts), backoff=0.05, max_restarts=0)})
    conn = taskloom_mcp.bridge_of(kernel).connections["lab"]
    os.kill(await server_pid(kernel), signal.SIGKILL)
    with anyio.fail_after(20):
        while conn.status != "failed":
            await anyio.sleep(0.05)
    await anyio.sleep(0.5)
    assert [e for e, _ in read_starts(starts)] == ["start"]
    assert conn.error == "MCP server 'lab' exited or closed the connection; it is not restarted (max_restarts = 0)"


# ---------------------------------------------------------------- tools removed, servers recovering


async def test_a_tool_the_server_removes_answers_with_an_error(make_kernel) -> None:
    kernel = make_kernel({"lab": lab_server()})
    bridge = taskloom_mcp.bridge_of(kernel)
    await kernel.tools.call(call("lab.grow", name="double"))
    with anyio.fail_after(10):
        while "lab.double" not in bridge.tools:
            await anyio.sleep(0.05)
    assert (await kernel.tools.call(call("lab.double", x=2))).content == "4"
    removed = await kernel.tools.call(call("lab.shrink", name="double"))
    assert removed.content == "removed double"
    with anyio.fail_after(10):
        while bridge.tools["lab.double"].available:
            await anyio.sleep(0.05)
    gone = await kernel.tools.call(call("lab.double", x=2))
    assert gone.is_error
    assert gone.content == "error: MCP server 'lab' no longer offers the tool 'double'"
    row = bridge.status(connect=False)[0]
    assert {"name": "lab.double", "description": "Double x.", "available": False} in row["tools"]
    assert next(t for t in row["tools"] if t["name"] == "lab.echo")["available"]
    # Offered again: available again.
    await kernel.tools.call(call("lab.grow", name="double"))
    with anyio.fail_after(10):
        while not bridge.tools["lab.double"].available:
            await anyio.sleep(0.05)
    assert (await kernel.tools.call(call("lab.double", x=5))).content == "10"


async def test_allowlisted_tools_of_a_server_that_failed_at_assembly_recover_on_a_call(make_kernel, tmp_path) -> None:
    marker = tmp_path / "failed-once"
    kernel = make_kernel({"lab": lab_server("--exit-unless-exists", str(marker), tools=["echo", "pid"])})
    bridge = taskloom_mcp.bridge_of(kernel)
    assert bridge.connections["lab"].status == "failed"
    assert {"lab.echo", "lab.pid"} <= set(kernel.tools.names()), "allowlisted tools are registered all the same"
    assert "not listed yet" in kernel.tools.get("lab.echo").description
    result = await kernel.tools.call(call("lab.echo", text="recovered"))
    assert not result.is_error, result.content
    assert result.content == "recovered"
    assert bridge.connections["lab"].status == "ready"
    spec = kernel.tools.get("lab.echo").spec
    assert spec.parameters["required"] == ["text"], "the server's listing replaced the placeholder"
    assert spec.description == "Return the text."
    assert "lab.explode" not in kernel.tools, "the allowlist still applies"


async def test_a_server_that_failed_at_assembly_is_listed_later_and_cached(make_kernel, tmp_path) -> None:
    marker = tmp_path / "failed-once"
    servers = {"lab": lab_server("--exit-unless-exists", str(marker))}
    kernel = make_kernel(servers)
    bridge = taskloom_mcp.bridge_of(kernel)
    assert not [n for n in kernel.tools.names() if n.startswith("lab.")]
    (row,) = bridge.status(connect=True)  # what `taskloom mcp list` does
    assert row["status"] == "ready"
    assert "lab.echo" in kernel.tools
    assert (await kernel.tools.call(call("lab.echo", text="later"))).content == "later"
    taskloom_mcp.close(kernel)
    again = make_kernel(servers)  # the listing was cached: registered without starting the server
    assert taskloom_mcp.bridge_of(again).connections["lab"].status == "stopped"
    assert "lab.echo" in again.tools


# ---------------------------------------------------------------- the hand-off to the hub


async def test_hub_call_returns_raises_and_cancels_on_the_hub() -> None:
    import asyncio
    import threading

    from taskloom_mcp.hub import Hub

    hub = Hub("test-hub")
    try:

        async def where() -> str:
            return threading.current_thread().name

        assert await hub.call(where()) == "test-hub"

        async def fails() -> None:
            raise ValueError("from the hub")

        with pytest.raises(ValueError, match="from the hub"):
            await hub.call(fails())

        stopped = threading.Event()

        async def forever() -> None:
            try:
                await asyncio.sleep(30)
            finally:
                stopped.set()

        with anyio.move_on_after(0.2) as scope:
            await hub.call(forever())
        assert scope.cancelled_caught
        assert await anyio.to_thread.run_sync(stopped.wait, 10.0), "cancelling the caller did not cancel the hub task"
    finally:
        hub.close()
    closed = hub.call(where())
    with pytest.raises(RuntimeError, match="hub is closed"):
        await closed
