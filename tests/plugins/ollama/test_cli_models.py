"""``taskloom models --list`` with an ``ollama`` alias: the CLI asks ``GET /api/tags``.

No Ollama server can run here, so a tiny ``http.server`` thread on 127.0.0.1 answers
``/api/tags`` with the recorded body of Ollama's documented wire format (``recorded.py``);
the CLI, the kernel, the plugin and its httpx client all run for real."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from taskloom.cli import main

from . import recorded


class Tags:
    def __init__(self) -> None:
        self.paths: list[tuple[str, str]] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def tags_server() -> Iterator[Tags]:
    tags = Tags()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            tags.paths.append((self.command, self.path))
            found = self.path == "/api/tags"
            body = json.dumps(recorded.TAGS if found else {"error": "not found"}).encode()
            self.send_response(200 if found else 404)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tags.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, name="fake-ollama", daemon=True)
    thread.start()
    try:
        yield tags
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def run(tags: Tags, tmp_path: Path, *args: str) -> Result:
    config = tmp_path / "taskloom.toml"
    config.write_text(
        f'[taskloom]\nstore = "memory"\n\n[models.llama]\nprovider = "ollama"\nmodel = "llama3.2"\n'
        f'base_url = "{tags.base_url}"\noptions = {{ num_ctx = 8192 }}\n'
    )
    result = CliRunner().invoke(main, ["--config", str(config), "models", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_models_list_json_asks_api_tags(tags_server: Tags, tmp_path: Path) -> None:
    rows = json.loads(run(tags_server, tmp_path, "--list", "--json").stdout)
    [row] = [r for r in rows if r["alias"] == "llama"]
    assert row["provider"] == "ollama" and row["model"] == "llama3.2"
    assert row["available"] == ["deepseek-r1:latest", "llama3.2:latest"]
    assert row["capabilities"]["context_window"] == 8192
    assert tags_server.paths == [("GET", "/api/tags")]


def test_models_list_text(tags_server: Tags, tmp_path: Path) -> None:
    lines = run(tags_server, tmp_path, "--list").stdout.splitlines()
    at = lines.index("llama: ollama llama3.2  (tools, streaming, embeddings, structured_output; context 8192)")
    assert lines[at + 1 : at + 3] == ["    deepseek-r1:latest", "    llama3.2:latest"]


def test_models_without_list_does_not_call_ollama(tags_server: Tags, tmp_path: Path) -> None:
    lines = run(tags_server, tmp_path).stdout.splitlines()
    assert "llama: ollama llama3.2  (tools, streaming, embeddings, structured_output; context 8192)" in lines
    assert tags_server.paths == []
