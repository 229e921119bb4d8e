"""Errors of the sandbox plugin. Each message says what is wrong and how to fix it."""

from __future__ import annotations

from taskloom.errors import TaskloomError


class SandboxError(TaskloomError):
    """The code could not be run (not: the code ran and failed)."""


class SandboxUnavailable(SandboxError):
    """Isolation was asked for but bubblewrap cannot run here."""


class LimitError(SandboxError, ValueError):
    """A per-call limit is invalid or looser than the configured one."""


class UnknownLanguage(SandboxError, ValueError):
    """A language that is not enabled (or does not exist)."""


class InputFileError(SandboxError):
    """An input file is outside the allowlist, missing, or too large."""
