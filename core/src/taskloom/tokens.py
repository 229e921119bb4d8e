"""Token counting for when a provider has no tokenizer of its own.

OpenAI model families use tiktoken (``o200k_base`` for the 4o / 4.1 / 5 / o-series
families, ``cl100k_base`` for older ones) plus the chat format's per-message overhead.
When an encoding cannot be loaded (offline with no cache), counting falls back to an
estimate of four characters a token, with one warning.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import Any

from .types import Message

log = logging.getLogger("taskloom.tokens")

_TOKENS_PER_MESSAGE = 3
_REPLY_PRIMER = 3
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_warned: set[str] = set()
_lock = threading.Lock()


def encoding_name_for(model: str) -> str:
    name = model.lower().rsplit("/", 1)[-1]
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


@lru_cache(maxsize=8)
def _encoding(name: str) -> Any:
    """The tiktoken encoding, or None when it cannot be loaded (warned once)."""
    try:
        import tiktoken

        return tiktoken.get_encoding(name)
    except Exception as exc:  # network errors, missing cache, missing package
        with _lock:
            if name not in _warned:
                _warned.add(name)
                log.warning(
                    "cannot load the tiktoken encoding %s (%s: %s); token counts are estimated "
                    "at 4 characters a token. Set TIKTOKEN_CACHE_DIR to a folder holding the "
                    "encoding files to count exactly.",
                    name,
                    type(exc).__name__,
                    exc,
                )
        return None


def estimate(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def count_text(text: str, model: str = "gpt-4o") -> int:
    enc = _encoding(encoding_name_for(model))
    if enc is None:
        return estimate(text)
    return len(enc.encode(text, disallowed_special=()))


def count_messages(messages: list[Message], model: str = "gpt-4o") -> int:
    """Prompt tokens of a chat request, per OpenAI's documented message overhead."""
    total = _REPLY_PRIMER
    for m in messages:
        total += _TOKENS_PER_MESSAGE + count_text(m.text, model)
        if m.name:
            total += 1 + count_text(m.name, model)
        for call in m.tool_calls:
            total += count_text(call.name, model) + count_text(call.raw_arguments, model)
    return total
