"""``scripted``: registers the scripted provider so config can say ``provider = "scripted"``."""

from __future__ import annotations

from collections.abc import Callable

from taskloom import hookimpl
from taskloom.config import Settings

from .scripted import from_config


@hookimpl
def taskloom_register_providers(register: Callable[..., None], settings: Settings) -> None:
    register("scripted", from_config)
