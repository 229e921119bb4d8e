"""Runs ``taskloom <argv>`` with an in-process plugin that registers two plain tools, so
``taskloom mcp serve`` has taskloom tools of its own to offer."""

from __future__ import annotations

import sys

from taskloom import hookimpl
from taskloom.testing import register_plugin


class Arithmetic:
    @hookimpl
    def taskloom_register_tools(self, register, settings):  # type: ignore[no-untyped-def]
        def add(a: int, b: int) -> int:
            """Add two integers.

            Args:
                a: The first.
                b: The second.
            """
            return a + b

        def divide(a: float, b: float) -> float:
            """Divide a by b."""
            return a / b

        register(add)
        register(divide)


if __name__ == "__main__":
    from taskloom.cli import main

    with register_plugin(Arithmetic(), "arith"):
        main(sys.argv[1:])
