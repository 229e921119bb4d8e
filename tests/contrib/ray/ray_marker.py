"""A provider for fault tests, registered in every Ray worker by a setup hook.

``provider = "marker"`` with ``marker = "/path/file"``: the first call anywhere writes its
process id to the file and hangs (so the test can kill that worker, or time it out);
every later call, in any process, answers with ``default`` at once.
"""

from __future__ import annotations

import os
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


class MarkerPlugin:
    @hookimpl
    def taskloom_register_providers(self, register: Callable[..., None], settings: Any) -> None:
        def factory(config: Any, settings: Any) -> MarkerProvider:
            return MarkerProvider(config.alias, config.options["marker"], config.options.get("default", "done"))

        register("marker", factory)


_registered: list[Any] = []


def setup() -> None:
    """Ray ``worker_process_setup_hook``: make the plugin known to kernels built in this worker."""
    if not _registered:
        cm = register_plugin(MarkerPlugin(), "marker")
        cm.__enter__()
        _registered.append(cm)
