"""One generation on a loaded model, token by token, as taskloom stream deltas.

Runs in a worker thread (never on the event loop). Both ``complete`` and ``stream`` go
through :meth:`Generation.deltas`, so a streamed answer is the non-streamed answer cut in
pieces. The cancel flag is checked between tokens, so a cancelled call stops within one
token.

Three modes:

* ``text``  free text, or JSON constrained by ``output_schema``;
* ``tool``  a forced call: the prompt is continued with ``<tool_call>`` and the model
  picks the tool name from a grammar (when it has a choice), then writes arguments
  constrained by that tool's JSON Schema, so they always parse and match it;
* ``auto``  free text, but when the answer starts with ``<tool_call>`` the rest is
  generated as in ``tool`` mode, so a call the model chooses to make is valid too.
"""

from __future__ import annotations

import codecs
import random
import threading
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from taskloom.errors import BadRequest, ContextWindowExceeded
from taskloom.types import FinishReason, StreamDelta, Usage

from .grammar import choice_grammar, schema_grammar
from .prompt import CALL_ARGUMENTS_PREFIX, CALL_NAME_PREFIX, TOOL_CALL_OPEN

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar

    from .models import LoadedModel

Mode = Literal["text", "tool", "auto"]


@dataclass
class Job:
    """Everything a generation needs, prepared on the event loop from a request."""

    prompt: str
    added_special: bool
    mode: Mode = "text"
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Tool name → JSON Schema of its arguments (the candidates in tool and auto mode)."""
    output_schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float = 0.2
    top_p: float = 0.95
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    model_name: str = ""
    alias: str = ""


class Generation:
    def __init__(self, model: LoadedModel, job: Job, cancel: threading.Event | None = None) -> None:
        self.model = model
        self.llama = model.llama
        self.job = job
        self.cancel = cancel or threading.Event()
        self.input_tokens = 0
        self.output_tokens = 0
        self.finish: FinishReason = "stop"
        self._budget = 0
        self._vocab = self.llama._model.vocab

    # ------------------------------------------------------------------ public

    def tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self.llama.tokenize(text.encode("utf-8"), add_bos=not self.job.added_special, special=True)
        return tokens

    def deltas(self) -> Generator[StreamDelta, None, None]:
        job = self.job
        prompt_tokens = self.tokenize(job.prompt)
        self.input_tokens = len(prompt_tokens)
        n_ctx = self.model.n_ctx
        if self.input_tokens >= n_ctx:
            raise ContextWindowExceeded(
                f"the prompt is {self.input_tokens} tokens but the context window of {job.alias or 'the model'} "
                f"(n_ctx) is {n_ctx}; shorten the conversation or raise n_ctx in [models.{job.alias or '<alias>'}]",
                provider="llamacpp",
                model=job.alias,
            )
        limit = n_ctx - self.input_tokens - 1
        self._budget = min(job.max_tokens, limit) if job.max_tokens else limit
        self.llama.set_seed(job.seed if job.seed is not None else random.randrange(2**31))
        if job.mode == "tool":
            yield from self._tool_call()
        elif job.mode == "auto":
            yield from self._auto(prompt_tokens)
        else:
            grammar = schema_grammar(job.output_schema, "output_schema") if job.output_schema else None
            for text in self._with_stops(self._sample(prompt_tokens, grammar)):
                yield StreamDelta(text=text)
        yield StreamDelta(
            usage=Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens),
            finish_reason=self.finish,
            model=job.model_name,
        )

    # ------------------------------------------------------------------ modes

    def _tool_call(self) -> Iterator[StreamDelta]:
        job = self.job
        names = tuple(job.tools)
        text = job.prompt + CALL_NAME_PREFIX
        if len(names) == 1:
            name = names[0]
        else:
            name = "".join(self._sample(self._phase(text), choice_grammar(names)))
            if name not in job.tools:  # cut short by the token budget or cancellation
                self.finish = "length" if not self.cancel.is_set() else "error"
                return
        yield StreamDelta(tool_index=0, tool_id=f"call_{uuid.uuid4().hex[:16]}", tool_name=name)
        grammar = schema_grammar(job.tools[name], f"the arguments of tool {name!r}")
        for piece in self._sample(self._phase(text + name + CALL_ARGUMENTS_PREFIX), grammar):
            yield StreamDelta(tool_index=0, arguments=piece)
        if self.finish == "stop":
            self.finish = "tool_calls"

    def _auto(self, prompt_tokens: list[int]) -> Iterator[StreamDelta]:
        buffered = ""
        deciding = True
        sampled = self._sample(prompt_tokens, None)
        pieces = self._with_stops(sampled)
        for piece in pieces:
            if deciding:
                buffered += piece
                head = buffered.lstrip()
                if head.startswith(TOOL_CALL_OPEN):
                    pieces.close()
                    sampled.close()
                    self._budget += self.output_tokens  # counted again as the call's forced prefix
                    self.output_tokens = 0
                    self.finish = "stop"
                    yield from self._tool_call()
                    return
                if TOOL_CALL_OPEN.startswith(head):
                    continue  # may still become a tool call: hold the text back
                deciding = False
                piece, buffered = buffered, ""
            yield StreamDelta(text=piece)
        if buffered:
            yield StreamDelta(text=buffered)

    # ------------------------------------------------------------------ sampling

    def _phase(self, text: str) -> list[int]:
        """Tokens of a continued prompt; the forced text counts as output."""
        tokens = self.tokenize(text)
        forced = len(tokens) - self.input_tokens
        if forced > self.output_tokens:
            self._budget -= forced - self.output_tokens
            self.output_tokens = forced
        return tokens

    def _sample(self, tokens: list[int], grammar: LlamaGrammar | None) -> Generator[str, None, None]:
        """Decoded text pieces of the sampled tokens, until end of generation, the token
        budget, or cancellation; sets ``finish``."""
        import llama_cpp

        job = self.job
        llama = self.llama
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        if self._budget <= 0:
            self.finish = "length"
            return
        tokens_iter = llama.generate(
            tokens, top_k=40, top_p=job.top_p, min_p=0.05, temp=job.temperature, repeat_penalty=1.0, grammar=grammar
        )
        try:
            for token in tokens_iter:
                if self.cancel.is_set():
                    self.finish = "error"
                    return
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    self.finish = "stop"
                    break
                self.output_tokens += 1
                self._budget -= 1
                piece = decoder.decode(llama.detokenize([token]))
                if piece:
                    yield piece
                if self._budget <= 0:
                    self.finish = "length"
                    break
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        except (RuntimeError, ValueError) as exc:
            raise BadRequest(
                f"llama.cpp failed while generating: {exc}", provider="llamacpp", model=job.alias
            ) from None
        finally:
            tokens_iter.close()

    def _with_stops(self, pieces: Iterator[str]) -> Generator[str, None, None]:
        """Cut the text at the first stop sequence; text that may begin one is held back."""
        stops = [s for s in self.job.stop if s]
        if not stops:
            yield from pieces
            return
        text = ""
        sent = 0
        longest = max(len(s) for s in stops)
        for piece in pieces:
            text += piece
            window_start = max(0, sent - longest)
            found = [i for i in (text.find(s, window_start) for s in stops) if i >= 0]
            if found:
                end = min(found)
                if end > sent:
                    yield text[sent:end]
                self.finish = "stop"
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()
                return
            safe = len(text) - _held(text, stops)
            if safe > sent:
                yield text[sent:safe]
                sent = safe
        if len(text) > sent:
            yield text[sent:]


def _held(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop sequence."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best
