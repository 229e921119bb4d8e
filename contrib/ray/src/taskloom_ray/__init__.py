"""taskloom-ray: the ``ray`` executor, which runs workflow tasks on a Ray cluster.

Loading this plugin imports neither Ray nor the executor; both are imported when a
kernel first creates the executor (``[taskloom] executor = "ray"``) and Ray on the first
attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from taskloom import hookimpl

if TYPE_CHECKING:
    from pydantic import BaseModel
    from taskloom.config import Settings

    from .executor import RayExecutor

PLUGIN = "ray"


@hookimpl
def taskloom_config_model() -> type[BaseModel]:
    from .config import RayConfig

    return RayConfig


def make_executor(settings: Settings) -> RayExecutor:
    from .executor import RayExecutor

    return RayExecutor(settings, settings.plugin_config(PLUGIN))


@hookimpl
def taskloom_register_executors(register: Callable[..., None], settings: Settings) -> None:
    register("ray", make_executor)


__all__ = ["make_executor", "taskloom_config_model", "taskloom_register_executors"]
