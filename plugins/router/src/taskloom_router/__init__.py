"""taskloom-router: tiered model routing for ``model = "auto"`` agents.

Public API: :class:`Router` (the plugin), :func:`router_of` (a kernel's router),
:func:`run_escalating` (re-run a failed agent one tier up), and the errors. Imported
lazily, so loading the plugin does not import the agent loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom.lazy import lazy_getattr

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


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "Attempt",
    "EscalatedRun",
    "EscalationExhausted",
    "NoDeploymentAvailable",
    "Router",
    "router_of",
    "run_escalating",
]
