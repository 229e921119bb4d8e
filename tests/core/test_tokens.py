"""Token counting with tiktoken, and the offline fallback."""

from __future__ import annotations

import logging

import pytest
from taskloom import tokens
from taskloom.types import Message


def test_encoding_by_model_family() -> None:
    assert tokens.encoding_name_for("gpt-4o-mini") == "o200k_base"
    assert tokens.encoding_name_for("openai/gpt-4.1") == "o200k_base"
    assert tokens.encoding_name_for("gpt-3.5-turbo") == "cl100k_base"


def test_exact_counts_with_tiktoken() -> None:
    tokens._encoding.cache_clear()
    assert tokens.count_text("hello world", "gpt-4o") == 2
    # 3 primer + (3 + 2) for the message
    assert tokens.count_messages([Message.user("hello world")], "gpt-4o") == 8


def test_offline_fallback_estimates_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    import tiktoken

    def fail(name: str) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", fail)
    tokens._encoding.cache_clear()
    tokens._warned.clear()
    with caplog.at_level(logging.WARNING, logger="taskloom.tokens"):
        assert tokens.count_text("abcdefgh", "gpt-4o") == 2
        assert tokens.count_text("abcd", "gpt-4o") == 1
    warnings = [r for r in caplog.records if "cannot load the tiktoken encoding" in r.getMessage()]
    assert len(warnings) == 1 and "TIKTOKEN_CACHE_DIR" in warnings[0].getMessage()
    tokens._encoding.cache_clear()
