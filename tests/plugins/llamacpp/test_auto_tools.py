"""``tool_choice="auto"`` on the real SmolLM2 model, the parsing of a call the model chooses
to make, and the event loop staying free while the model generates."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import anyio
import jsonschema
import pytest
from taskloom.gateway import StreamAssembler
from taskloom.types import Message, ModelRequest, ModelResponse, StreamDelta, ToolCall
from taskloom_llamacpp import models
from taskloom_llamacpp.engine import Generation
from taskloom_llamacpp.provider import LlamaCppProvider

from .conftest import ADD, WEATHER

pytestmark = pytest.mark.anyio

OFFERED = {t.name: t for t in (WEATHER, ADD)}

# Two earlier turns in which the assistant called a tool: with them SmolLM2 sometimes calls
# one again, sometimes answers in text. Either is a valid result of "auto".
FEW_SHOT = [
    Message.user("What is the weather in Rome?"),
    Message.assistant("", [ToolCall.parse("c1", "get_weather", {"city": "Rome", "unit": "c"})]),
    Message.tool("c1", "get_weather", "Sunny, 20 C"),
    Message.assistant("It is sunny in Rome, 20 C."),
    Message.user("What is the weather in Oslo?"),
    Message.assistant("", [ToolCall.parse("c2", "get_weather", {"city": "Oslo", "unit": "c"})]),
    Message.tool("c2", "get_weather", "Snow, -3 C"),
    Message.assistant("It is snowing in Oslo, -3 C."),
]


def auto_request(seed: int, prompt: str = "What is the weather in Paris?") -> ModelRequest:
    return ModelRequest(
        model="local",
        messages=[*FEW_SHOT, Message.user(prompt)],
        tools=[WEATHER, ADD],
        tool_choice="auto",
        temperature=0.7,
        seed=seed,
        max_tokens=48,
    )


def assemble(deltas: list[StreamDelta]) -> ModelResponse:
    assembler = StreamAssembler()
    for d in deltas:
        assembler.add(d)
    return assembler.response()


def check_auto_result(response: ModelResponse) -> None:
    """Either a valid call of an offered tool, or plain text; never half of each."""
    if response.tool_calls:
        assert response.finish_reason == "tool_calls"
        assert not response.text.strip(), f"text next to a tool call: {response.text!r}"
        for call in response.tool_calls:
            assert call.name in OFFERED, f"the model called {call.name!r}, which was not offered"
            assert call.arguments is not None, f"arguments are not a JSON object: {call.raw_arguments!r}"
            assert json.loads(call.raw_arguments) == call.arguments
            jsonschema.validate(call.arguments, OFFERED[call.name].parameters)
    else:
        assert response.finish_reason in ("stop", "length")
        assert response.text.strip(), "neither a tool call nor text"
        assert not response.text.lstrip().startswith("<tool_call>"), "an unparsed call was returned as text"


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_auto_tool_choice_is_a_valid_call_or_text(llama_provider: LlamaCppProvider, seed: int) -> None:
    request = auto_request(seed)
    response = await llama_provider.complete(request)
    check_auto_result(response)
    streamed = assemble([d async for d in llama_provider.stream(request)])
    check_auto_result(streamed)
    # Same seed, same prompt: the stream takes the same decision as complete().
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [(c.name, c.arguments) for c in response.tool_calls]
    assert streamed.text == response.text


async def test_auto_without_tools_offered_is_text(llama_provider: LlamaCppProvider) -> None:
    job = llama_provider.job(auto_request(1).model_copy(update={"tools": []}))
    assert job.mode == "text"
    job = llama_provider.job(auto_request(1))
    assert job.mode == "auto" and set(job.tools) == set(OFFERED)


# --------------------------------------------------------------------------- the parsing path


class ScriptedOpening(Generation):
    """Test double for one thing only: the first, free-text phase of an ``auto`` generation
    "emits" the given pieces instead of sampling them, so the test decides whether the model
    opened a tool call. Everything after that (choosing the tool name under a grammar,
    writing the arguments under the schema's grammar) runs on the real model."""

    def __init__(self, model: models.LoadedModel, job: Any, opening: list[str]) -> None:
        super().__init__(model, job)
        self.opening: list[str] | None = opening

    def _sample(self, tokens: list[int], grammar: Any) -> Generator[str, None, None]:
        if grammar is None and self.opening is not None:
            pieces, self.opening = self.opening, None
            return self._scripted(pieces)
        return super()._sample(tokens, grammar)

    def _scripted(self, pieces: list[str]) -> Generator[str, None, None]:
        for piece in pieces:
            self.output_tokens += 1
            self._budget -= 1
            yield piece


def run_scripted(provider: LlamaCppProvider, opening: list[str], request: ModelRequest) -> list[StreamDelta]:
    model = provider.loaded()
    job = provider.job(request)
    assert job.mode == "auto"
    with model.exclusive_sync():
        return list(ScriptedOpening(model, job, opening).deltas())


@pytest.mark.parametrize(
    "opening",
    [["<tool_call>"], ["<to", "ol_", "call>"], ["\n ", "<tool_call>\n"], ["<", "tool_call", ">", '\n{"name'], []],
    ids=["whole", "split", "after-whitespace", "with-more-text", "empty-opening"],
)
def test_a_call_the_model_opens_is_parsed(llama_provider: LlamaCppProvider, opening: list[str]) -> None:
    deltas = run_scripted(llama_provider, opening, auto_request(5, "Add 2 and 3."))
    response = assemble(deltas)
    if not opening:
        # Nothing generated: an empty text answer, no call.
        assert response.tool_calls == [] and response.text == ""
        return
    assert response.text == "", f"text leaked out of a tool call: {response.text!r}"
    [call] = response.tool_calls
    assert call.id.startswith("call_")
    assert call.name in OFFERED
    assert call.arguments is not None, call.raw_arguments
    jsonschema.validate(call.arguments, OFFERED[call.name].parameters)
    assert response.finish_reason == "tool_calls"
    assert response.usage.output_tokens > len(opening), "the call's tokens are counted as output"


@pytest.mark.parametrize(
    ("opening", "text"),
    [
        (["Sure", ", it is sunny."], "Sure, it is sunny."),
        (["<to", "day> is sunny"], "<today> is sunny"),  # held back while it may open a call, then let go
        ([" <tool", "box>"], " <toolbox>"),
        (["<tool_call"], "<tool_call"),  # cut short before the tag closed: text, not a call
    ],
)
def test_text_that_is_not_a_call_is_kept_verbatim(
    llama_provider: LlamaCppProvider, opening: list[str], text: str
) -> None:
    deltas = run_scripted(llama_provider, opening, auto_request(5))
    response = assemble(deltas)
    assert response.tool_calls == []
    assert response.text == text
    assert response.finish_reason == "stop"


# --------------------------------------------------------------------------- the event loop


async def ticks_during(work: Callable[[], Any]) -> tuple[float, list[float]]:
    """Run ``work`` while a ticker task sleeps 5 ms at a time; the tick times and how long
    ``work`` took. A generation that blocked the event loop would leave no ticks."""
    ticks: list[float] = []
    elapsed = 0.0

    async def ticker() -> None:
        while True:
            await anyio.sleep(0.005)
            ticks.append(time.perf_counter())

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.02)  # the ticker is running
        start = time.perf_counter()
        await work()
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return elapsed, [t for t in ticks if t >= start and t <= start + elapsed]


def assert_loop_ran(elapsed: float, ticks: list[float], max_gap_share: float = 0.5) -> None:
    assert elapsed > 0.15, f"the generation took only {elapsed:.3f} s: too short to tell; ask for more tokens"
    assert len(ticks) >= 5, f"the event loop ticked {len(ticks)} times during a {elapsed:.2f} s generation: blocked"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < max_gap_share * elapsed, f"the event loop stalled {max(gaps):.2f} s of {elapsed:.2f} s"


LONG = ModelRequest(
    model="local", messages=[Message.user("Write a long story about a dragon.")], temperature=0, max_tokens=24
)


async def test_event_loop_runs_during_complete(llama_provider: LlamaCppProvider) -> None:
    async def work() -> None:
        response = await llama_provider.complete(LONG)
        assert response.usage.output_tokens == 24

    elapsed, ticks = await ticks_during(work)
    assert_loop_ran(elapsed, ticks)


async def test_event_loop_runs_during_stream(llama_provider: LlamaCppProvider) -> None:
    async def work() -> None:
        pieces = [d async for d in llama_provider.stream(LONG)]
        assert pieces[-1].usage is not None and pieces[-1].usage.output_tokens == 24

    elapsed, ticks = await ticks_during(work)
    assert_loop_ran(elapsed, ticks)


def _blocking_work(provider: LlamaCppProvider) -> Callable[[], Any]:
    """The same generation run on the event loop's thread: what the ticker test must catch."""

    async def work() -> None:
        model = provider.loaded()
        job = provider.job(LONG)
        with model.exclusive_sync():
            deltas: Iterator[StreamDelta] = Generation(model, job).deltas()
            for _ in deltas:
                pass

    return work


async def test_the_ticker_catches_a_blocked_loop(llama_provider: LlamaCppProvider) -> None:
    """The ticker test can fail: a generation run on the loop's own thread stalls it."""
    elapsed, ticks = await ticks_during(_blocking_work(llama_provider))
    with pytest.raises(AssertionError, match=r"blocked|stalled"):
        assert_loop_ran(elapsed, ticks)
