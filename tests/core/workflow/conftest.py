"""Fixtures for the workflow engine tests: kernels on the scripted provider, an event
recorder, and a provider that tracks how many calls run at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from taskloom import hookimpl, load_kernel
from taskloom.kernel import Kernel
from taskloom.testing import ScriptedProvider, register_plugin
from taskloom.types import Event, ModelRequest, ModelResponse

PLUGINS = ["scripted", "memory-store", "local-executor", "prices", "wf-test"]


class TrackingProvider(ScriptedProvider):
    """Answers after ``delay`` seconds (or the ``sleep=`` in the prompt); records the peak
    number of calls in flight and every prompt it saw."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        super().__init__(name, default="done: {prompt}")
        self.delay = delay
        self.peak = 0
        self.prompts: list[str] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        prompt = request.messages[-1].text
        self.prompts.append(prompt)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            delay = float(prompt.rsplit("sleep=", 1)[1].split()[0]) if "sleep=" in prompt else self.delay
            await anyio.sleep(delay)
        finally:
            self.in_flight -= 1
        return await super().complete(request)


class WfTestPlugin:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.providers: dict[str, ScriptedProvider] = {}

    @hookimpl
    def taskloom_register_providers(self, register: Callable[..., None], settings: Any) -> None:
        def factory(config: Any, settings: Any) -> ScriptedProvider:
            provider = self.providers.get(config.alias)
            if provider is None:
                provider = self.providers[config.alias] = TrackingProvider(
                    config.alias, float(config.options.get("delay", 0.0))
                )
            return provider

        register("tracking", factory)

    @hookimpl
    def taskloom_event(self, event: Event) -> None:
        if event.kind.startswith(("task.", "run.")):
            self.events.append(event)

    def kinds(self, task_id: str | None = None) -> list[str]:
        return [e.kind for e in self.events if task_id is None or e.task_id == task_id]

    def times(self, kind: str) -> dict[str, float]:
        return {e.task_id or "": e.time for e in self.events if e.kind == kind}


@pytest.fixture
def wf_plugin() -> Iterator[WfTestPlugin]:
    plugin = WfTestPlugin()
    with register_plugin(plugin, "wf-test"):
        yield plugin


def make_config(models: dict[str, dict[str, Any]] | None = None, **taskloom: Any) -> dict[str, Any]:
    section = {"store": "memory", "cache": "none", "plugins": PLUGINS, **taskloom}
    models = models or {"m": {"provider": "scripted", "default": "answer: {prompt}"}}
    return {"taskloom": section, "models": models}


@pytest.fixture
def make_kernel(wf_plugin: WfTestPlugin) -> Callable[..., Kernel]:
    def build(models: dict[str, dict[str, Any]] | None = None, **taskloom: Any) -> Kernel:
        return load_kernel(make_config(models, **taskloom))

    return build


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class Clock:
    def __init__(self) -> None:
        self.start = time.time()

    def at(self, t: float) -> float:
        return t - self.start
