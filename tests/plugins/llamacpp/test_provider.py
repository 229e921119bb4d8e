"""The llamacpp provider on the real SmolLM2-135M-Instruct model, in process."""

from __future__ import annotations

import contextlib
import json
import time

import anyio
import jsonschema
import pytest
from taskloom.errors import BadRequest, ContextWindowExceeded
from taskloom.types import Message, ModelRequest
from taskloom_llamacpp import models
from taskloom_llamacpp.provider import LlamaCppProvider

from .conftest import ADD, WEATHER, make

pytestmark = pytest.mark.anyio


def ask(text: str, **changes: object) -> ModelRequest:
    fields: dict[str, object] = {"temperature": 0.0, "max_tokens": 16, **changes}
    return ModelRequest(model="local", messages=[Message.user(text)], **fields)  # type: ignore[arg-type]


async def test_chat(llama_provider: LlamaCppProvider) -> None:
    response = await llama_provider.complete(ask("What is the capital of France?"))
    assert response.text.strip()
    assert response.finish_reason in ("stop", "length")
    assert response.model == "smollm2-135m-instruct"
    assert response.provider == "llamacpp"


async def test_streaming_equals_complete(llama_provider: LlamaCppProvider) -> None:
    request = ask("Write one sentence about the sea.", max_tokens=24)
    whole = await llama_provider.complete(request)
    pieces = [d async for d in llama_provider.stream(request)]
    assert len([p for p in pieces if p.text]) > 1, "the answer came in one piece: not streamed"
    assert "".join(p.text for p in pieces) == whole.text
    assert pieces[-1].usage == whole.usage
    assert pieces[-1].finish_reason == whole.finish_reason


@pytest.mark.parametrize("choice", ["get_weather", "add", "required"])
async def test_forced_tool_call_has_valid_arguments(llama_provider: LlamaCppProvider, choice: str) -> None:
    tools = [WEATHER, ADD] if choice != "required" else [ADD]
    request = ask("What is the weather in Paris, and what is 2 plus 3?", tools=tools, tool_choice=choice, max_tokens=64)
    response = await llama_provider.complete(request)
    assert response.finish_reason == "tool_calls"
    [call] = response.tool_calls
    assert call.name == (choice if choice != "required" else "add")
    spec = {t.name: t for t in tools}[call.name]
    assert call.arguments is not None, call.raw_arguments
    jsonschema.validate(call.arguments, spec.parameters)
    assert json.loads(call.raw_arguments) == call.arguments


async def test_required_tool_choice_picks_among_several(llama_provider: LlamaCppProvider) -> None:
    response = await llama_provider.complete(
        ask("Add 2 and 3.", tools=[WEATHER, ADD], tool_choice="required", max_tokens=64)
    )
    [call] = response.tool_calls
    assert call.name in ("get_weather", "add")
    jsonschema.validate(call.arguments, {"get_weather": WEATHER, "add": ADD}[call.name].parameters)


async def test_streamed_tool_call_matches_complete(llama_provider: LlamaCppProvider) -> None:
    request = ask("Weather in Rome?", tools=[WEATHER], tool_choice="get_weather", max_tokens=64)
    whole = await llama_provider.complete(request)
    deltas = [d async for d in llama_provider.stream(request)]
    assert deltas[0].tool_name == "get_weather" and deltas[0].tool_index == 0
    assert "".join(d.arguments for d in deltas) == whole.tool_calls[0].raw_arguments


async def test_unknown_forced_tool_is_a_bad_request(llama_provider: LlamaCppProvider) -> None:
    with pytest.raises(BadRequest, match="names no tool"):
        await llama_provider.complete(ask("hi", tools=[WEATHER], tool_choice="nope"))


async def test_structured_output_validates(llama_provider: LlamaCppProvider) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "colour": {"type": "string", "enum": ["red", "green", "blue"]},
        },
        "required": ["name", "age", "colour"],
        "additionalProperties": False,
    }
    response = await llama_provider.complete(ask("Describe a person as JSON.", output_schema=schema, max_tokens=80))
    assert response.finish_reason == "stop", response.text
    jsonschema.validate(json.loads(response.text), schema)


async def test_stop_sequence_cuts_the_text(llama_provider: LlamaCppProvider) -> None:
    prompt = "Write one sentence about the sea."
    free = await llama_provider.complete(ask(prompt, max_tokens=20))
    stop = free.text.split()[3]  # a word from the middle of the free answer (temperature 0)
    cut = await llama_provider.complete(ask(prompt, max_tokens=20, stop=[stop]))
    assert cut.text == free.text[: free.text.index(stop)]
    assert cut.finish_reason == "stop"
    streamed = [d async for d in llama_provider.stream(ask(prompt, max_tokens=20, stop=[stop]))]
    assert "".join(d.text for d in streamed) == cut.text


async def test_embeddings(llama_provider: LlamaCppProvider, loaded: models.LoadedModel) -> None:
    first = await llama_provider.embed(["the cat sat on the mat", "stock markets fell today"])
    again = await llama_provider.embed(["the cat sat on the mat"])
    assert len(first) == 2
    assert len(first[0]) == len(first[1]) == loaded.llama.n_embd()
    assert again[0] == pytest.approx(first[0], abs=1e-6)
    assert first[0] != first[1]
    assert sum(x * x for x in first[0]) == pytest.approx(1.0, rel=1e-4)


async def test_embeddings_off(llama_provider: LlamaCppProvider) -> None:
    with pytest.raises(BadRequest, match="embedding = true"):
        await make("noembed", embedding=False).embed(["x"])


def test_token_counts_are_exact(llama_provider: LlamaCppProvider, loaded: models.LoadedModel) -> None:
    messages = [Message.system("Be brief."), Message.user("Héllo, wörld! 你好 🚀")]
    text, added_special = llama_provider.render(messages)
    expected = len(loaded.llama.tokenize(text.encode(), add_bos=not added_special, special=True))
    assert llama_provider.count_tokens(messages) == expected
    assert "<|im_start|>user\nHéllo" in text  # the GGUF's ChatML template


async def test_usage_matches_the_tokenizer(llama_provider: LlamaCppProvider) -> None:
    messages = [Message.user("Say something.")]
    response = await llama_provider.complete(
        ModelRequest(model="local", messages=messages, temperature=0, max_tokens=5)
    )
    assert response.usage.input_tokens == llama_provider.count_tokens(messages)
    assert response.finish_reason == "length"
    assert response.usage.output_tokens == 5


async def test_model_is_loaded_once_and_shared(llama_provider: LlamaCppProvider, loaded: models.LoadedModel) -> None:
    loads = models.loads
    other = make("another-alias")
    assert other.loaded() is loaded
    response = await other.complete(ask("Hi"))
    assert response.text
    assert models.loads == loads, "a second alias on the same file loaded the model again"
    assert make("small", n_ctx=512).key != llama_provider.key


async def test_generations_are_queued_not_interleaved(llama_provider: LlamaCppProvider) -> None:
    order: list[str] = []
    texts: dict[str, str] = {}

    async def run(name: str, prompt: str) -> None:
        parts = []
        async for delta in llama_provider.stream(ask(prompt, max_tokens=8)):
            order.append(name)
            parts.append(delta.text)
        texts[name] = "".join(parts)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "a", "Tell me about cats.")
        await anyio.sleep(0)
        tg.start_soon(run, "b", "Tell me about dogs.")
    assert order == sorted(order), f"two generations interleaved: {''.join(order)}"
    assert texts["a"] and texts["b"]
    assert texts["b"] == (await llama_provider.complete(ask("Tell me about dogs.", max_tokens=8))).text


async def test_waiters_are_served_in_arrival_order(llama_provider: LlamaCppProvider) -> None:
    finished: list[int] = []

    async def run(i: int) -> None:
        await llama_provider.complete(ask(f"Say {i}.", max_tokens=3))
        finished.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(run, i)
            await anyio.sleep(0.01)
    assert finished == [0, 1, 2, 3]


async def test_too_long_prompt_is_context_window_exceeded(llama_provider: LlamaCppProvider) -> None:
    huge = "lorem ipsum dolor " * 3000
    with pytest.raises(ContextWindowExceeded, match="n_ctx"):
        await llama_provider.complete(ask(huge))
    with pytest.raises(ContextWindowExceeded):
        async for _ in llama_provider.stream(ask(huge)):
            pass
    assert llama_provider.in_flight == 0


async def test_cancellation_stops_generation_promptly(
    llama_provider: LlamaCppProvider, loaded: models.LoadedModel
) -> None:
    got = 0
    stream = llama_provider.stream(ask("Write a long story about a dragon.", max_tokens=2000))
    with anyio.CancelScope() as scope:
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for delta in stream:
                got += bool(delta.text)
                if got == 2:
                    started = time.perf_counter()
                    scope.cancel()
                    await anyio.sleep(0)
    elapsed = time.perf_counter() - started
    assert scope.cancelled_caught
    assert elapsed < 1.0, f"cancellation took {elapsed:.2f} s"
    assert llama_provider.in_flight == 0
    assert not loaded._thread_lock.locked(), "the model is still held after cancellation"


async def test_cancelled_complete_releases_the_model(
    llama_provider: LlamaCppProvider, loaded: models.LoadedModel
) -> None:
    with anyio.move_on_after(0.3) as scope:
        await llama_provider.complete(ask("Write a long story about a dragon.", max_tokens=2000))
    assert scope.cancelled_caught
    assert llama_provider.in_flight == 0
    assert not loaded._thread_lock.locked()
    with anyio.fail_after(10):
        assert (await llama_provider.complete(ask("Hi", max_tokens=2))).usage.output_tokens > 0
