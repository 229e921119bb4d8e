"""``taskloom models`` with an ``openai`` alias, against the tiny real HTTP server on
127.0.0.1 (``fake_server`` in conftest.py): plain text and JSON, with and without --list."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from taskloom.cli import main

from .conftest import FakeServer, Reply

JSON = {"content-type": "application/json"}
MODELS = json.dumps({"object": "list", "data": [{"id": "m-small"}, {"id": "m-big"}]}).encode()
CAPS = "tools, streaming, embeddings, structured_output; context 4096"


def run(fake: FakeServer, case: str, tmp_path: Path, *args: str) -> Result:
    config = tmp_path / "taskloom.toml"
    config.write_text(
        f'[taskloom]\nstore = "memory"\n\n[models.srv]\nprovider = "openai"\nmodel = "m"\n'
        f'base_url = "{fake.url(case)}"\ncontext_window = 4096\n'
    )
    result = CliRunner().invoke(main, ["--config", str(config), "models", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_plain_text_without_list_asks_no_server(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.replies["cli-text"] = Reply(200, JSON, MODELS)
    result = run(fake_server, "cli-text", tmp_path)
    lines = result.stdout.splitlines()
    assert f"srv: openai m  ({CAPS})" in lines
    assert any(line.startswith("local: llamacpp ") for line in lines), "the built-in default alias is listed too"
    assert not any(line.startswith("    ") for line in lines), "models were listed without --list"
    assert fake_server.sent("cli-text") == [], "without --list the command must not call the server"


def test_plain_text_with_list(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.replies["cli-text-list"] = Reply(200, JSON, MODELS)
    lines = run(fake_server, "cli-text-list", tmp_path, "--list").stdout.splitlines()
    at = lines.index(f"srv: openai m  ({CAPS})")
    assert lines[at + 1 : at + 3] == ["    m-big", "    m-small"]
    [request] = fake_server.sent("cli-text-list")
    assert (request["method"], request["path"]) == ("GET", "/cli-text-list/v1/models")


def test_json_without_list(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.replies["cli-json"] = Reply(200, JSON, MODELS)
    rows = json.loads(run(fake_server, "cli-json", tmp_path, "--json").stdout)
    [row] = [r for r in rows if r["alias"] == "srv"]
    assert row["provider"] == "openai" and row["model"] == "m" and row["fallbacks"] == []
    assert row["capabilities"]["tools"] is True and row["capabilities"]["context_window"] == 4096
    assert "available" not in row and "error" not in row
    assert fake_server.sent("cli-json") == []


def test_a_server_that_cannot_list_keeps_the_row(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.replies["cli-down"] = Reply(500, JSON, json.dumps({"error": {"message": "boom"}}).encode())
    lines = run(fake_server, "cli-down", tmp_path, "--list").stdout.splitlines()
    at = lines.index(f"srv: openai m  ({CAPS})")
    assert lines[at + 1].startswith("    cannot list models: ") and "boom" in lines[at + 1]
    [row] = [
        r for r in json.loads(run(fake_server, "cli-down", tmp_path, "--list", "--json").stdout) if r["alias"] == "srv"
    ]
    assert row["capabilities"]["context_window"] == 4096
    assert "boom" in row["list_error"] and "available" not in row
