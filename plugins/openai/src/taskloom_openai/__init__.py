"""taskloom provider for OpenAI-compatible servers (OpenAI, vLLM, llama.cpp server, LM Studio).

Configure a model alias with ``provider = "openai"``; see ``docs/providers.md``.
"""

__version__ = "0.1.0"
