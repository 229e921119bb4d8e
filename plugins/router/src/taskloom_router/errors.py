"""Errors the router raises. Each says what was tried and what to do."""

from __future__ import annotations

from taskloom.errors import ProviderError, TaskloomError


class NoDeploymentAvailable(ProviderError):
    """Every deployment the router could use is down, rate-limited or over budget.

    ``tried`` maps each deployment (``tier/alias``) to why it was skipped. Transient: the
    deployments come back when their cooldown, circuit or rate window passes.
    """

    transient = True

    def __init__(self, tried: dict[str, str]) -> None:
        self.tried = dict(tried)
        lines = "; ".join(f"{name}: {why}" for name, why in tried.items()) or "no tiers are configured"
        super().__init__(
            f"router: no deployment can take this call ({lines}); wait for a cooldown to pass, raise the limits, "
            "or add deployments to [plugins.router] tiers",
            model="auto",
        )


class EscalationExhausted(TaskloomError):
    """There is no tier left to escalate to (the top was reached or the bound is used up)."""
