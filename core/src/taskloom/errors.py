"""Every error taskloom raises on purpose. Messages say what is wrong and how to fix it.

Provider errors are classified: ``transient`` ones may succeed if tried again (rate limit,
timeout, connection, server error); the others are terminal for that deployment.
"""

from __future__ import annotations


class TaskloomError(Exception):
    """Base of every taskloom error."""

    exit_code = 1


class ConfigError(TaskloomError):
    """The configuration (or a workflow file) is invalid."""

    exit_code = 2


class PluginError(TaskloomError):
    """A plugin could not be found, imported or configured."""

    exit_code = 2


class PolicyDenied(TaskloomError):
    def __init__(self, reason: str, plugin: str = "") -> None:
        self.reason = reason
        self.plugin = plugin
        super().__init__(f"denied by {plugin or 'policy'}: {reason}")


class BudgetExceeded(TaskloomError):
    """A limit (turns, tokens, cost, time) would be or was crossed."""


# ------------------------------------------------------------------ provider errors


class ProviderError(TaskloomError):
    """A model provider failed. ``transient`` says whether trying again may help."""

    transient = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class RateLimitError(ProviderError):
    transient = True


class ProviderTimeout(ProviderError):
    transient = True


class ConnectionFailed(ProviderError):
    transient = True


class ServerError(ProviderError):
    """5xx, 408, 409, or a stream cut short: the server may answer next time."""

    transient = True


class ContextWindowExceeded(ProviderError):
    """The prompt does not fit the model's context window."""


class AuthenticationError(ProviderError):
    """The credentials were refused (401/403) or are missing."""


class BadRequest(ProviderError):
    """The provider refused the request as invalid, or answered with garbage."""


class CircuitOpen(ProviderError):
    """The deployment failed too often recently; it is not tried until it cools down."""

    transient = True


class AllDeploymentsFailed(ProviderError):
    """Every deployment of the fallback chain failed; ``attempts`` lists each failure."""

    def __init__(self, attempts: list[tuple[str, BaseException]]) -> None:
        self.attempts = attempts
        lines = "; ".join(f"{alias}: {type(e).__name__}: {e}" for alias, e in attempts)
        last = attempts[-1][1] if attempts else None
        self.transient = bool(last is not None and getattr(last, "transient", False))
        super().__init__(f"every model in the chain failed ({lines})")


class ToolError(TaskloomError):
    """A tool failed; the message is what the model sees."""
