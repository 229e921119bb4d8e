"""The timeout scope used on every model and tool call."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import sniffio


def deadline(seconds: float) -> AbstractAsyncContextManager[Any]:
    """A timeout scope raising ``TimeoutError``: asyncio's own on asyncio (half the cost of
    a general cancel scope, and this runs on every model and tool call), anyio's elsewhere.
    Use as ``async with deadline(s):``."""
    if sniffio.current_async_library() == "asyncio":
        import asyncio  # imported already: an asyncio loop is running

        return asyncio.timeout(seconds)
    return _AnyioDeadline(seconds)


class _AnyioDeadline:
    def __init__(self, seconds: float) -> None:
        self.scope = anyio.fail_after(seconds)

    async def __aenter__(self) -> None:
        self.scope.__enter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        return self.scope.__exit__(*exc)
