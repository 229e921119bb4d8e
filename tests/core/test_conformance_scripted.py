"""The scripted provider passes the provider conformance suite (its answers are queued
per check in ``prepare``)."""

from __future__ import annotations

from typing import Any

from taskloom.testing import ScriptedProvider
from taskloom.testing.conformance import ProviderConformance

LONG = " ".join(f"word{i}" for i in range(200))


class TestScriptedConformance(ProviderConformance):
    def make_provider(self) -> ScriptedProvider:
        return ScriptedProvider("scripted", context_window=4096)

    def prepare(self, provider: Any, check: str) -> None:
        if check == "completion":
            provider.add_text("Red.")
        elif check in ("streaming_equals_complete", "usage_reported"):
            provider.add_text("Blue is a colour of the rainbow.").add_text("Blue is a colour of the rainbow.")
        elif check == "tool_call_round_trip":
            provider.add_tool_call("get_weather", {"city": "Paris", "unit": "celsius"}).add_text(
                "It is sunny in Paris."
            )
        elif check == "tool_call_streamed":
            provider.add_tool_call("get_weather", {"city": "Paris", "unit": "celsius"})
        elif check == "errors_classified":
            provider.add_error("context", message="the prompt does not fit the context window")
        elif check == "cancellation_mid_stream":
            provider.add_text(LONG).add_text("Green.")
