"""The scripted provider passes the provider conformance suite (its answers are queued
per check in ``prepare``)."""

from __future__ import annotations

from typing import Any

import pytest
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


# --------------------------------------------------------------------- the suite can fail


class _Suite(TestScriptedConformance):
    __test__ = False  # used by the tests below, not collected itself


@pytest.mark.anyio
async def test_suite_catches_a_stream_that_differs() -> None:
    provider = ScriptedProvider("broken").add_text("Blue.").add_text("Red.")
    with pytest.raises(AssertionError, match="streamed text differs"):
        await _Suite().test_streaming_equals_complete(provider)


@pytest.mark.anyio
async def test_suite_catches_an_unclassified_error() -> None:
    provider = ScriptedProvider("broken").add_error(ValueError("raw failure"))
    with pytest.raises(pytest.fail.Exception, match="raw ValueError"):
        await ProviderConformance().test_errors_classified(provider)


@pytest.mark.anyio
async def test_suite_catches_a_dangling_request() -> None:
    class Leaky(ScriptedProvider):
        async def stream(self, request: Any) -> Any:
            self.in_flight += 1  # never decremented: a request left dangling
            async for delta in super().stream(request):
                yield delta

    provider = Leaky("leaky").add_text(LONG).add_text("ok")
    with pytest.raises(AssertionError, match="left a request in flight"):
        await ProviderConformance().test_cancellation_mid_stream(provider)


@pytest.mark.anyio
async def test_suite_catches_a_counter_that_never_counts() -> None:
    class Stuck(ScriptedProvider):
        async def stream(self, request: Any) -> Any:
            async for delta in super().stream(request):
                self.in_flight = 0  # claims nothing is open while a stream is
                yield delta

    provider = Stuck("stuck").add_text(LONG).add_text("ok")
    with pytest.raises(AssertionError, match="did not count the open stream"):
        await ProviderConformance().test_cancellation_mid_stream(provider)


@pytest.mark.anyio
async def test_suite_requires_an_in_flight_counter_unless_opted_out() -> None:
    class Uncounted:
        """A provider with no ``in_flight``: it forwards to a scripted one."""

        def __init__(self) -> None:
            self.inner = ScriptedProvider("u").add_text(LONG).add_text("ok")

        def stream(self, request: Any) -> Any:
            return self.inner.stream(request)

        async def complete(self, request: Any) -> Any:
            return await self.inner.complete(request)

    with pytest.raises(pytest.fail.Exception, match="no integer `in_flight` counter"):
        await ProviderConformance().test_cancellation_mid_stream(Uncounted())

    class OptedOut(ProviderConformance):
        tracks_in_flight = False

    await OptedOut().test_cancellation_mid_stream(Uncounted())
