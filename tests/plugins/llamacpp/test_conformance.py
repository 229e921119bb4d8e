"""The llamacpp provider passes the provider conformance suite, on the real SmolLM2 model."""

from __future__ import annotations

from taskloom.testing.conformance import ProviderConformance
from taskloom_llamacpp.provider import LlamaCppProvider

from .conftest import make


class TestLlamaCppConformance(ProviderConformance):
    model = "local"

    def make_provider(self) -> LlamaCppProvider:
        return make()  # shares the session's loaded model
