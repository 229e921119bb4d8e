"""Kernels with scripted deployments per tier and the router enabled."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from taskloom import Event, hookimpl, load_kernel
from taskloom.kernel import Kernel
from taskloom.testing import register_plugin

FAST_RETRY = {"attempts": 1, "base_delay": 0.001, "max_delay": 0.002}

MODELS: dict[str, dict[str, Any]] = {
    "nano": {
        "provider": "scripted",
        "model": "gpt-4.1-nano",
        "default": "nano: {prompt}",
        "price": {"input": 0.10, "output": 0.40},
        "retry": FAST_RETRY,
    },
    "mini": {
        "provider": "scripted",
        "model": "gpt-4.1-mini",
        "default": "mini: {prompt}",
        "price": {"input": 0.40, "output": 1.60},
        "retry": FAST_RETRY,
    },
    "big": {
        "provider": "scripted",
        "model": "gpt-4.1",
        "default": "big: {prompt}",
        "price": {"input": 2.00, "output": 8.00},
        "retry": FAST_RETRY,
    },
}

TIERS: list[dict[str, Any]] = [
    {"name": "weak", "deployments": ["nano"]},
    {"name": "base", "deployments": ["mini"]},
    {"name": "strong", "deployments": ["big"]},
]


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def taskloom_event(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


def config(router: dict[str, Any] | None = None, models: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    table: dict[str, Any] = {"tiers": copy.deepcopy(TIERS), "seed": 7}
    table.update(router or {})
    return {
        "taskloom": {
            "store": "memory",
            "cache": "none",
            "plugins": ["router", "scripted", "prices", "memory-store", "local-executor", "recorder"],
        },
        "models": copy.deepcopy(models or MODELS),
        "plugins": {"router": table},
    }


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    with register_plugin(rec, "recorder"):
        yield rec


def make(cfg: dict[str, Any], recorder: Recorder | None = None) -> Kernel:
    if recorder is None:
        with register_plugin(Recorder(), "recorder"):
            return load_kernel(cfg)
    return load_kernel(cfg)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
