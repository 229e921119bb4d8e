"""Fixtures for the sandbox tests: a sandbox with tight limits, a secret file the code must
not read, a TCP server it must not reach, a victim process it must not kill, and a scan of
the host's process table."""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from taskloom_sandbox import Sandbox, SandboxConfig, SandboxUnavailable

TIGHT = {"timeout_s": 5, "cpu_s": 5, "memory_mb": 256, "file_size_mb": 4, "processes": 32, "output_bytes": 20_000}


def make_sandbox(**overrides: Any) -> Sandbox:
    data: dict[str, Any] = {"limits": dict(TIGHT)}
    data.update(overrides)
    return Sandbox(SandboxConfig.model_validate(data))


@functools.cache
def bwrap_problem() -> str | None:
    try:
        anyio.run(make_sandbox().check)
    except SandboxUnavailable as exc:
        return str(exc)
    return None


@pytest.fixture
def needs_bwrap() -> None:
    problem = bwrap_problem()
    if problem is not None:
        message = f"bubblewrap cannot run here (run .ci/install-system-deps.sh): {problem}"
        if os.environ.get("CI"):
            # CI installs bubblewrap; a skip there would hide a broken install step.
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def sandbox(needs_bwrap: None) -> Sandbox:
    return make_sandbox()


@pytest.fixture
def sandbox_with(needs_bwrap: None) -> Callable[..., Sandbox]:
    """A factory: ``sandbox_with(**config)`` over the tight defaults."""
    return make_sandbox


@pytest.fixture
def unsafe_sandbox() -> Sandbox:
    """isolation = "none": the control that shows an attack test can fail."""
    return make_sandbox(isolation="none")


def run_as_kwargs() -> dict[str, Any]:
    """Spawn options that give a helper process the same host uid as sandboxed code."""
    if os.geteuid() == 0:
        return {"user": 65534, "group": 65534, "extra_groups": []}
    return {}


@dataclass
class Secret:
    path: Path
    token: str


@pytest.fixture
def secret_file() -> Iterator[Secret]:
    """A world-readable secret outside any working directory (the worst case)."""
    folder = Path(tempfile.mkdtemp(prefix="sandbox-secret-"))
    folder.chmod(0o755)
    token = "SECRET-" + secrets.token_hex(12)
    path = folder / "secret.txt"
    path.write_text(token + "\n")
    path.chmod(0o644)
    yield Secret(path, token)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A world-writable host directory the code must not be able to write into."""
    folder = Path(tempfile.mkdtemp(prefix="sandbox-outside-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Server:
    port: int
    connections: list[bytes] = field(default_factory=list)


@pytest.fixture
def tcp_server() -> Iterator[Server]:
    """A TCP server on 127.0.0.1 that records every connection and what it received."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    server = Server(listener.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(1)
                try:
                    server.connections.append(conn.recv(1024))
                except OSError:
                    server.connections.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server
    stop.set()
    thread.join(2)
    listener.close()


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A host process with the same uid as the sandboxed code (so only isolation protects it)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True, **run_as_kwargs())
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def host_processes() -> Callable[[str], list[int]]:
    return processes_matching


def processes_matching(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker`` (bubblewrap's own processes, whose
    command line holds the sandboxed command too, are left out)."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle not in f.read():
                    continue
            with open(f"/proc/{entry}/comm", "rb") as f:
                if f.read().strip() != b"bwrap":
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_matching(marker: str) -> None:
    for pid in processes_matching(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
