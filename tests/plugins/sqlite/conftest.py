"""Fixtures for the SQLite plugin tests: a config whose files live in tmp_path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    """Kernel config: the sqlite store and cache in tmp_path, a scripted model with a price."""
    return {
        "taskloom": {"store": "sqlite", "cache": "sqlite", "default_model": "fake"},
        "models": {
            "fake": {"provider": "scripted", "default": "echo: {prompt}", "price": {"input": 1.0, "output": 2.0}}
        },
        "plugins": {
            "sqlite": {
                "store_path": str(tmp_path / "runs.sqlite"),
                "cache_path": str(tmp_path / "cache.sqlite"),
                "tool_prices": {"add": 0.005},
            },
            "console": {"mode": "never"},
        },
    }


def write_toml(path: Path, config: dict[str, Any]) -> Path:
    """A minimal TOML writer for the nested tables the tests use."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        raise TypeError(type(v))

    def table(name: str, data: dict[str, Any]) -> None:
        simple = {k: v for k, v in data.items() if not (isinstance(v, dict) and k not in ("tool_prices", "price"))}
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {value(v)}" for k, v in simple.items())
        for k, v in data.items():
            if k not in simple:
                table(f"{name}.{k}", v)

    for name, data in config.items():
        table(name, data)
    path.write_text("\n".join(lines) + "\n")
    return path


PYTHON = sys.executable
