"""``jsonl``: every event as one JSON line appended to a file (``[plugins.jsonl] path``).
Does nothing until a path is configured; ``TASKLOOM_EVENTS_JSONL`` sets one too."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field

from taskloom import hookimpl
from taskloom.config import Settings
from taskloom.types import Event

NAME = "jsonl"


class JsonlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(None, description="File the events are appended to.")


class JsonlSink:
    def __init__(self) -> None:
        self.file: IO[str] | None = None
        self.lock = threading.Lock()

    def open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered: each event reaches the file whole, even if the process is killed.
        self.file = path.open("a", encoding="utf-8", buffering=1)

    @hookimpl
    def taskloom_config_model(self) -> type[BaseModel]:
        return JsonlConfig

    @hookimpl
    def taskloom_configure(self, settings: Settings) -> None:
        cfg: JsonlConfig = settings.plugin_config(NAME) or JsonlConfig()
        path = cfg.path or (Path(p) if (p := os.environ.get("TASKLOOM_EVENTS_JSONL")) else None)
        if path is not None:
            self.open(path)

    @hookimpl
    def taskloom_wants_events(self, settings: Settings) -> bool:
        return self.file is not None

    @hookimpl
    def taskloom_event(self, event: Event) -> None:
        if self.file is None:
            return
        line = event.model_dump_json()
        with self.lock:
            self.file.write(line + "\n")
