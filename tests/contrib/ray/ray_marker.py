"""Test providers (test doubles, named as such), registered in every Ray worker by a setup hook.

``provider = "marker"`` with ``marker = "/path/file"``: the first call anywhere writes its
process id to the file and hangs (so the test can kill that worker, or time it out);
every later call, in any process, answers with ``default`` at once.

``provider = "probe"`` (:class:`ProbeProvider`): records when each call starts and ends, in
which process, to a JSON-lines file, so tests can count side effects and measure how many
calls ran at once on the cluster.

``provider = "broken"``: its factory raises ``RuntimeError(message)``, an exception that
escapes the agent loop on the worker.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from taskloom import hookimpl
from taskloom.testing import ScriptedProvider, register_plugin
from taskloom.types import ModelRequest, ModelResponse


class MarkerProvider(ScriptedProvider):
    def __init__(self, alias: str, marker: str, default: str) -> None:
        super().__init__(alias, default=default)
        self.marker = Path(marker)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return await super().complete(request)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        await anyio.sleep(600)
        raise AssertionError("the hanging call was not stopped")


class ProbeProvider(ScriptedProvider):
    """A provider that leaves evidence (a test double, named as such).

    Every call appends two JSON lines to ``log`` (``start`` and ``end``, with the time, the
    process id and the prompt), holds ``hold`` seconds in between, and answers
    ``<prompt>`` (plus `` VAR=value`` of this process's environment with ``echo_env``).
    A prompt containing ``[hang]`` hangs instead, in the first process that claims the
    file ``hang_marker`` (its process id is written there), and records ``cancelled`` when
    it is cancelled; later calls answer at once.
    """

    def __init__(self, alias: str, options: dict[str, Any]) -> None:
        default = "<{prompt}>"
        if options.get("echo_env"):
            var = str(options["echo_env"])
            default += f" {var}={os.environ.get(var, '<unset>')}"
        super().__init__(alias, default=default)
        self.log = Path(options["log"])
        self.hold = float(options.get("hold", 0))
        self.hang_marker = Path(options["hang_marker"]) if options.get("hang_marker") else None

    def _record(self, event: str, prompt: str) -> None:
        line = json.dumps({"event": event, "t": time.time(), "pid": os.getpid(), "prompt": prompt}) + "\n"
        fd = os.open(self.log, os.O_CREAT | os.O_APPEND | os.O_WRONLY)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        prompt = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        self._record("start", prompt)
        if "[hang]" in prompt and self.hang_marker is not None and _claim(self.hang_marker):
            try:
                await anyio.sleep(600)
            except BaseException:  # cancelled (on its worker): leave evidence of that too
                self._record("cancelled", prompt)
                raise
            raise AssertionError("the hanging call was not stopped")
        if self.hold:
            await anyio.sleep(self.hold)
        response = await super().complete(request)
        self._record("end", prompt)
        return response


def _claim(marker: Path) -> bool:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def read_log(log: Path) -> list[dict[str, Any]]:
    """The events a :class:`ProbeProvider` recorded (empty when none)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def max_overlap(events: list[dict[str, Any]]) -> int:
    """The most calls that were between their ``start`` and ``end`` at the same moment."""
    open_at: dict[tuple[int, str], float] = {}
    intervals: list[tuple[float, float]] = []
    for e in sorted(events, key=lambda e: e["t"]):
        key = (e["pid"], e["prompt"])
        if e["event"] == "start":
            open_at[key] = e["t"]
        elif key in open_at:
            intervals.append((open_at.pop(key), e["t"]))
    points = sorted([(s, 1) for s, _ in intervals] + [(t, -1) for _, t in intervals], key=lambda p: (p[0], p[1]))
    best = now = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best


class MarkerPlugin:
    @hookimpl
    def taskloom_register_providers(self, register: Callable[..., None], settings: Any) -> None:
        def factory(config: Any, settings: Any) -> MarkerProvider:
            return MarkerProvider(config.alias, config.options["marker"], config.options.get("default", "done"))

        def probe(config: Any, settings: Any) -> ProbeProvider:
            return ProbeProvider(config.alias, dict(config.options))

        def broken(config: Any, settings: Any) -> ScriptedProvider:
            raise RuntimeError(config.options.get("message", "the broken provider cannot be built"))

        register("marker", factory)
        register("probe", probe)
        register("broken", broken)


_registered: list[Any] = []


def setup() -> None:
    """Ray ``worker_process_setup_hook``: make the plugin known to kernels built in this worker."""
    if not _registered:
        cm = register_plugin(MarkerPlugin(), "marker")
        cm.__enter__()
        _registered.append(cm)
