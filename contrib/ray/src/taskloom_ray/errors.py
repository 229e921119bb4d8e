"""Errors of the Ray executor."""

from __future__ import annotations

from taskloom.errors import ConfigError, TaskloomError


class RayClusterError(ConfigError):
    """Ray could not be started or reached. A configuration problem: attempts are not retried."""


class WorkerLost(TaskloomError):
    """The Ray worker process (or actor) running an attempt died. Transient: the workflow's
    retry policy (the task's ``retries``) runs the attempt again on a live worker."""

    transient = True


class RemoteTaskError(TaskloomError):
    """The attempt raised on the Ray worker (not an agent failure, which is an outcome)."""


__all__ = ["RayClusterError", "RemoteTaskError", "WorkerLost"]
