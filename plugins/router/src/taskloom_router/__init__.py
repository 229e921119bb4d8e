"""taskloom-router: tiered model routing for ``model = "auto"`` agents.

Public API: :class:`Router` (the plugin), :func:`router_of` (a kernel's router),
:func:`run_escalating` (re-run a failed agent one tier up), and the errors. Imported
lazily, so loading the plugin does not import the agent loop.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Router": "taskloom_router.plugin",
    "router_of": "taskloom_router.escalation",
    "run_escalating": "taskloom_router.escalation",
    "Attempt": "taskloom_router.escalation",
    "EscalatedRun": "taskloom_router.escalation",
    "EscalationExhausted": "taskloom_router.errors",
    "NoDeploymentAvailable": "taskloom_router.errors",
}

if TYPE_CHECKING:
    from .errors import EscalationExhausted, NoDeploymentAvailable
    from .escalation import Attempt, EscalatedRun, router_of, run_escalating
    from .plugin import Router


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskloom_router' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "Attempt",
    "EscalatedRun",
    "EscalationExhausted",
    "NoDeploymentAvailable",
    "Router",
    "router_of",
    "run_escalating",
]
