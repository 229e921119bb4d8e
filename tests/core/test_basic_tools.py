"""The ``basic-tools`` built-in plugin: word count, a calculator that never evaluates
code, and the current time — through the kernel's registry, as an agent calls them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from taskloom.builtin.basic_tools import CalculatorError, calculator, word_count
from taskloom.cli import main
from taskloom.kernel import load_kernel
from taskloom.types import ToolCall

CONFIG = {"taskloom": {"plugins": ["basic-tools", "memory-store"], "store": "memory", "cache": "none"}}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(2 + 3) * 4", "20"),
        ("0.1 + 0.2", "0.3"),  # exact, not 0.30000000000000004
        ("-7 // 2", "-4"),  # Python's floor division
        ("7 % 3", "1"),
        ("2 ** 100", "1267650600228229401496703205376"),
        ("2 ** -2", "0.25"),
        ("2 ** 0.5", "1.4142135623731"),
        ("10 / 4", "2.5"),
    ],
)
def test_calculator_is_exact(expression: str, expected: str) -> None:
    assert calculator(expression) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os').system('id')", "Call is not allowed"),
        ("().__class__", "Attribute is not allowed"),
        ("x + 1", "Name is not allowed"),
        ("'a' * 3", "Constant is not allowed"),
        ("1 / 0", "division by zero"),
        ("9 ** 9 ** 9", "too large"),
        ("(2 ** 1000) ** 1000", "digits"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 +", "not an arithmetic expression"),
        ("1" * 201, "the limit is 200"),
    ],
)
def test_calculator_refuses_what_is_not_arithmetic(expression: str, reason: str) -> None:
    with pytest.raises(CalculatorError, match=reason):
        calculator(expression)


def test_word_count() -> None:
    assert word_count("one two  three\nfour") == {"words": 4, "characters": 19, "lines": 2}
    assert word_count("") == {"words": 0, "characters": 0, "lines": 0}
    assert word_count("single") == {"words": 1, "characters": 6, "lines": 1}


@pytest.mark.anyio
async def test_tools_through_the_registry_with_errors_the_model_sees() -> None:
    kernel = load_kernel(CONFIG)
    tools = kernel.tools
    assert {"word_count", "calculator", "current_time"} <= set(tools.names())
    assert tools.get("calculator").plugin == "basic-tools"

    ok = await tools.call(ToolCall(id="1", name="calculator", arguments={"expression": "6 * 7"}))
    assert not ok.is_error and ok.content == "42"

    refused = await tools.call(ToolCall(id="2", name="calculator", arguments={"expression": "open('/etc/passwd')"}))
    assert refused.is_error and "Call is not allowed" in refused.content

    bad_zone = await tools.call(ToolCall(id="3", name="current_time", arguments={"timezone": "Mars/Olympus"}))
    assert bad_zone.is_error and "unknown time zone 'Mars/Olympus'" in bad_zone.content

    now = await tools.call(ToolCall(id="4", name="current_time", arguments={}))
    stamp = datetime.fromisoformat(now.content)
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=1)

    wrong_type = await tools.call(ToolCall(id="5", name="word_count", arguments={"text": 12}))
    assert wrong_type.is_error and "text" in wrong_type.content


def test_tools_call_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no taskloom.toml: every installed plugin, basic-tools included
    runner = CliRunner()
    result = runner.invoke(main, ["tools", "call", "word_count", "--args", json.dumps({"text": "a b c"}), "--json"])
    assert result.exit_code == 0, result.output
    assert "3" in result.stdout and "words" in result.stdout
