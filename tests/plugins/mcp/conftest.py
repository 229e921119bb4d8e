"""Fixtures for the MCP bridge tests: kernels with real MCP servers over stdio, and a
streamable-HTTP server built with the SDK on a free 127.0.0.1 port."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import taskloom_mcp
from taskloom.kernel import Kernel, load_kernel

HERE = Path(__file__).parent
LAB = HERE / "servers" / "lab.py"
PLUGINS = ["mcp", "scripted", "memory-cache", "memory-store", "local-executor"]


def time_server(**extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"], **extra}


def lab_server(*flags: str, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(LAB), *flags], **extra}


def kernel_config(servers: dict[str, Any], models: dict[str, Any] | None = None, **mcp: Any) -> dict[str, Any]:
    return {
        "taskloom": {"plugins": PLUGINS, "store": "memory"},
        "models": models or {},
        "plugins": {"mcp": {"servers": servers, **mcp}},
    }


@pytest.fixture
def make_kernel() -> Iterator[Callable[..., Kernel]]:
    made: list[Kernel] = []

    def make(servers: dict[str, Any], models: dict[str, Any] | None = None, **mcp: Any) -> Kernel:
        kernel = load_kernel(kernel_config(servers, models, **mcp))
        made.append(kernel)
        return kernel

    yield make
    for kernel in made:
        taskloom_mcp.close(kernel)


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.email", "test@example.org")
    git("config", "user.name", "Test")
    (repo / "README.md").write_text("hello\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "first commit: add README")
    (repo / "notes.txt").write_text("untracked\n")
    return repo


@pytest.fixture
def http_server() -> Iterator[str]:
    """The lab server over streamable HTTP (uvicorn in a thread) on a free port."""
    import uvicorn

    sys.path.insert(0, str(LAB.parent))
    try:
        import lab
    finally:
        sys.path.remove(str(LAB.parent))
    app = lab.build().streamable_http_app()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test HTTP MCP server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(10)
    sock.close()


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
