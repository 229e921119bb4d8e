"""``local-executor``: runs workflow tasks in this process, on the driver's event loop and
kernel (executor ``local``, the default).

The executor itself lives in :mod:`taskloom.builtin.local_runner`, imported the first time
a workflow runs, so that loading the plugin does not import the workflow engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskloom import hookimpl
from taskloom.lazy import lazy_getattr

if TYPE_CHECKING:
    from taskloom.config import Settings

    from .local_runner import LocalExecutor

__getattr__ = lazy_getattr(__name__, {"LocalExecutor": "taskloom.builtin.local_runner"})


def _local_executor(settings: Settings) -> Any:
    from .local_runner import LocalExecutor

    return LocalExecutor()


@hookimpl
def taskloom_register_executors(register: Callable[..., None], settings: Settings) -> None:
    register("local", _local_executor)


__all__ = ["LocalExecutor", "taskloom_register_executors"]
