"""The taskloom command: exit codes, one-line errors, plugins/config/ask/tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from taskloom.cli import main

CONFIG = """
[taskloom]
store = "memory"
default_model = "fake"

[models.fake]
provider = "scripted"
default = "You asked: {prompt}"

[models.secretive]
provider = "scripted"
api_key = { env = "TL_CLI_SECRET" }
token = "sk-literal-value"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "taskloom.toml"
    path.write_text(CONFIG)
    return path


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and "taskloom, version" in result.output


def test_plugins_json_lists_builtins(config: Path) -> None:
    result = run("--config", str(config), "plugins", "--json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["prices"]["status"] == "enabled"
    assert rows["prices"]["distribution"] == "taskloom-core"
    assert "taskloom_price" in rows["prices"]["hooks"]


def test_plugins_table(config: Path) -> None:
    result = run("--config", str(config), "plugins")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["plugin", "distribution", "version", "status", "hooks"]
    row = next(line for line in lines if line.startswith("memory-cache "))
    assert row.split()[:4] == ["memory-cache", "taskloom-core", "0.1.0", "enabled"] and "register_caches" in row


def test_plugins_table_says_why_a_plugin_failed(config: Path) -> None:
    from taskloom import hookimpl
    from taskloom.testing import register_plugin

    class Broken:
        @hookimpl
        def taskloom_register_tools(self, register: object, settings: object) -> None:
            raise RuntimeError("tool shed locked")

    with register_plugin(Broken(), "broken"):
        result = run("--config", str(config), "plugins")
    assert result.exit_code == 0
    row = next(line for line in result.output.splitlines() if line.startswith("broken "))
    assert row.split()[:2] == ["broken", "(in-process)"] and " failed " in row
    assert "broken: failed: taskloom_register_tools raised RuntimeError: tool shed locked" in result.output


def test_config_redacts_secrets(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_CLI_SECRET", "sk-from-env")
    result = run("--config", str(config), "config", "--json")
    assert result.exit_code == 0
    assert "sk-from-env" not in result.output and "sk-literal-value" not in result.output
    data = json.loads(result.output)
    assert data["models"]["secretive"]["api_key"] == {"env": "TL_CLI_SECRET"}
    assert data["source"] == str(config)


def test_config_schema_includes_plugin_sections(config: Path) -> None:
    result = run("--config", str(config), "config", "schema")
    schema = json.loads(result.output)
    plugins = schema["properties"]["plugins"]["properties"]
    assert "max_entries" in plugins["memory-cache"]["properties"]
    assert "tiers" in plugins["limits"]["properties"]
    assert "taskloom" in schema["properties"]


def test_config_schema_includes_disabled_plugins(tmp_path: Path) -> None:
    config = tmp_path / "taskloom.toml"
    config.write_text('[taskloom]\nplugins = ["memory-store"]\nstore = "memory"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "config", "schema"])
    assert result.exit_code == 0, result.output
    plugins = json.loads(result.stdout)["properties"]["plugins"]["properties"]
    # Neither is enabled, yet a user writing their file gets both sections.
    assert "max_entries" in plugins["memory-cache"]["properties"]
    assert "tiers" in plugins["limits"]["properties"]


def test_config_schema_leaves_out_a_plugin_whose_model_raises(tmp_path: Path) -> None:
    from taskloom import hookimpl
    from taskloom.testing import register_plugin

    class Broken:
        @hookimpl
        def taskloom_config_model(self) -> object:
            raise RuntimeError("no model today")

    config = tmp_path / "taskloom.toml"
    config.write_text('[taskloom]\nplugins = ["memory-cache", "broken"]\nstore = "memory"\n')
    with register_plugin(Broken(), "broken"):
        result = CliRunner().invoke(main, ["--config", str(config), "config", "schema"])
    assert result.exit_code == 0, result.output
    assert "warning: plugin broken failed: taskloom_config_model raised RuntimeError: no model today" in result.stderr
    plugins = json.loads(result.stdout)["properties"]["plugins"]["properties"]
    assert "broken" not in plugins and "memory-cache" in plugins


def test_a_model_table_typo_suggests_the_kernel_key(tmp_path: Path) -> None:
    config = tmp_path / "taskloom.toml"
    config.write_text('[taskloom]\nstore = "memory"\n[models.fake]\nprovider = "scripted"\nfallback = ["x"]\n')
    result = CliRunner().invoke(main, ["--config", str(config), "ask", "hi", "--model", "fake"])
    assert result.exit_code == 2
    assert "[models.fake] unknown key 'fallback' (did you mean 'fallbacks'?)" in result.output


def test_config_error_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[taskloom\n")
    result = CliRunner().invoke(main, ["--config", str(bad), "plugins"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "invalid TOML" in result.output
    assert "Traceback" not in result.output


def test_missing_config_path_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "missing.toml"), "config"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_usage_error_exit_2() -> None:
    result = CliRunner().invoke(main, ["no-such-command"])
    assert result.exit_code == 2


def test_ask_on_the_scripted_provider(config: Path) -> None:
    result = run("--config", str(config), "ask", "what is up")
    assert result.exit_code == 0 and result.output.strip() == "You asked: what is up"
    result = run("--config", str(config), "ask", "hello", "--json")
    data = json.loads(result.output)
    assert data["answer"] == "You asked: hello" and data["turns"] == 1
    assert data["usage"]["input_tokens"] > 0 and data["cost"]["priced"] is True


def test_ask_unknown_model_exit_2(config: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(config), "ask", "x", "--model", "fak"])
    assert result.exit_code == 2
    assert "unknown model alias 'fak' (did you mean 'fake'?)" in result.output


def test_ask_unknown_tool_exit_2(config: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(config), "ask", "x", "--tool", "nope"])
    assert result.exit_code == 2 and "unknown tool 'nope'" in result.output


def test_tools_listing_and_call(tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from .fakedist import activate, make_dist

    source = (
        "from taskloom import hookimpl\n"
        "@hookimpl\n"
        "def taskloom_register_tools(register, settings):\n"
        "    def divide(a: float, b: float) -> float:\n"
        '        """Divide a by b."""\n'
        "        return a / b\n"
        "    register(divide)\n"
    )
    make_dist(tmp_path / "site", "fake-div", {"div": "fakeplug_div"}, {"fakeplug_div": source})
    activate(tmp_path / "site", monkeypatch)
    listing = [t for t in json.loads(run("--config", str(config), "tools", "--json").output) if t["plugin"] == "div"]
    assert listing == [
        {
            "name": "divide",
            "plugin": "div",
            "description": "Divide a by b.",
            "parameters": listing[0]["parameters"],
        }
    ]
    assert listing[0]["parameters"]["required"] == ["a", "b"]
    ok = run("--config", str(config), "tools", "call", "divide", "--args", '{"a": 9, "b": 3}', "--json")
    assert ok.exit_code == 0 and json.loads(ok.output)["value"] == 3.0
    bad = CliRunner().invoke(main, ["--config", str(config), "tools", "call", "divide", "--args", '{"a": 1, "b": 0}'])
    assert bad.exit_code == 1 and "ZeroDivisionError" in bad.output
    invalid = CliRunner().invoke(main, ["--config", str(config), "tools", "call", "divide", "--args", '{"a": "x"}'])
    assert invalid.exit_code == 1 and "invalid arguments for divide" in invalid.output
    broken = CliRunner().invoke(main, ["--config", str(config), "tools", "call", "divide", "--args", "{oops"])
    assert broken.exit_code == 2 and "not JSON" in broken.output


def test_failed_plugins_are_warned_about(tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from .fakedist import activate, make_dist

    make_dist(tmp_path / "site", "fake-broken", {"broken": "fakeplug_broken_missing"})
    activate(tmp_path / "site", monkeypatch)
    result = CliRunner().invoke(main, ["--config", str(config), "ask", "hi"])
    assert result.exit_code == 0
    assert "warning: plugin broken failed: cannot import fakeplug_broken_missing" in result.output
    listing = json.loads(run("--config", str(config), "plugins", "--json").output)
    assert next(r for r in listing if r["name"] == "broken")["status"] == "failed"


def test_real_process_exit_codes(config: Path) -> None:
    exe = [sys.executable, "-m", "taskloom"]
    ok = subprocess.run([*exe, "--config", str(config), "ask", "ping"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "You asked: ping"
    bad = subprocess.run(
        [*exe, "--config", "/nonexistent/x.toml", "plugins"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stderr.strip().startswith(
        "error: config file /nonexistent/x.toml does not exist"
    )
    debug = subprocess.run(
        [*exe, "--debug", "--config", "/nonexistent/x.toml", "plugins"], capture_output=True, text=True, timeout=60
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_plugin_raising_in_register_commands_is_failed_and_the_cli_keeps_working(
    tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .fakedist import activate, make_dist

    source = (
        "from taskloom import hookimpl\n"
        "@hookimpl\n"
        "def taskloom_register_commands(register):\n"
        "    raise ImportError('click extras missing')\n"
    )
    good = (
        "import click\n"
        "from taskloom import hookimpl\n"
        "from taskloom.cli import get_kernel\n"
        "@click.command()\n"
        "@click.pass_context\n"
        "def hello(ctx):\n"
        "    info = get_kernel(ctx).plugins.infos['cmds']\n"
        "    click.echo(f'hello; cmds is {info.status_text}')\n"
        "@hookimpl\n"
        "def taskloom_register_commands(register):\n"
        "    register(hello)\n"
    )
    make_dist(tmp_path / "site", "fake-cmds", {"cmds": "fakeplug_cmds"}, {"fakeplug_cmds": source})
    make_dist(tmp_path / "site", "fake-hello", {"hello": "fakeplug_hello"}, {"fakeplug_hello": good})
    activate(tmp_path / "site", monkeypatch)
    listing = run("--config", str(config), "--help")
    assert listing.exit_code == 0 and "hello" in listing.output and "ask" in listing.output
    result = run("--config", str(config), "hello")
    assert result.exit_code == 0
    assert (
        result.output.strip()
        == "hello; cmds is failed: taskloom_register_commands raised ImportError: click extras missing"
    )
    ok = run("--config", str(config), "ask", "still here")
    assert ok.exit_code == 0 and ok.output.strip().endswith("You asked: still here")


def test_tools_call_goes_through_the_policy_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from .fakedist import activate, make_dist

    marker = tmp_path / "ran"
    source = (
        "from taskloom import hookimpl\n"
        "@hookimpl\n"
        "def taskloom_register_tools(register, settings):\n"
        "    def touch(name: str) -> str:\n"
        '        """Create a file."""\n'
        f"        open({str(marker)!r}, 'w').write(name)\n"
        "        return 'touched'\n"
        "    register(touch)\n"
    )
    make_dist(tmp_path / "site", "fake-touch", {"touch": "fakeplug_touch"}, {"fakeplug_touch": source})
    activate(tmp_path / "site", monkeypatch)
    path = tmp_path / "limited.toml"
    path.write_text(
        CONFIG.replace('default_model = "fake"', 'default_model = "fake"\nuser = "ann"')
        + '\n[plugins.limits]\ndefault_tier = "free"\n[plugins.limits.tiers.free]\nallowed_tools = ["search"]\n'
    )
    denied = CliRunner().invoke(main, ["--config", str(path), "tools", "call", "touch", "--args", '{"name": "x"}'])
    assert denied.exit_code == 1
    assert denied.output.strip() == "error: denied by limits: tier 'free' may not use tool 'touch'"
    assert not marker.exists()
    allowed = path.read_text().replace('allowed_tools = ["search"]', 'allowed_tools = ["search", "touch"]')
    path.write_text(allowed)
    ok = run("--config", str(path), "tools", "call", "touch", "--args", '{"name": "x"}')
    assert ok.exit_code == 0 and ok.output.strip() == "touched" and marker.read_text() == "x"


def test_a_closed_output_pipe_ends_the_command_quietly(config: Path) -> None:
    reader = subprocess.Popen(
        [sys.executable, "-m", "taskloom", "--config", str(config), "plugins"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TASKLOOM_PLUGIN_INDEX": "0"},
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # like `taskloom plugins | head -0`
    stderr = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 141
    assert "error" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
