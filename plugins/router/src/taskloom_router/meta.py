"""Reading request metadata that the kernel may declare as a typed field or pass as an extra.

``RequestMeta`` allows extra keys. Some values the router reads started as extras and
become typed fields as the kernel grows (``budget_remaining_usd``,
``budget_remaining_tokens`` from the agent loop; ``attempt`` and ``escalation_reason``
from the workflow engine), so the router finds them either way.
"""

from __future__ import annotations

from typing import Any

from taskloom.types import RequestMeta


def meta_value(meta: RequestMeta, name: str) -> Any:
    """``getattr(meta, name, None)`` for a value the kernel declares as a typed field or
    passes as an extra key, without the cost of pydantic's ``__getattr__`` on a miss."""
    extra = meta.__pydantic_extra__
    if extra:
        value = extra.get(name)
        if value is not None:
            return value
    return meta.__dict__.get(name)


def tokens_denial(prompt: int, max_tokens: int | None, left: int) -> str:
    need = f"{prompt} prompt" + (f" + {max_tokens} max output" if max_tokens else "")
    return (
        f"the call needs about {prompt + (max_tokens or 0)} tokens ({need}) and the run has {left} tokens left; "
        "raise the budget's tokens or shorten the prompt"
    )
