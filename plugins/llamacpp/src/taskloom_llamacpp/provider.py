"""``LlamaCppProvider``: one ``[models.<alias>]`` deployment on an in-process llama.cpp model.

The model is loaded on first use, in a worker thread, and shared (see :mod:`.models`).
Every generation runs in worker threads while holding the model, one at a time, in
arrival order.
"""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
from taskloom.config import ModelConfig, Settings
from taskloom.errors import BadRequest
from taskloom.gateway import StreamAssembler
from taskloom.types import Capabilities, Message, ModelRequest, ModelResponse, StreamDelta, ToolSpec

from . import models
from .engine import Generation, Job, Mode
from .models import LoadedModel, ModelKey
from .options import LlamaCppOptions, parse_options, resolve_model_path
from .prompt import Formatter, make_formatter, template_messages

PROVIDER = "llamacpp"
DEFAULT_TEMPERATURE = 0.2
_END = object()


class LlamaCppProvider:
    def __init__(self, options: LlamaCppOptions, *, alias: str = "local", model: str = "") -> None:
        self.name = PROVIDER
        self.alias = alias
        self.options = options
        self.path: Path = resolve_model_path(options, alias)
        self.model_name = model or self.path.stem
        self.key = ModelKey(self.path, options.n_ctx, options.n_threads, verbose=options.verbose)
        self.embed_key = ModelKey(self.path, options.n_ctx, options.n_threads, embedding=True, verbose=options.verbose)
        self._formatter: Formatter | None = None
        self._formatter_lock = threading.Lock()
        self.in_flight = 0
        """Generations started and not yet finished (0 when idle)."""

    @classmethod
    def from_config(cls, config: ModelConfig, settings: Settings | None = None) -> LlamaCppProvider:
        return cls(parse_options(config, settings), alias=config.alias, model=config.model)

    # ------------------------------------------------------------------ model

    def loaded(self) -> LoadedModel:
        """The shared model, loading it now if needed (blocking: call off the event loop)."""
        model = models.get_model(self.key)
        if self._formatter is None:
            with self._formatter_lock:
                if self._formatter is None:
                    self._formatter = make_formatter(model.llama, self.options.chat_format)
        return model

    async def _aloaded(self) -> LoadedModel:
        if self._formatter is not None:
            model = models.cached(self.key)
            if model is not None:
                return model
        return await anyio.to_thread.run_sync(self.loaded)

    def capabilities(self) -> Capabilities:
        n_ctx = self.options.n_ctx
        if n_ctx == 0:
            n_ctx = self.loaded().n_ctx
        return Capabilities(
            tools=True, streaming=True, embeddings=self.options.embedding, structured_output=True, context_window=n_ctx
        )

    # ------------------------------------------------------------------ prompts

    def render(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> tuple[str, bool]:
        """The prompt text (with the assistant's turn opened) and whether it holds BOS."""
        self.loaded()
        assert self._formatter is not None
        prompt = self._formatter(template_messages(messages, tools))
        return prompt.text, prompt.added_special

    def count_tokens(self, messages: list[Message]) -> int:
        """Exact: the model's tokenizer on the chat-formatted prompt."""
        model = self.loaded()
        text, added_special = self.render(messages)
        return len(model.llama.tokenize(text.encode("utf-8"), add_bos=not added_special, special=True))

    def job(self, request: ModelRequest) -> Job:
        tools = request.tools if request.tool_choice != "none" else []
        mode: Mode = "auto" if tools else "text"
        candidates = {t.name: t.parameters for t in tools}
        choice = request.tool_choice
        if tools and choice == "required":
            mode = "tool"
        elif tools and choice not in ("auto", "none", "required"):
            if choice not in candidates:
                raise BadRequest(
                    f"tool_choice {choice!r} names no tool of the request (tools: {', '.join(candidates)})",
                    provider=PROVIDER,
                    model=self.alias,
                )
            mode, candidates = "tool", {choice: candidates[choice]}
        elif not tools and choice not in ("auto", "none"):
            raise BadRequest(
                f"tool_choice {choice!r} needs tools, and the request has none", provider=PROVIDER, model=self.alias
            )
        if mode == "auto" and request.output_schema is not None:
            mode = "text"  # the answer must match the schema: it cannot also be a free tool call
        text, added_special = self.render(request.messages, tools)
        return Job(
            prompt=text,
            added_special=added_special,
            mode=mode,
            tools=candidates,
            output_schema=request.output_schema if mode != "tool" else None,
            max_tokens=request.max_tokens,
            temperature=request.temperature if request.temperature is not None else DEFAULT_TEMPERATURE,
            top_p=request.top_p if request.top_p is not None else 0.95,
            seed=request.seed if request.seed is not None else self.options.seed,
            stop=list(request.stop or []),
            model_name=self.model_name,
            alias=self.alias,
        )

    # ------------------------------------------------------------------ generation

    async def complete(self, request: ModelRequest) -> ModelResponse:
        model = await self._aloaded()
        job = self.job(request)
        cancel = threading.Event()
        assembler = StreamAssembler()

        failed: list[Exception] = []

        def work() -> None:
            try:
                for delta in Generation(model, job, cancel).deltas():
                    assembler.add(delta)
            except Exception as exc:  # raised below, outside the task group
                failed.append(exc)

        async with model.exclusive():
            self.in_flight += 1
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_raise_flag_when_cancelled, cancel)
                    # Not abandoned on cancellation: the flag stops the thread within a token.
                    await anyio.to_thread.run_sync(work)
                    tg.cancel_scope.cancel()
            finally:
                self.in_flight -= 1
        # The thread was waited for inside a shielded call: deliver a pending cancellation
        # now rather than return the partial answer it stopped with.
        await anyio.lowlevel.checkpoint_if_cancelled()
        if failed:
            raise failed[0]
        response = assembler.response()
        response.provider = PROVIDER
        return response

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamDelta]:
        model = await self._aloaded()
        job = self.job(request)
        cancel = threading.Event()
        async with model.exclusive():
            self.in_flight += 1
            deltas = Generation(model, job, cancel).deltas()
            try:
                while True:
                    delta = await anyio.to_thread.run_sync(next, deltas, _END)
                    if delta is _END:
                        break
                    yield delta  # type: ignore[misc]
            finally:
                cancel.set()
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(deltas.close)
                self.in_flight -= 1

    # ------------------------------------------------------------------ embeddings

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not self.options.embedding:
            raise BadRequest(
                f"embeddings are off for [models.{self.alias}]; set embedding = true to use them",
                provider=PROVIDER,
                model=self.alias,
            )
        if not texts:
            return []
        model = await anyio.to_thread.run_sync(models.get_model, self.embed_key)
        async with model.exclusive():
            return await anyio.to_thread.run_sync(_embed, model, texts)

    async def aclose(self) -> None:
        """Nothing to release per deployment: loaded models are shared by the process."""


async def _raise_flag_when_cancelled(flag: threading.Event) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        flag.set()


def _embed(model: LoadedModel, texts: list[str]) -> list[list[float]]:
    """One L2-normalised vector per text (token vectors are mean-pooled when the model
    does no pooling of its own)."""
    raw = model.llama.embed(texts)
    return [_normalise(_pool(vector)) for vector in raw]


def _pool(vector: Any) -> list[float]:
    if vector and isinstance(vector[0], list):
        rows: list[list[float]] = vector
        return [sum(column) / len(rows) for column in zip(*rows, strict=True)]
    return [float(x) for x in vector]


def _normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def iterate(model: LoadedModel, job: Job) -> Iterator[StreamDelta]:
    """Run a job synchronously (for scripts and benchmarks that hold no event loop)."""
    with model.exclusive_sync():
        yield from Generation(model, job).deltas()
