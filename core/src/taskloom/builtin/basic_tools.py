"""``basic-tools``: small, safe tools that need no extra dependency and no sandbox.

- ``word_count``: words, characters and lines of a text.
- ``calculator``: arithmetic on a restricted expression grammar (numbers,
  ``+ - * / // % **`` and parentheses), exact with rationals until it is printed. The
  expression is parsed with :mod:`ast` and walked by hand; nothing is ever passed to
  ``eval``, so no name, call or attribute can run.
- ``current_time``: the current date and time in an IANA time zone.

They give an agent something real to call when no code sandbox or MCP server is
installed, which is what the offline main job relies on.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from datetime import datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from taskloom import hookimpl
from taskloom.config import Settings

NAME = "basic-tools"

# Bounds that keep one call cheap whatever the model sends.
MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 1000
SIGNIFICANT_DIGITS = 15
MAX_BITS = 12_000

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


class CalculatorError(ValueError):
    """The expression is not one the calculator accepts; the message says why."""


def word_count(text: str) -> dict[str, int]:
    """Count the words, characters and lines of a text.

    Args:
        text: The text to count.
    """
    return {"words": len(text.split()), "characters": len(text), "lines": len(text.splitlines()) or int(bool(text))}


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. "(2 + 3) * 4 / 7".

    Args:
        expression: Numbers, + - * / // % ** and parentheses only.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression is {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an arithmetic expression: {exc.msg}") from None
    try:
        return _format(_evaluate(tree.body))
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None


Number = Fraction | float


def _evaluate(node: ast.expr) -> Number:
    # Fractions keep + - * / // % exact with Python's own semantics; only a fractional
    # power falls back to a float.
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        op = _BINARY.get(type(node.op))
        if op is not None:
            result: Number = op(left, right)
            if (
                isinstance(result, Fraction)
                and result.numerator.bit_length() + result.denominator.bit_length() > MAX_BITS
            ):
                raise CalculatorError(f"the result is too large (at most about {MAX_BITS * 3 // 10} digits)")
            return result
    raise CalculatorError(f"{type(node).__name__} is not allowed; use numbers, + - * / // % ** and parentheses")


def _power(base: Number, exponent: Number) -> Number:
    if abs(float(exponent)) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {_format(exponent)} is too large (at most {MAX_EXPONENT})")
    if isinstance(exponent, Fraction) and exponent.denominator == 1 and isinstance(base, Fraction):
        size = max(base.numerator.bit_length(), base.denominator.bit_length()) * abs(int(exponent))
        if size > MAX_BITS:
            raise CalculatorError(f"the result would have about {size * 3 // 10} digits (at most {MAX_BITS * 3 // 10})")
        power: Fraction = base ** int(exponent)
        return power
    result: float | complex = float(base) ** float(exponent)
    if isinstance(result, complex):
        raise CalculatorError("the result is not a real number")
    return result


def _format(value: Number) -> str:
    if isinstance(value, Fraction) and value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.{SIGNIFICANT_DIGITS}g}"


def current_time(timezone: str = "UTC") -> str:
    """The current date and time, in ISO 8601, in an IANA time zone.

    Args:
        timezone: An IANA time zone name such as "Europe/Paris"; UTC by default.
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Paris' or 'UTC'") from None
    return datetime.now(zone).isoformat(timespec="seconds")


@hookimpl
def taskloom_register_tools(register: Callable[..., Any], settings: Settings) -> None:
    for tool in (word_count, calculator, current_time):
        register(tool)
