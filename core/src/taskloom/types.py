"""The data that flows through taskloom: messages, tools, requests, responses, usage, cost,
events, and the Protocols that I/O components (providers, caches, stores, executors)
implement.

Everything here is a pydantic v2 model so that it validates at the edges, serialises to
JSON for the cache and the run store, and crosses process boundaries (executors).
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


M = TypeVar("M", bound=BaseModel)
_FACTORY = object()


class _EveryField(set[str]):
    """The fields-set that every instance :func:`build` makes with all of its class's fields
    given shares (one per class). Nothing can be added that is not in it already: pydantic
    adds a field's name on assignment, a no-op here; anything that would change it raises.
    A 10,000-task run keeps some 50,000 fewer objects for the garbage collector to walk."""

    __slots__ = ()

    def add(self, name: str) -> None:
        if name not in self:
            raise TypeError(f"{name!r} is not a field; this fields-set is shared: copy it to change it")

    def update(self, *others: Iterable[str]) -> None:
        for other in others:
            names = other if isinstance(other, dict | set | frozenset | list | tuple) else list(other)
            if not self.issuperset(names):  # (checked in C: assign() calls this on the hot path)
                for name in names:
                    self.add(name)

    def _shared(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this fields-set is shared by every instance built with all fields: copy it to change it")

    discard = remove = pop = clear = _shared
    difference_update = intersection_update = symmetric_difference_update = _shared
    __iand__ = __ior__ = __isub__ = __ixor__ = _shared


_Blueprint = tuple[dict[str, Any], int, tuple[tuple[str, Callable[[], Any]], ...], bool, _EveryField]
_BLUEPRINTS: dict[type[BaseModel], _Blueprint] = {}
# BaseModel's own slots, set through their descriptors (no attribute lookup by name).
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _blueprint(cls: type[BaseModel]) -> _Blueprint:
    """Every field of ``cls`` in order with its default (a marker for fields made by a
    factory, listed apart), their number, and whether the model keeps extra keys."""
    defaults: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            defaults[name] = _FACTORY
            factories.append((name, info.default_factory))  # type: ignore[arg-type]
        elif info.default is PydanticUndefined:
            defaults[name] = _FACTORY
            factories.append((name, _required(cls, name)))
        else:
            default = info.default
            try:
                hash(default)
            except TypeError:  # a mutable default is copied per instance, as pydantic does
                defaults[name] = _FACTORY
                factories.append((name, functools.partial(copy.deepcopy, default)))
            else:
                defaults[name] = default
    if cls.__new__ is not object.__new__:
        raise TypeError(f"build({cls.__name__}): a model with its own __new__ is built with its constructor")
    blueprint = (
        defaults,
        len(defaults),
        tuple(factories),
        cls.model_config.get("extra") == "allow",
        _EveryField(defaults),
    )
    _BLUEPRINTS[cls] = blueprint
    return blueprint


def _required(cls: type[BaseModel], name: str) -> Callable[[], Any]:
    def missing() -> Any:
        raise TypeError(f"build({cls.__name__}): the required field {name!r} is missing")

    return missing


_new = object.__new__


def build(cls: type[M], /, **values: Any) -> M:
    """An instance of ``cls`` from values the kernel made itself, without validation.

    For the hot path only (a model call builds a dozen of these): every value must
    already have its field's type, as when it comes from another validated object or
    from the kernel's own arithmetic. Anything that comes from a user, a plugin or the
    network goes through the normal constructor. Missing fields take their defaults
    (factories run per instance). pydantic's own ``model_construct`` does the same job
    but costs more than validating these small models, hence this. Instances built with
    every field given share their class's fields-set (see :class:`_EveryField`).
    """
    try:
        defaults, size, factories, extra, every = _BLUEPRINTS[cls]
    except KeyError:
        defaults, size, factories, extra, every = _blueprint(cls)
    data = {**defaults, **values}
    if len(data) != size:
        unknown = ", ".join(sorted(set(values) - set(defaults)))
        raise TypeError(f"build({cls.__name__}): no field named {unknown}")
    obj = _new(cls)
    if len(values) < size:
        for name, factory in factories:
            if data[name] is _FACTORY:
                data[name] = factory()
        _set_fields_set(obj, set(values))
    else:  # every field given: no factory to run, and the class's shared fields-set
        _set_fields_set(obj, every)
    _set_dict(obj, data)
    _set_extra(obj, {} if extra else None)
    _set_private(obj, None)
    return obj


def replace(obj: M, /, **changes: Any) -> M:
    """A shallow copy of ``obj`` with some fields changed, without validation: the
    hot-path ``obj.model_copy(update=changes)``, under the same rule as :func:`build`
    (the new values already have their fields' types)."""
    cls = type(obj)
    try:
        fields = _BLUEPRINTS[cls][0]
    except KeyError:
        fields = _blueprint(cls)[0]
    if not changes.keys() <= fields.keys():
        unknown = ", ".join(sorted(changes.keys() - fields.keys()))
        raise TypeError(f"replace({cls.__name__}): no field named {unknown}")
    new = _new(cls)
    _set_dict(new, {**obj.__dict__, **changes})
    _set_fields_set(new, obj.__pydantic_fields_set__ | changes.keys())
    extra, private = obj.__pydantic_extra__, obj.__pydantic_private__
    _set_extra(new, None if extra is None else dict(extra))
    _set_private(new, None if private is None else dict(private))
    return new


def assign(obj: BaseModel, /, **values: Any) -> None:
    """``obj.a = x`` for several fields at once, without pydantic's per-attribute
    dispatch (two Python calls per field); the same rule as :func:`build` applies.
    Not for models that validate assignment."""
    obj.__dict__.update(values)
    obj.__pydantic_fields_set__.update(values)


# --------------------------------------------------------------------------- messages


class TextPart(_Model):
    type: Literal["text"] = "text"
    text: str


class ImagePart(_Model):
    """An image given by URL or as base64 data with its media type."""

    type: Literal["image"] = "image"
    url: str | None = None
    data: str | None = None
    media_type: str | None = None


Part = TextPart | ImagePart


class ToolCall(_Model):
    """A call the model asks for. ``arguments`` is the parsed JSON object, or None when
    the model sent text that is not a JSON object (kept verbatim in ``raw_arguments``)."""

    id: str
    name: str
    arguments: dict[str, Any] | None = None
    raw_arguments: str = ""

    @classmethod
    def parse(cls, id: str, name: str, raw: str | dict[str, Any] | None) -> ToolCall:
        """Build a call from arguments as a provider sent them (JSON text or object)."""
        if isinstance(raw, dict):
            return cls(id=id, name=name, arguments=raw, raw_arguments=json.dumps(raw))
        text = raw or ""
        try:
            value = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            value = None
        return cls(
            id=id,
            name=name,
            arguments=value if isinstance(value, dict) else None,
            raw_arguments=text,
        )


class Message(_Model):
    role: Role
    content: str | list[Part] = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @classmethod
    def system(cls, text: str) -> Message:
        return cls(role="system", content=text)

    @classmethod
    def user(cls, content: str | list[Part]) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, text: str = "", tool_calls: list[ToolCall] | None = None) -> Message:
        return cls(role="assistant", content=text, tool_calls=tool_calls or [])

    @classmethod
    def tool(cls, call_id: str, name: str, content: str, *, is_error: bool = False) -> Message:
        return cls(role="tool", content=content, tool_call_id=call_id, name=name, is_error=is_error)


# --------------------------------------------------------------------------- tools


class ToolSpec(_Model):
    """What a model is told about a tool: its name, description and JSON Schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


ToolChoice = Literal["auto", "none", "required"] | str
"""``auto``, ``none``, ``required`` (some tool), or the name of one tool to force."""


# --------------------------------------------------------------------------- requests


class RequestMeta(_Model):
    """Who a call is for; used by policy, routing, the ledger and cost attribution."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    run_id: str | None = None
    task_id: str | None = None
    agent: str | None = None
    user: str | None = None
    tier: str | None = None
    task_type: str | None = None
    depth: int = 0
    budget_remaining_usd: Decimal | None = None
    """Dollars the caller may still spend (the agent loop fills it on every turn from the
    run's ``Budget`` and the agent's ``max_cost_usd``, the tighter of the two); None when
    no spending limit is active. Routers and policies read it to pick a model that fits."""
    budget_remaining_tokens: int | None = None
    """Tokens the caller may still use (the run's ``Budget`` tokens and the agent's
    ``max_total_tokens``, the tighter of the two); None when no token limit is active."""


class ModelRequest(_Model):
    model: str
    """A model alias from config (``[models.<alias>]``), or ``auto`` for the router."""
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    output_schema: dict[str, Any] | None = None
    """A JSON Schema the answer must satisfy (structured output)."""
    metadata: RequestMeta = Field(default_factory=RequestMeta)
    cache: bool = True
    """Whether the gateway may answer from, and store into, the response cache."""
    timeout: float | None = None
    """Seconds for one provider attempt; the model's configured timeout when None."""
    deadline: float | None = None
    """An overall deadline for the whole call, as a ``time.monotonic()`` value: every
    attempt, backoff wait and fallback must end by then, else the call fails with
    ``DeadlineExceeded``. The agent loop sets it from ``AgentLimits.timeout_s``."""


# --------------------------------------------------------------------------- usage and cost


class Usage(_Model):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return build(
            Usage,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )

    @classmethod
    def sum(cls, usages: Iterable[Usage]) -> Usage:
        """``Usage() + u1 + u2 + ...`` in plain ints (a :class:`Tally`), without a model for
        every step."""
        tally = Tally()
        for u in usages:
            tally.add_usage(u)
        return tally.total_usage() if tally.counted else cls()


ZERO = Decimal(0)


class Cost(_Model):
    """An exact cost in US dollars with its breakdown. ``priced`` is False when no cost
    model knew the model's price: the figure is then unknown, not zero."""

    total: Decimal = ZERO
    input: Decimal = ZERO
    output: Decimal = ZERO
    cached_input: Decimal = ZERO
    tools: Decimal = ZERO
    priced: bool = True
    source: str | None = None
    """The cost model (plugin) that priced it."""

    @classmethod
    def unpriced(cls) -> Cost:
        return build(cls, priced=False)

    def __add__(self, other: Cost) -> Cost:
        return build(
            Cost,
            total=self.total + other.total,
            input=self.input + other.input,
            output=self.output + other.output,
            cached_input=self.cached_input + other.cached_input,
            tools=self.tools + other.tools,
            priced=self.priced and other.priced,
            source=self.source if self.source == other.source else None,
        )

    @classmethod
    def sum(cls, costs: Iterable[Cost]) -> Cost:
        """``Cost() + c1 + c2 + ...``: the Decimals added in the same order (a
        :class:`Tally`), without a model for every step (the chain starts from ``Cost()``,
        whose source is None, so the sum has none either)."""
        tally = Tally()
        for c in costs:
            tally.add_cost(c)
        return tally.total_cost() if tally.counted else cls()


class Tally:
    """Running sums of usage and cost in plain ints and Decimals, made into records once:
    what chaining ``Usage + Usage`` and ``Cost + Cost`` gives (exact, so digit for digit),
    without a model for every step. Its ``source`` is None, as for :meth:`Cost.sum`."""

    def __init__(self) -> None:
        self.input_tokens = self.output_tokens = self.cached_input_tokens = self.reasoning_tokens = 0
        self.cost_total = self.cost_input = self.cost_output = self.cost_cached_input = self.cost_tools = ZERO
        self.priced = True
        self.counted = 0  # usages and costs added

    def add_usage(self, usage: Usage) -> None:
        self.counted += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.reasoning_tokens += usage.reasoning_tokens

    def add_cost(self, cost: Cost) -> None:
        self.counted += 1
        self.cost_total += cost.total
        self.cost_input += cost.input
        self.cost_output += cost.output
        self.cost_cached_input += cost.cached_input
        self.cost_tools += cost.tools
        self.priced = self.priced and cost.priced

    def total_usage(self) -> Usage:
        return build(Usage,
            input_tokens=self.input_tokens, output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens, reasoning_tokens=self.reasoning_tokens,
        )  # fmt: skip

    def total_cost(self) -> Cost:
        return build(Cost,
            total=self.cost_total, input=self.cost_input, output=self.cost_output,
            cached_input=self.cost_cached_input, tools=self.cost_tools, priced=self.priced, source=None,
        )  # fmt: skip


# --------------------------------------------------------------------------- responses


class ModelResponse(_Model):
    message: Message
    finish_reason: FinishReason = "stop"
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    """The provider's model name actually used."""
    alias: str = ""
    """The config alias (deployment) actually used, after routing and fallback."""
    provider: str = ""
    latency_s: float = 0.0
    cached: bool = False
    cost: Cost | None = None
    attempts: int = 1

    @property
    def text(self) -> str:
        return self.message.text

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.message.tool_calls


class StreamDelta(_Model):
    """One piece of a streamed answer: text, a fragment of a tool call (by index), or the
    final usage and finish reason."""

    text: str = ""
    tool_index: int | None = None
    tool_id: str | None = None
    tool_name: str | None = None
    arguments: str = ""
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    model: str | None = None


class Capabilities(_Model):
    tools: bool = True
    streaming: bool = True
    embeddings: bool = False
    structured_output: bool = False
    context_window: int = 4096


class Event(_Model):
    """Something that happened, sent to every progress sink. ``kind`` is dotted
    (``model.call``, ``tool.call``, ``run.start``...); ``data`` holds the details."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, defer_build=True)

    kind: str
    time: float = Field(default_factory=time.time)
    run_id: str | None = None
    task_id: str | None = None
    agent: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Denial(_Model):
    """A policy's refusal: which plugin refused and why."""

    reason: str
    plugin: str = ""


ActionKind = Literal["model_call", "deployment", "tool_call", "run", "delegate"]
ACTION_KINDS: tuple[ActionKind, ...] = ("model_call", "deployment", "tool_call", "run", "delegate")


class Action(_Model):
    """What the policy hook is asked about."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, defer_build=True)

    kind: ActionKind
    """``model_call``: a call enters the gateway (once per call, for the requested alias);
    ``deployment``: the gateway is about to call one deployment of the chain (the routed
    choice or a fallback), named by ``model``, its provider object in ``provider`` (None
    for a cache hit); a denial skips that deployment."""
    request: ModelRequest | None = None
    model: str | None = None
    """The deployment alias about to be called (kind ``deployment``)."""
    provider: Any = None
    """The :class:`Provider` of that deployment (kind ``deployment``), for its
    capabilities and token counter; None when the answer comes from the cache."""
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    metadata: RequestMeta = Field(default_factory=RequestMeta)
    estimated_cost: Decimal | None = None


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class Provider(Protocol):
    """A model deployment: one ``[models.<alias>]`` entry bound to a provider plugin."""

    name: str

    def capabilities(self) -> Capabilities: ...

    async def complete(self, request: ModelRequest) -> ModelResponse: ...

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamDelta]: ...

    async def embed(self, texts: list[str]) -> list[list[float]]: ...

    def count_tokens(self, messages: list[Message]) -> int: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Cache(Protocol):
    """A response cache keyed by strings; values are opaque bytes."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def invalidate(self, prefix: str = "") -> int: ...

    def stats(self) -> dict[str, int]: ...

    async def aclose(self) -> None: ...


ToolFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]
