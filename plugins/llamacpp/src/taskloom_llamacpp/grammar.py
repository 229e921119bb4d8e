"""GBNF grammars that constrain llama.cpp's sampling: JSON Schema → grammar for tool
arguments and structured output, and a choice among tool names."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from taskloom.errors import BadRequest

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar


def schema_grammar(schema: dict[str, Any], what: str) -> LlamaGrammar:
    """A grammar whose sentences are exactly the JSON values ``schema`` accepts."""
    return _schema_grammar(json.dumps(schema, sort_keys=True), what)


@lru_cache(maxsize=256)
def _schema_grammar(schema_json: str, what: str) -> LlamaGrammar:
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(schema_json)
    except Exception as exc:
        raise BadRequest(
            f"the JSON Schema of {what} cannot be turned into a llama.cpp grammar ({type(exc).__name__}: {exc}); "
            "simplify the schema (plain types, properties, enum, anyOf and local $refs work)"
        ) from None
    return LlamaGrammar.from_string(gbnf, verbose=False)


def choice_grammar(options: tuple[str, ...]) -> LlamaGrammar:
    """A grammar that accepts exactly one of ``options`` (verbatim)."""
    return _choice_grammar(tuple(options))


@lru_cache(maxsize=256)
def _choice_grammar(options: tuple[str, ...]) -> LlamaGrammar:
    from llama_cpp.llama_grammar import LlamaGrammar

    alternatives = " | ".join(gbnf_literal(o) for o in options)
    return LlamaGrammar.from_string(f"root ::= {alternatives}\n", verbose=False)


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'
