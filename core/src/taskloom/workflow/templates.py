"""Prompt templates and ``when`` conditions, in a *sandboxed* Jinja2 environment.

The context is ``inputs`` (the run's inputs) and ``outputs`` (the outputs of the tasks the
task ``needs``). Undefined names are errors (StrictUndefined). Dicts and lists render as
JSON, so ``{{ outputs.classify }}`` gives the model valid JSON.

:func:`references` finds the ``outputs.X`` / ``outputs["X"]`` a template or condition uses,
by walking the Jinja2 AST, so the checks can insist that each one is a dependency, and
:func:`private_names` finds the ``_``-prefixed names (``''.__class__``) the sandbox refuses.
At run time the sandbox still refuses any it meets (say through a key from an input):
rendering fails with ``SecurityError`` and the task fails with that message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import SandboxedEnvironment

from ..errors import ConfigError


def _finalize(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


_ENV = SandboxedEnvironment(undefined=StrictUndefined, finalize=_finalize, autoescape=False, keep_trailing_newline=True)


class TemplateProblem(ConfigError):
    """A template or condition that does not parse or cannot be rendered."""


@lru_cache(maxsize=4096)
def _template(source: str) -> Any:
    return _ENV.from_string(source)


@lru_cache(maxsize=4096)
def _expression(source: str) -> Callable[..., Any]:
    return _ENV.compile_expression(source, undefined_to_none=False)


_MARKERS = ("{{", "{%", "{#")


def is_literal(source: str) -> bool:
    """True when ``source`` has no Jinja2 syntax: it renders as itself, no compiling needed."""
    return "{{" not in source and "{%" not in source and "{#" not in source  # _MARKERS, without a generator


@lru_cache(maxsize=4096)
def _parse(source: str) -> Any:
    return _ENV.parse(source)


def parse_error(source: str, *, expression: bool = False) -> str | None:
    """Why ``source`` does not parse, or None."""
    if not expression and is_literal(source):
        return None
    try:
        _parse(_as_template(source) if expression else source)
    except TemplateError as exc:
        return str(exc)
    return None


def _as_template(expression: str) -> str:
    return "{{ (" + expression + ") }}"


def references(source: str, *, expression: bool = False) -> tuple[set[str], set[str]]:
    """The task ids read through ``outputs`` and the input names read through ``inputs``."""
    if not expression and is_literal(source):
        return set(), set()
    tree = _parse(_as_template(source) if expression else source)
    outs: set[str] = set()
    ins: set[str] = set()
    methods = {id(call.node) for call in tree.find_all(nodes.Call)}  # outputs.items() is a method
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if id(node) in methods:
            continue
        base = node.node
        if not isinstance(base, nodes.Name):
            continue
        if isinstance(node, nodes.Getattr):
            key: object = node.attr
        elif isinstance(node.arg, nodes.Const):
            key = node.arg.value
        else:
            continue
        if not isinstance(key, str):
            continue
        if base.name == "outputs":
            outs.add(key)
        elif base.name == "inputs":
            ins.add(key)
    return outs, ins


def private_names(source: str, *, expression: bool = False) -> list[str]:
    """Attribute and key names starting with ``_`` that ``source`` reads (``x.__class__``,
    ``x["_y"]``, ``x | attr("__dict__")``): the sandbox refuses them, so the checks report
    them before the run instead of at render time."""
    if not expression and is_literal(source):
        return []
    tree = _parse(_as_template(source) if expression else source)
    found: list[str] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name: object = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            arg = node.args[0]
            name = arg.value if isinstance(arg, nodes.Const) else None
        if isinstance(name, str) and name.startswith("_") and name not in found:
            found.append(name)
    return sorted(found)


def render(source: str, context: dict[str, Any]) -> str:
    if is_literal(source):
        return source
    try:
        return str(_template(source).render(context))
    except TemplateError as exc:
        raise TemplateProblem(f"prompt template: {type(exc).__name__}: {exc}") from None


def evaluate(expression: str, context: dict[str, Any]) -> bool:
    try:
        return bool(_expression(expression)(**context))
    except TemplateError as exc:
        raise TemplateProblem(f"condition {expression!r}: {type(exc).__name__}: {exc}") from None


__all__ = ["TemplateProblem", "evaluate", "parse_error", "private_names", "references", "render"]
