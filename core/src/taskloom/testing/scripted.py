"""The scripted provider: queue answers, tool calls, errors and delays; every request is
recorded; usage is filled in. It makes any agent or workflow run deterministically, from
Python or from config (``[models.<alias>] provider = "scripted"``).

From config, ``responses`` is a list whose items are a string (an answer), or a table
with any of ``text``, ``tool`` + ``arguments`` (a tool call; ``arguments`` may be a
string to send broken JSON), ``error`` (``rate_limit``, ``timeout``, ``connection``,
``server``, ``context``, ``auth``, ``bad_request``, ``garbage``), ``delay`` (seconds
before answering), ``retry_after``. When the queue is empty the provider answers with
``default`` (``{prompt}`` is replaced by the last user message), or fails if none is set.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
from pydantic import BaseModel, ConfigDict, Field

from taskloom import errors
from taskloom.config import Secret
from taskloom.tokens import estimate
from taskloom.types import Capabilities, Message, ModelRequest, ModelResponse, StreamDelta, ToolCall, Usage, build

ERRORS: dict[str, Callable[[str], Exception]] = {
    "rate_limit": lambda m: errors.RateLimitError(m, status=429),
    "timeout": lambda m: errors.ProviderTimeout(m),
    "connection": lambda m: errors.ConnectionFailed(m),
    "server": lambda m: errors.ServerError(m, status=500),
    "context": lambda m: errors.ContextWindowExceeded(m, status=400),
    "auth": lambda m: errors.AuthenticationError(m, status=401),
    "bad_request": lambda m: errors.BadRequest(m, status=400),
    "garbage": lambda m: ValueError(m),
}


@dataclass
class Step:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: BaseException | None = None
    delay: float = 0.0
    hang: bool = False
    usage: Usage | None = None
    finish_reason: str | None = None


class ScriptedStep(BaseModel):
    """One queued item in config."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    error: str | None = None
    message: str = "scripted failure"
    retry_after: float | None = None
    delay: float = 0.0
    hang: bool = False


class ScriptedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    responses: list[str | ScriptedStep] = Field(default_factory=list)
    default: str | None = None
    context_window: int = 32_768
    api_key: Secret | None = None
    """Accepted and never used, so tests can exercise secret handling as with a real provider."""


_ids = itertools.count(1)


class ScriptedProvider:
    """A provider that answers from a queue. Not a model: a test double, named as such."""

    def __init__(
        self,
        name: str = "scripted",
        *,
        default: str | None = None,
        context_window: int = 32_768,
        model: str = "scripted",
    ) -> None:
        self.name = name
        self.model = model
        self.default = default
        self.context_window = context_window
        self.queue: deque[Step] = deque()
        self.requests: list[ModelRequest] = []
        self.closed = False
        self.in_flight = 0
        self._capabilities: Capabilities | None = None

    # ------------------------------------------------------------------ queueing

    def add_text(self, text: str, *, delay: float = 0.0, usage: Usage | None = None) -> ScriptedProvider:
        self.queue.append(Step(text=text, delay=delay, usage=usage))
        return self

    def add_tool_call(
        self, name: str, arguments: dict[str, Any] | str | None = None, *, text: str = ""
    ) -> ScriptedProvider:
        call = ToolCall.parse(f"call_{next(_ids)}", name, arguments if arguments is not None else {})
        self.queue.append(Step(text=text, tool_calls=[call]))
        return self

    def add_tool_calls(self, calls: list[tuple[str, dict[str, Any] | str]]) -> ScriptedProvider:
        self.queue.append(Step(tool_calls=[ToolCall.parse(f"call_{next(_ids)}", n, a) for n, a in calls]))
        return self

    def add_error(
        self, error: BaseException | str, *, message: str = "scripted failure", retry_after: float | None = None
    ) -> ScriptedProvider:
        if isinstance(error, str):
            error = make_error(error, message, retry_after)
        self.queue.append(Step(error=error))
        return self

    def add_delay(self, seconds: float, text: str = "") -> ScriptedProvider:
        self.queue.append(Step(text=text, delay=seconds))
        return self

    def add_hang(self) -> ScriptedProvider:
        self.queue.append(Step(hang=True))
        return self

    def add_steps(self, items: list[str | ScriptedStep]) -> ScriptedProvider:
        for item in items:
            if isinstance(item, str):
                self.add_text(item)
                continue
            if item.error:
                self.queue.append(Step(error=make_error(item.error, item.message, item.retry_after), delay=item.delay))
            else:
                calls = [ToolCall.parse(f"call_{next(_ids)}", item.tool, item.arguments)] if item.tool else []
                self.queue.append(Step(text=item.text, tool_calls=calls, delay=item.delay, hang=item.hang))
        return self

    # ------------------------------------------------------------------ provider

    def capabilities(self) -> Capabilities:
        """The same object on every call (it is asked on every call, by the context-window
        check): change ``context_window`` on the provider, not on it."""
        caps = self._capabilities
        if caps is None or caps.context_window != self.context_window:  # made once, again if the window changes
            caps = self._capabilities = Capabilities(
                tools=True, streaming=True, embeddings=True, structured_output=True, context_window=self.context_window
            )
        return caps

    def count_tokens(self, messages: list[Message]) -> int:
        """``taskloom.tokens.estimate`` of each message's text, plus 3 a message and 3."""
        total = 3 + 3 * len(messages)
        for m in messages:
            content = m.content
            text = content if type(content) is str else m.text
            if text:
                total += (len(text) + 3) // 4  # estimate(text), which is at least 1 for any text
        return total

    def _take(self, request: ModelRequest) -> Step:
        """Record the request and take the next step (queued, else the default)."""
        self.requests.append(request)
        if self.queue:
            return self.queue.popleft()
        if self.default is not None:
            last = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
            return Step(text=self.default.replace("{prompt}", last))
        raise errors.BadRequest(
            f"scripted provider {self.name!r} has no response left for request {len(self.requests)}; queue more or set a default"
        )

    async def _play(self, step: Step) -> None:
        """Wait as the step says, then raise its error if it has one."""
        if step.hang:
            await anyio.sleep_forever()
        if step.delay:
            await anyio.sleep(step.delay)
        if step.error is not None:
            raise step.error

    async def _next(self, request: ModelRequest) -> Step:
        step = self._take(request)
        await self._play(step)
        return step

    def _usage(self, request: ModelRequest, step: Step) -> Usage:
        if step.usage is not None:
            return step.usage
        out = estimate(step.text)
        for call in step.tool_calls:
            out += estimate(call.raw_arguments) + 2
        return build(Usage,
            input_tokens=self.count_tokens(request.messages), output_tokens=max(out, 1), cached_input_tokens=0,
            reasoning_tokens=0,
        )  # fmt: skip

    async def complete(self, request: ModelRequest) -> ModelResponse:
        step = self._take(request)
        if step.hang or step.delay or step.error is not None:
            self.in_flight += 1  # (an answer at once is never in flight: nothing can see it)
            try:
                await self._play(step)
            finally:
                self.in_flight -= 1
        usage = self._usage(request, step)
        if step.finish_reason is not None or not _plain(step):  # validated, with pydantic's errors
            return ModelResponse(
                message=Message.assistant(step.text, list(step.tool_calls)),
                finish_reason=step.finish_reason or ("tool_calls" if step.tool_calls else "stop"),
                usage=usage,
                model=self.model,
                provider="scripted",
            )
        # The usual step (text and parsed calls, as the add_* methods queue them) needs no validation.
        return build(
            ModelResponse,
            message=build(Message, role="assistant", content=step.text, tool_calls=list(step.tool_calls)),
            finish_reason="tool_calls" if step.tool_calls else "stop",
            usage=usage,
            model=self.model,
            provider="scripted",
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamDelta]:
        self.in_flight += 1
        try:
            step = await self._next(request)
            words = step.text.split(" ")
            for i, word in enumerate(words):
                if word or i:
                    yield StreamDelta(text=word if i == 0 else " " + word)
                    await anyio.lowlevel.checkpoint()
            for index, call in enumerate(step.tool_calls):
                raw = call.raw_arguments
                yield StreamDelta(tool_index=index, tool_id=call.id, tool_name=call.name)
                half = len(raw) // 2
                for piece in (raw[:half], raw[half:]):
                    if piece:
                        yield StreamDelta(tool_index=index, arguments=piece)
            yield StreamDelta(
                usage=self._usage(request, step),
                finish_reason="tool_calls" if step.tool_calls else "stop",
                model=self.model,
            )
        finally:
            self.in_flight -= 1

    async def embed(self, texts: list[str]) -> list[list[float]]:
        # A deterministic bag-of-letters vector: enough to test plumbing, not semantics.
        out = []
        for text in texts:
            vec = [0.0] * 26
            for ch in text.lower():
                if "a" <= ch <= "z":
                    vec[ord(ch) - 97] += 1.0
            out.append(vec)
        return out

    async def aclose(self) -> None:
        self.closed = True


def _plain(step: Step) -> bool:
    if type(step.text) is not str:
        return False
    for call in step.tool_calls:
        if type(call) is not ToolCall:
            return False
    return step.usage is None or type(step.usage) is Usage


def make_error(kind: str, message: str = "scripted failure", retry_after: float | None = None) -> BaseException:
    try:
        error = ERRORS[kind](message)
    except KeyError:
        raise ValueError(f"unknown scripted error {kind!r}; use one of {', '.join(ERRORS)}") from None
    if isinstance(error, errors.ProviderError):
        error.retry_after = retry_after
    return error


def from_config(config: Any, settings: Any = None) -> ScriptedProvider:
    """The factory for ``provider = "scripted"``."""
    from pydantic import ValidationError

    from taskloom.config import format_validation_error

    try:
        options = ScriptedOptions.model_validate(config.options)
    except ValidationError as exc:
        raise errors.ConfigError(
            format_validation_error(exc, getattr(settings, "where", "config"), f"models.{config.alias}")
        ) from None
    provider = ScriptedProvider(
        config.alias or "scripted",
        default=options.default,
        context_window=options.context_window,
        model=config.model or "scripted",
    )
    provider.add_steps(options.responses)
    return provider
