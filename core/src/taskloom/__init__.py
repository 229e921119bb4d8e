"""taskloom: run LLM agents and multi-agent workflows on a small, pluggable kernel.

The public API is re-exported here and imported lazily, so ``import taskloom`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from .lazy import lazy_getattr

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("taskloom")
"""Decorator for hook implementations: ``@taskloom.hookimpl``."""

_LAZY = {
    "load_kernel": "taskloom.kernel",
    "Kernel": "taskloom.kernel",
    "Agent": "taskloom.agent",
    "AgentLimits": "taskloom.agent",
    "AgentResult": "taskloom.agent",
    "Budget": "taskloom.agent",
    "run_agent": "taskloom.agent",
    "Tool": "taskloom.tools",
    "ToolResult": "taskloom.tools",
    "Message": "taskloom.types",
    "ModelRequest": "taskloom.types",
    "ModelResponse": "taskloom.types",
    "StreamDelta": "taskloom.types",
    "Capabilities": "taskloom.types",
    "ToolCall": "taskloom.types",
    "ToolSpec": "taskloom.types",
    "Usage": "taskloom.types",
    "Cost": "taskloom.types",
    "Event": "taskloom.types",
    "Action": "taskloom.types",
    "Denial": "taskloom.types",
    "Secret": "taskloom.config",
    "Settings": "taskloom.config",
    "ModelConfig": "taskloom.config",
}

if TYPE_CHECKING:
    from .agent import Agent, AgentLimits, AgentResult, Budget, run_agent
    from .config import ModelConfig, Secret, Settings
    from .kernel import Kernel, load_kernel
    from .tools import Tool, ToolResult
    from .types import (
        Action,
        Capabilities,
        Cost,
        Denial,
        Event,
        Message,
        ModelRequest,
        ModelResponse,
        StreamDelta,
        ToolCall,
        ToolSpec,
        Usage,
    )


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "Action",
    "Agent",
    "AgentLimits",
    "AgentResult",
    "Budget",
    "Capabilities",
    "Cost",
    "Denial",
    "Event",
    "Kernel",
    "Message",
    "ModelConfig",
    "ModelRequest",
    "ModelResponse",
    "Secret",
    "Settings",
    "StreamDelta",
    "Tool",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "__version__",
    "hookimpl",
    "load_kernel",
    "run_agent",
]
