"""taskloom provider for Ollama's native API (``/api/chat``, ``/api/embed``, ``/api/tags``).

Configure a model alias with ``provider = "ollama"``; see ``docs/providers.md``.
"""

__version__ = "0.1.0"
