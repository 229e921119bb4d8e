"""The provider conformance suite: one contract every model provider keeps.

Provider authors subclass :class:`ProviderConformance` in a test module and say how to
make their provider; pytest then runs every check against it::

    from taskloom.testing.conformance import ProviderConformance

    class TestMyProvider(ProviderConformance):
        def make_provider(self):
            return MyProvider(...)

The checks: a completion, streaming equals non-streaming (temperature 0, fixed seed),
a tool-call round trip with a forced tool choice, usage reported, errors classified (a
request that must fail raises a kernel error class, not a raw exception), cancellation
mid-stream leaves no dangling request, token counts, and embeddings when the provider
has them. Override the class attributes and hooks below to fit a provider (a test double
queues its answers in :meth:`prepare`; a remote provider may choose another failing
request in :meth:`failing_request`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anyio
import pytest

from taskloom import errors
from taskloom.gateway import StreamAssembler
from taskloom.types import Capabilities, Message, ModelRequest, ModelResponse, Provider, StreamDelta, ToolSpec

WEATHER_TOOL = ToolSpec(
    name="get_weather",
    description="Get the current weather in a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city name."},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
)


class ProviderConformance:
    """Base class of a provider's conformance tests. Implement :meth:`make_provider`."""

    model: ClassVar[str] = "test"
    """The alias put in requests."""
    prompt: ClassVar[str] = "Name one colour of the rainbow."
    max_tokens: ClassVar[int] = 16
    seed: ClassVar[int] = 7
    tool: ClassVar[ToolSpec] = WEATHER_TOOL
    tool_prompt: ClassVar[str] = "What is the weather in Paris, in celsius?"
    cancel_after_deltas: ClassVar[int] = 1
    expected_errors: ClassVar[tuple[type[errors.ProviderError], ...]] = (
        errors.ContextWindowExceeded,
        errors.BadRequest,
    )
    """The classes a request from :meth:`failing_request` may fail with."""
    idle_timeout: ClassVar[float] = 30.0
    """Seconds a request after a cancelled stream may take (a stuck provider fails)."""
    tracks_in_flight: ClassVar[bool] = True
    """The provider exposes ``in_flight`` (requests started and not finished). Set False
    only for a provider that cannot count them: the cancellation check then shows less."""

    # ------------------------------------------------------------------ hooks

    def make_provider(self) -> Provider:
        raise NotImplementedError("subclass ProviderConformance and return your provider from make_provider()")

    def prepare(self, provider: Any, check: str) -> None:
        """Called before each check (named as the test without ``test_``); a test double
        queues its answers here. Real providers need nothing."""

    def request(self, **changes: Any) -> ModelRequest:
        base: dict[str, Any] = {
            "model": self.model,
            "messages": [Message.user(self.prompt)],
            "temperature": 0.0,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
        }
        base.update(changes)
        return ModelRequest(**base)

    def failing_request(self, provider: Any) -> ModelRequest:
        """A request the provider must refuse: by default a prompt far longer than the
        context window it reports."""
        window = provider.capabilities().context_window
        return self.request(messages=[Message.user("lorem ipsum " * (window * 2))])

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def provider(self, anyio_backend: str) -> AsyncIterator[Any]:
        made = self.make_provider()
        if inspect.isawaitable(made):
            made = await made
        try:
            yield made
        finally:
            await made.aclose()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    async def collect(provider: Any, request: ModelRequest) -> tuple[list[StreamDelta], ModelResponse]:
        deltas: list[StreamDelta] = []
        assembler = StreamAssembler()
        async for delta in provider.stream(request):
            assert isinstance(delta, StreamDelta), f"stream() yielded {type(delta).__name__}, not a StreamDelta"
            deltas.append(delta)
            assembler.add(delta)
        return deltas, assembler.response()

    # ------------------------------------------------------------------ checks

    def test_protocol(self, provider: Any) -> None:
        assert isinstance(provider, Provider), "the provider lacks a method of taskloom.types.Provider"
        assert isinstance(provider.name, str) and provider.name
        caps = provider.capabilities()
        assert isinstance(caps, Capabilities)
        assert caps.context_window > 0

    @pytest.mark.anyio
    async def test_completion(self, provider: Any) -> None:
        self.prepare(provider, "completion")
        response = await provider.complete(self.request())
        assert isinstance(response, ModelResponse)
        assert response.message.role == "assistant"
        assert response.text.strip(), "the completion has no text"
        assert response.finish_reason in ("stop", "length")

    @pytest.mark.anyio
    async def test_streaming_equals_complete(self, provider: Any) -> None:
        self.prepare(provider, "streaming_equals_complete")
        whole = await provider.complete(self.request())
        deltas, streamed = await self.collect(provider, self.request())
        assert sum(1 for d in deltas if d.text) >= 1, "the stream sent no text"
        assert streamed.text == whole.text, "the streamed text differs from the completion at temperature 0"
        assert streamed.finish_reason == whole.finish_reason
        assert streamed.usage.output_tokens == whole.usage.output_tokens

    @pytest.mark.anyio
    async def test_tool_call_round_trip(self, provider: Any) -> None:
        import jsonschema

        if not provider.capabilities().tools:
            pytest.skip("the provider does not support tools")
        self.prepare(provider, "tool_call_round_trip")
        messages = [Message.user(self.tool_prompt)]
        first = await provider.complete(
            self.request(messages=messages, tools=[self.tool], tool_choice=self.tool.name, max_tokens=64)
        )
        assert first.tool_calls, f"a forced tool choice gave no tool call (text: {first.text!r})"
        call = first.tool_calls[0]
        assert call.name == self.tool.name
        assert call.id
        assert call.arguments is not None, f"the tool arguments are not a JSON object: {call.raw_arguments!r}"
        jsonschema.validate(call.arguments, self.tool.parameters)
        assert first.finish_reason == "tool_calls"
        messages += [first.message, Message.tool(call.id, call.name, "Sunny, 21 degrees celsius.")]
        second = await provider.complete(self.request(messages=messages, tools=[self.tool], tool_choice="none"))
        assert not second.tool_calls, "tool_choice 'none' still produced a tool call"
        assert second.text.strip(), "no answer after the tool result"

    @pytest.mark.anyio
    async def test_tool_call_streamed(self, provider: Any) -> None:
        if not provider.capabilities().tools:
            pytest.skip("the provider does not support tools")
        self.prepare(provider, "tool_call_streamed")
        request = self.request(
            messages=[Message.user(self.tool_prompt)], tools=[self.tool], tool_choice=self.tool.name, max_tokens=64
        )
        _, streamed = await self.collect(provider, request)
        assert streamed.tool_calls and streamed.tool_calls[0].name == self.tool.name
        assert streamed.tool_calls[0].arguments is not None
        assert streamed.finish_reason == "tool_calls"

    @pytest.mark.anyio
    async def test_usage_reported(self, provider: Any) -> None:
        self.prepare(provider, "usage_reported")
        response = await provider.complete(self.request())
        assert response.usage.input_tokens > 0, "input tokens not reported"
        assert response.usage.output_tokens > 0, "output tokens not reported"
        deltas, streamed = await self.collect(provider, self.request())
        assert any(d.usage is not None for d in deltas), "the stream never reported usage"
        assert streamed.usage.input_tokens > 0 and streamed.usage.output_tokens > 0

    @pytest.mark.anyio
    async def test_errors_classified(self, provider: Any) -> None:
        self.prepare(provider, "errors_classified")
        request = self.failing_request(provider)
        try:
            await provider.complete(request)
        except errors.ProviderError as exc:
            error = exc
        except Exception as exc:
            pytest.fail(
                f"the failure surfaced as a raw {type(exc).__name__} ({exc}); "
                "map provider failures to taskloom.errors classes so the gateway can classify them"
            )
        else:
            pytest.fail("the request that must fail succeeded")
        assert isinstance(error, self.expected_errors), (
            f"expected one of {[c.__name__ for c in self.expected_errors]}, got {type(error).__name__}: {error}"
        )
        assert str(error), "the error has no message"

    @pytest.mark.anyio
    async def test_cancellation_mid_stream(self, provider: Any) -> None:
        self.prepare(provider, "cancellation_mid_stream")
        request = self.request(max_tokens=max(self.max_tokens, 64))
        if self.tracks_in_flight and not isinstance(getattr(provider, "in_flight", None), int):
            pytest.fail(
                "the provider has no integer `in_flight` counter (requests started and not finished); "
                "add one, or set tracks_in_flight = False on the conformance subclass"
            )
        received = 0
        open_while_streaming = 0
        with anyio.CancelScope() as scope:
            stream = provider.stream(request)
            try:
                async for delta in stream:
                    if delta.text or delta.arguments:
                        received += 1
                    if received >= self.cancel_after_deltas:
                        open_while_streaming = getattr(provider, "in_flight", 0)
                        scope.cancel()
                        await anyio.sleep(0)  # cancellation is delivered here, mid-stream
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
        assert scope.cancelled_caught, "the stream ended before it could be cancelled; ask for a longer answer"
        if self.tracks_in_flight:
            # A counter stuck at 0 would pass the check below without proving anything.
            assert open_while_streaming >= 1, "`in_flight` did not count the open stream"
            assert provider.in_flight == 0, "a cancelled stream left a request in flight"
        with anyio.fail_after(self.idle_timeout):
            after = await provider.complete(self.request())
        assert after.text.strip(), "the provider did not answer after a cancelled stream"

    @pytest.mark.anyio
    async def test_count_tokens(self, provider: Any) -> None:
        short = provider.count_tokens([Message.user("Hello.")])
        longer = provider.count_tokens([Message.user("Hello. " * 20)])
        assert isinstance(short, int) and short > 0
        assert longer > short

    @pytest.mark.anyio
    async def test_embeddings(self, provider: Any) -> None:
        if not provider.capabilities().embeddings:
            pytest.skip("the provider has no embeddings")
        self.prepare(provider, "embeddings")
        first = await provider.embed(["the cat sat", "a dog barked"])
        again = await provider.embed(["the cat sat"])
        assert len(first) == 2 and len(first[0]) == len(first[1]) > 0
        assert again[0] == pytest.approx(first[0], rel=1e-4, abs=1e-5), "embeddings are not deterministic"


__all__ = ["WEATHER_TOOL", "ProviderConformance"]
