"""Every stage of the gateway, driven by the fault-injecting scripted provider."""

from __future__ import annotations

import time
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import pytest
from taskloom import Denial, Event, Message, ModelRequest, hookimpl, load_kernel
from taskloom.errors import (
    AllDeploymentsFailed,
    AuthenticationError,
    BadRequest,
    CircuitOpen,
    ConfigError,
    PolicyDenied,
    ProviderTimeout,
    RateLimitError,
)
from taskloom.resilience import DeadlineExceeded
from taskloom.testing import register_plugin

pytestmark = pytest.mark.anyio

FAST_RETRY = {"attempts": 3, "base_delay": 0.001, "max_delay": 0.002}


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def taskloom_event(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def make_kernel(models: dict[str, dict[str, Any]] | None = None, *plugins: object, **taskloom: Any):
    models = models or {"fake": {"provider": "scripted", "retry": FAST_RETRY}}
    config = {"taskloom": {"store": "memory", "default_model": next(iter(models)), **taskloom}, "models": models}
    with ExitStack() as stack:
        for i, p in enumerate(plugins):
            stack.enter_context(register_plugin(p, f"test-plugin-{i}"))
        return load_kernel(config)


def req(text: str = "hello", model: str = "", **kw: Any) -> ModelRequest:
    return ModelRequest(model=model, messages=[Message.user(text)], **kw)


async def test_complete_records_prices_and_emits() -> None:
    rec = Recorder()
    kernel = make_kernel(None, rec)
    kernel.provider("fake").add_text("hi there")
    response = await kernel.gateway.complete(req(metadata={"run_id": "r1", "task_id": "t1"}))
    assert response.text == "hi there"
    assert response.alias == "fake" and response.provider == "scripted"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.cost is not None and response.cost.priced and response.cost.total == 0
    calls = await kernel.store.get_calls("r1")
    assert len(calls) == 1 and calls[0].task_id == "t1" and calls[0].usage == response.usage
    call_events = [e for e in rec.events if e.kind == "model.call"]
    assert len(call_events) == 1 and call_events[0].run_id == "r1"


async def test_policy_denial_stops_before_the_provider() -> None:
    class NoBigPrompts:
        @hookimpl
        def taskloom_check(self, action, settings):  # type: ignore[no-untyped-def]
            if action.kind == "model_call" and "secret" in action.request.messages[-1].text:
                return Denial(reason="prompt mentions a secret", plugin="guard")
            return None

    kernel = make_kernel(None, NoBigPrompts())
    provider = kernel.provider("fake")
    provider.add_text("never")
    with pytest.raises(PolicyDenied, match="denied by guard: prompt mentions a secret"):
        await kernel.gateway.complete(req("tell me the secret"))
    assert provider.requests == []


async def test_a_crashing_policy_denies() -> None:
    class Broken:
        @hookimpl
        def taskloom_check(self, action, settings):  # type: ignore[no-untyped-def]
            raise ZeroDivisionError("oops")

    kernel = make_kernel(None, Broken())
    with pytest.raises(PolicyDenied, match="policy check failed: ZeroDivisionError"):
        await kernel.gateway.complete(req())


async def test_router_chooses_the_chain() -> None:
    class Router:
        @hookimpl
        def taskloom_route(self, request, settings):  # type: ignore[no-untyped-def]
            return ["b"] if request.model == "auto" else None

    models = {"a": {"provider": "scripted", "default": "from a"}, "b": {"provider": "scripted", "default": "from b"}}
    kernel = make_kernel(models, Router())
    assert (await kernel.gateway.complete(req(model="auto"))).text == "from b"
    assert (await kernel.gateway.complete(req(model="a"))).text == "from a"


async def test_auto_without_a_router_is_a_config_error() -> None:
    kernel = make_kernel(None, disable=["router"])  # the first-party router plugin, when installed
    with pytest.raises(ConfigError, match='model "auto" needs a router'):
        await kernel.gateway.complete(req(model="auto"))


async def test_cache_hit_costs_nothing_and_skips_the_provider() -> None:
    kernel = make_kernel({"fake": {"provider": "scripted", "model": "gpt-4o", "price": {"input": 2.5, "output": 10}}})
    provider = kernel.provider("fake")
    provider.add_text("first").add_text("second")
    one = await kernel.gateway.complete(req("same"))
    two = await kernel.gateway.complete(req("same"))
    assert one.text == two.text == "first"
    assert two.cached and not one.cached
    assert one.cost.total > 0 and two.cost.total == 0
    assert len(provider.requests) == 1
    three = await kernel.gateway.complete(req("same", cache=False))
    assert three.text == "second" and not three.cached
    assert kernel.cache.stats()["hits"] == 1


async def test_a_broken_cache_never_fails_the_call() -> None:
    class BrokenCache:
        async def get(self, key: str) -> bytes | None:
            raise OSError("disk on fire")

        async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
            raise OSError("disk on fire")

        async def invalidate(self, prefix: str = "") -> int:
            return 0

        def stats(self) -> dict[str, int]:
            return {}

        async def aclose(self) -> None:
            return None

    class Plugin:
        @hookimpl
        def taskloom_register_caches(self, register, settings):  # type: ignore[no-untyped-def]
            register("broken", lambda s: BrokenCache())

    kernel = make_kernel({"fake": {"provider": "scripted", "default": "fine"}}, Plugin(), cache="broken")
    assert (await kernel.gateway.complete(req())).text == "fine"


async def test_transient_errors_are_retried_with_backoff_events() -> None:
    rec = Recorder()
    kernel = make_kernel(None, rec)
    kernel.provider("fake").add_error("rate_limit").add_error("server").add_text("ok")
    response = await kernel.gateway.complete(req())
    assert response.text == "ok" and response.attempts == 3
    retries = [e for e in rec.events if e.kind == "model.retry"]
    assert [e.data["attempt"] for e in retries] == [1, 2]
    assert "RateLimitError" in retries[0].data["error"]


async def test_retry_after_is_honoured() -> None:
    kernel = make_kernel()
    kernel.provider("fake").add_error("rate_limit", retry_after=0.2).add_text("ok")
    start = time.perf_counter()
    await kernel.gateway.complete(req())
    assert time.perf_counter() - start >= 0.2


async def test_retry_after_longer_than_allowed_gives_up() -> None:
    models = {"fake": {"provider": "scripted", "retry": {**FAST_RETRY, "max_retry_after": 1}}}
    kernel = make_kernel(models)
    kernel.provider("fake").add_error("rate_limit", retry_after=30).add_text("ok")
    start = time.perf_counter()
    with pytest.raises(RateLimitError):
        await kernel.gateway.complete(req())
    assert time.perf_counter() - start < 1


async def test_terminal_errors_are_not_retried() -> None:
    kernel = make_kernel()
    provider = kernel.provider("fake")
    provider.add_error("auth").add_text("never")
    with pytest.raises(AuthenticationError):
        await kernel.gateway.complete(req())
    assert len(provider.requests) == 1


async def test_retries_are_bounded() -> None:
    kernel = make_kernel()
    provider = kernel.provider("fake")
    for _ in range(5):
        provider.add_error("connection")
    with pytest.raises(Exception) as err:
        await kernel.gateway.complete(req())
    assert type(err.value).__name__ == "ConnectionFailed"
    assert len(provider.requests) == 3


async def test_a_hanging_provider_times_out() -> None:
    models = {"fake": {"provider": "scripted", "timeout": 0.05, "retry": {**FAST_RETRY, "attempts": 2}}}
    kernel = make_kernel(models)
    kernel.provider("fake").add_hang().add_hang()
    start = time.perf_counter()
    with pytest.raises(ProviderTimeout, match=r"did not answer within 0\.05 s"):
        await kernel.gateway.complete(req())
    assert time.perf_counter() - start < 1


async def test_garbage_from_a_provider_is_a_bad_request() -> None:
    kernel = make_kernel()
    kernel.provider("fake").add_error("garbage", message="unexpected token <html>")
    with pytest.raises(BadRequest, match="ValueError: unexpected token <html>"):
        await kernel.gateway.complete(req())


async def test_circuit_breaker_opens_then_half_opens() -> None:
    models = {
        "fake": {
            "provider": "scripted",
            "retry": {**FAST_RETRY, "attempts": 1},
            "circuit": {"threshold": 2, "cooldown": 0.2},
        }
    }
    kernel = make_kernel(models)
    provider = kernel.provider("fake")
    provider.add_error("server").add_error("server").add_text("recovered")
    for _ in range(2):
        with pytest.raises(Exception, match="scripted failure"):
            await kernel.gateway.complete(req(cache=False))
    assert kernel.gateway.breakers["fake"].state == "open"
    with pytest.raises(CircuitOpen):
        await kernel.gateway.complete(req(cache=False))
    assert len(provider.requests) == 2
    time.sleep(0.25)
    assert kernel.gateway.breakers["fake"].state == "half-open"
    assert (await kernel.gateway.complete(req(cache=False))).text == "recovered"
    assert kernel.gateway.breakers["fake"].state == "closed"


async def test_fallback_chain_moves_on_and_reports_every_failure() -> None:
    rec = Recorder()
    models = {
        "primary": {"provider": "scripted", "fallbacks": ["second", "third"], "retry": FAST_RETRY},
        "second": {"provider": "scripted", "retry": FAST_RETRY},
        "third": {"provider": "scripted", "default": "third answers"},
    }
    kernel = make_kernel(models, rec)
    kernel.provider("primary").add_error("auth")
    kernel.provider("second").add_error("context")
    response = await kernel.gateway.complete(req(model="primary"))
    assert response.alias == "third" and response.text == "third answers"
    assert [e.data["alias"] for e in rec.events if e.kind == "model.fallback"] == ["second", "third"]

    kernel2 = make_kernel({k: {**v, "default": None} for k, v in models.items()})
    kernel2.provider("primary").add_error("auth")
    kernel2.provider("second").add_error("context")
    kernel2.provider("third").add_error("bad_request")
    with pytest.raises(AllDeploymentsFailed) as err:
        await kernel2.gateway.complete(req(model="primary"))
    message = str(err.value)
    assert "primary: AuthenticationError" in message
    assert "second: ContextWindowExceeded" in message
    assert "third: BadRequest" in message


async def test_price_override_is_exact_and_unknown_models_are_unpriced(capsys: pytest.CaptureFixture[str]) -> None:
    models = {
        "priced": {"provider": "scripted", "model": "house", "price": {"input": 3, "output": 15}},
        "mystery": {"provider": "scripted", "model": "mystery-model"},
    }
    kernel = make_kernel(models)
    kernel.settings.plugin_config("prices").free_providers = []
    kernel.plugins.pm.hook.taskloom_configure(settings=kernel.settings)
    from taskloom.types import Usage

    p = kernel.provider("priced")
    p.queue.append(
        __import__("taskloom.testing", fromlist=["Step"]).Step(
            text="x", usage=Usage(input_tokens=1000, output_tokens=100)
        )
    )
    response = await kernel.gateway.complete(req(model="priced"))
    assert response.cost.total == Decimal("0.0045")
    kernel.provider("mystery").add_text("?")
    response = await kernel.gateway.complete(req(model="mystery"))
    assert response.cost.priced is False
    assert "no cost model knows the price of mystery" in capsys.readouterr().err


class BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def taskloom_event(self, event):  # type: ignore[no-untyped-def]
        self.calls += 1
        raise RuntimeError("sink down")


@pytest.mark.parametrize("traced", [False, True])
async def test_a_raising_sink_is_reported_once_and_others_still_receive(
    traced: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if traced:
        monkeypatch.setenv("TASKLOOM_TRACE_PLUGINS", "1")
    broken, before, after = BrokenSink(), Recorder(), Recorder()
    # Registered on both sides of the broken sink, so whichever order they are called in,
    # one of them comes after it.
    kernel = make_kernel({"fake": {"provider": "scripted", "default": "ok"}}, before, broken, after)
    await kernel.gateway.complete(req("a"))
    await kernel.gateway.complete(req("b"))
    assert before.kinds().count("model.call") == 2 and after.kinds().count("model.call") == 2
    assert broken.calls >= 2
    err = capsys.readouterr().err
    warning = "progress sink test-plugin-1 raised RuntimeError: sink down"
    assert err.count(warning) == 1, err


async def test_a_raising_router_is_a_clear_error_naming_the_plugin() -> None:
    from taskloom.plugins import HookFailed

    class BrokenRouter:
        @hookimpl
        def taskloom_route(self, request, settings):  # type: ignore[no-untyped-def]
            raise KeyError("tiers")

    class SillyRouter:
        @hookimpl
        def taskloom_route(self, request, settings):  # type: ignore[no-untyped-def]
            return "fake"  # a string, not a list of aliases

    kernel = make_kernel({"fake": {"provider": "scripted", "default": "ok"}}, BrokenRouter(), disable=["router"])
    with pytest.raises(HookFailed) as err:
        await kernel.gateway.complete(req())
    assert err.value.plugin == "test-plugin-0" and err.value.hook == "taskloom_route"
    assert "plugin 'test-plugin-0' failed in taskloom_route: KeyError: 'tiers'" in str(err.value)
    assert "TASKLOOM_DISABLE_PLUGINS=test-plugin-0" in str(err.value)
    assert kernel.provider("fake").requests == []

    kernel = make_kernel({"fake": {"provider": "scripted", "default": "ok"}}, SillyRouter(), disable=["router"])
    with pytest.raises(HookFailed, match="returned 'fake', not a list of model aliases"):
        await kernel.gateway.complete(req())


async def test_a_raising_cost_model_makes_the_call_unpriced_and_is_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class BrokenPrices:
        @hookimpl(tryfirst=True)
        def taskloom_price(self, alias, model, provider, usage, settings):  # type: ignore[no-untyped-def]
            raise ArithmeticError("bad table")

    rec = Recorder()
    models = {"fake": {"provider": "scripted", "default": "ok", "price": {"input": 1, "output": 1}}}
    kernel = make_kernel(models, BrokenPrices(), rec)
    first = await kernel.gateway.complete(req("a", metadata={"run_id": "r9"}))
    second = await kernel.gateway.complete(req("b", metadata={"run_id": "r9"}))
    for response in (first, second):
        assert response.text == "ok"
        assert response.cost is not None and response.cost.priced is False and response.cost.source == "test-plugin-0"
    errors = [e for e in rec.events if e.kind == "plugin.error"]
    assert len(errors) == 2 and errors[0].run_id == "r9"
    assert errors[0].data == {
        "plugin": "test-plugin-0",
        "hook": "taskloom_price",
        "error": "ArithmeticError: bad table",
        "consequence": "the call to fake is unpriced",
    }
    calls = await kernel.store.get_calls("r9")
    assert [c.cost.priced for c in calls] == [False, False]
    err = capsys.readouterr().err
    assert err.count("plugin test-plugin-0 raised in taskloom_price (ArithmeticError: bad table)") == 1
    assert "no cost model knows the price" not in err  # it is not unknown: its cost model failed


async def test_failed_calls_are_recorded_in_the_ledger_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_TEST_KEY", "sk-live-0123456789abcdef")
    rec = Recorder()
    models = {
        "primary": {"provider": "scripted", "fallbacks": ["second"], "retry": FAST_RETRY},
        "second": {"provider": "scripted", "model": "second-model", "api_key": {"env": "TL_TEST_KEY"}},
    }
    kernel = make_kernel(models, rec)
    kernel.provider("primary").add_error("auth", message="key sk-live-0123456789abcdef refused")
    kernel.provider("second").add_error("bad_request", message="header Authorization: Bearer abc.def-123456789 bad")
    with pytest.raises(AllDeploymentsFailed):
        await kernel.gateway.complete(req(model="primary", metadata={"run_id": "rf", "task_id": "t"}))
    kernel.provider("primary").add_text("fine now")
    await kernel.gateway.complete(req("other", model="primary", metadata={"run_id": "rf"}))
    calls = await kernel.store.get_calls("rf")
    assert [c.error is None for c in calls] == [False, True]
    failed = calls[0]
    assert failed.alias == "second" and failed.model == "second-model" and failed.provider == "scripted"
    assert failed.task_id == "t" and failed.usage.total_tokens == 0 and failed.latency_s > 0
    assert failed.error.startswith("AllDeploymentsFailed: every model in the chain failed")
    assert "primary: AuthenticationError" in failed.error and "second: BadRequest" in failed.error
    assert "sk-live" not in failed.error and "abc.def-123456789" not in failed.error
    assert "**********" in failed.error
    events = [e for e in rec.events if e.kind == "model.failed"]
    assert len(events) == 1 and events[0].data["error"] == failed.error
    assert events[0].data["chain"] == ["primary", "second"]
    assert events[0].data["alias"] == "second" and events[0].run_id == "rf"


async def test_a_failed_stream_is_recorded_too() -> None:
    kernel = make_kernel()
    kernel.provider("fake").add_error("auth", message="no")
    with pytest.raises(AuthenticationError):
        async for _ in kernel.gateway.stream(req(metadata={"run_id": "rs"})):
            pass
    calls = await kernel.store.get_calls("rs")
    assert len(calls) == 1 and calls[0].error == "AuthenticationError: no" and calls[0].alias == "fake"


async def test_the_deadline_bounds_retries_and_fallbacks() -> None:
    rec = Recorder()
    slow_retry = {"attempts": 3, "base_delay": 0.001, "max_delay": 0.002}
    models = {
        "primary": {"provider": "scripted", "fallbacks": ["second"], "timeout": 5, "retry": slow_retry},
        "second": {"provider": "scripted", "timeout": 5, "default": "too late"},
    }
    kernel = make_kernel(models, rec)
    primary, second = kernel.provider("primary"), kernel.provider("second")
    for _ in range(3):
        primary.add_delay(0.3, "slow")
    second.add_delay(0.3, "slow")
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="the call's deadline passed before primary answered"):
        await kernel.gateway.complete(req(model="primary", deadline=start + 0.2, metadata={"run_id": "dl"}))
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 0.5, elapsed  # one attempt, cut at the deadline; no retry, no fallback
    assert len(primary.requests) == 1 and second.requests == []
    assert kernel.gateway.breakers["primary"].failures == 0  # our clock, not the deployment's fault
    calls = await kernel.store.get_calls("dl")
    assert len(calls) == 1 and calls[0].error.startswith("DeadlineExceeded")

    # A retry wait that would pass the deadline is not waited for: the fallback is tried.
    primary.queue.clear()
    primary.add_error("rate_limit", retry_after=5)
    second.queue.clear()
    second.add_text("second answers")
    models["primary"]["retry"] = {**slow_retry, "max_retry_after": 60}
    start = time.monotonic()
    response = await kernel.gateway.complete(req("x", model="primary", deadline=start + 1.0))
    assert response.alias == "second" and time.monotonic() - start < 0.9
    # With no time left at all, nothing is started.
    with pytest.raises(DeadlineExceeded):
        await kernel.gateway.complete(req("y", model="primary", deadline=time.monotonic() - 1))


async def test_streaming_goes_through_every_stage() -> None:
    rec = Recorder()
    kernel = make_kernel(None, rec)
    provider = kernel.provider("fake")
    provider.add_error("rate_limit").add_text("streamed words arrive")
    stream = kernel.gateway.stream(req("s"))
    pieces = [d.text async for d in stream]
    assert "".join(pieces) == "streamed words arrive"
    assert stream.response is not None and stream.response.attempts == 2
    assert "model.retry" in rec.kinds() and "model.call" in rec.kinds()
    again = kernel.gateway.stream(req("s"))
    assert "".join([d.text async for d in again]) == "streamed words arrive"
    assert again.response.cached


async def test_streamed_tool_call_fragments_are_assembled() -> None:
    kernel = make_kernel()
    kernel.provider("fake").add_tool_call("add", {"a": 1, "b": 22})
    stream = kernel.gateway.stream(req("t"))
    deltas = [d async for d in stream]
    assert sum(1 for d in deltas if d.arguments) >= 2
    call = stream.response.tool_calls[0]
    assert call.name == "add" and call.arguments == {"a": 1, "b": 22}


async def test_unknown_provider_in_config_is_a_clear_error() -> None:
    kernel = make_kernel({"fake": {"provider": "openaii"}})
    with pytest.raises(ConfigError, match=r"\[models.fake\] provider: no provider named 'openaii'"):
        await kernel.gateway.complete(req())


# ---------------------------------------------------------------- hot-path helpers


async def test_within_bounds_a_call_only_where_it_waits() -> None:
    import asyncio

    from taskloom.resilience import within

    async def at_once() -> str:
        return "now"

    async def waits(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "later"

    async def fails_after_waiting() -> None:
        await asyncio.sleep(0)
        raise ValueError("broken")

    assert await within(1.0, at_once()) == "now"
    assert await within(1.0, waits(0.001)) == "later"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await within(0.05, waits(30))
    assert time.monotonic() - started < 5
    with pytest.raises(ValueError, match="broken"):
        await within(1.0, fails_after_waiting())

    # the time spent before the call first waits counts against the timeout
    async def busy_then_waits() -> str:
        time.sleep(0.06)
        await asyncio.sleep(0.5)
        return "late"

    with pytest.raises(TimeoutError):
        await within(0.05, busy_then_waits())

    # a cancellation from outside stays a cancellation, not a timeout
    task = asyncio.ensure_future(within(30, waits(30)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_build_equals_the_validated_model() -> None:
    from taskloom.records import CallRecord
    from taskloom.types import Action, Cost, Event, ModelResponse, RequestMeta, Usage, build

    meta = RequestMeta(run_id="r")
    request = req()
    assert build(Action, kind="model_call", request=request, metadata=meta) == Action(
        kind="model_call", request=request, metadata=meta
    )
    built = build(CallRecord, request_hash="h", alias="a", model="m", provider="p", usage=Usage(input_tokens=3))
    assert built == CallRecord(request_hash="h", alias="a", model="m", provider="p", usage=Usage(input_tokens=3))
    assert built.model_dump_json() == CallRecord.model_validate_json(built.model_dump_json()).model_dump_json()
    assert built.model_fields_set == {"request_hash", "alias", "model", "provider", "usage"}
    # defaults made by a factory are fresh per instance
    one, two = build(Event, kind="x"), build(Event, kind="x")
    one.data["k"] = 1
    assert two.data == {}
    assert build(ModelResponse, message=Message.assistant("hi")).cost is None
    assert Cost(total=Decimal("0.1")) + Cost(total=Decimal("0.2")) == Cost(total=Decimal("0.3"))
    with pytest.raises(TypeError, match="no field named colour"):
        build(Usage, colour="red")
    with pytest.raises(TypeError, match="required field 'request_hash' is missing"):
        build(CallRecord, alias="a", model="m", provider="p")


def test_models_built_with_every_field_share_a_fields_set_nothing_can_corrupt() -> None:
    import copy
    import pickle

    from taskloom.types import Usage, assign, build, replace

    one = build(Usage, input_tokens=1, output_tokens=2, cached_input_tokens=0, reasoning_tokens=0)
    two = build(Usage, input_tokens=3, output_tokens=4, cached_input_tokens=0, reasoning_tokens=0)
    every = {"input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"}
    assert one.model_fields_set is two.model_fields_set == every
    partial = build(Usage, input_tokens=5)
    assert partial.model_fields_set == {"input_tokens"} and partial.model_fields_set is not one.model_fields_set
    # assignment (pydantic's and assign) adds names that are there already: nothing changes
    one.output_tokens = 7
    assign(two, input_tokens=9)
    assert (one.output_tokens, two.input_tokens) == (7, 9) and one.model_fields_set == every
    assert one.model_dump(exclude_unset=True) == {
        "input_tokens": 1, "output_tokens": 7, "cached_input_tokens": 0, "reasoning_tokens": 0
    }  # fmt: skip
    # what would change the shared set for every instance raises, saying what to do
    for change in (
        lambda s: s.discard("input_tokens"),
        lambda s: s.clear(),
        lambda s: s.add("colour"),
        lambda s: s.update({"colour"}),
        lambda s: s.update(name for name in ["input_tokens", "colour"]),
        lambda s: s.difference_update({"input_tokens"}),
        lambda s: s.__ior__({"colour"}),
    ):
        with pytest.raises(TypeError, match="shared"):
            change(one.model_fields_set)
    assert one.model_fields_set == every
    # copies are their own
    for dup in (one.model_copy(), copy.deepcopy(one), pickle.loads(pickle.dumps(one)), replace(one, input_tokens=2)):
        assert dup.model_fields_set == every and dup.model_fields_set is not one.model_fields_set
    copied = set(one.model_fields_set)
    copied.discard("input_tokens")
    assert one.model_fields_set == every
