"""The built-in plugins: memory cache, prices, limits, jsonl and console sinks."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from taskloom import Event, Message, ModelRequest, load_kernel
from taskloom.builtin.limits import Limits, LimitsConfig, Tier
from taskloom.builtin.memory_cache import MemoryCache
from taskloom.builtin.prices import Prices
from taskloom.config import load_settings
from taskloom.errors import PolicyDenied
from taskloom.types import Action, RequestMeta, Usage

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_cache_ttl_lru_and_counters() -> None:
    clock = Clock()
    cache = MemoryCache(max_entries=2, max_bytes=100, ttl=10, clock=clock)
    await cache.set("a:1", b"one")
    await cache.set("a:2", b"two")
    assert await cache.get("a:1") == b"one"  # a:1 is now most recent
    await cache.set("b:1", b"three")  # evicts a:2, the least recently used
    assert await cache.get("a:2") is None
    assert await cache.get("b:1") == b"three"
    clock.now += 11
    assert await cache.get("a:1") is None  # expired
    stats = cache.stats()
    assert stats["hits"] == 2 and stats["misses"] == 2 and stats["evictions"] == 1 and stats["expirations"] == 1


async def test_memory_cache_byte_cap_and_prefix_invalidation() -> None:
    cache = MemoryCache(max_entries=100, max_bytes=10)
    await cache.set("x:1", b"12345")
    await cache.set("x:2", b"12345")
    await cache.set("y:1", b"123")  # 13 bytes > 10: x:1 goes
    assert await cache.get("x:1") is None
    assert cache.stats()["bytes"] == 8
    await cache.set("huge", b"x" * 50)  # larger than the whole cache: not kept
    assert await cache.get("huge") is None
    assert await cache.invalidate("x:") == 1
    assert await cache.get("y:1") == b"123"


def _prices(config: dict | None = None) -> tuple[Prices, object]:
    settings = load_settings({"plugins": {"prices": config or {}}})
    settings.set_plugin_config("prices", __import__("taskloom.builtin.prices", fromlist=["PricesConfig"]).PricesConfig)
    prices = Prices()
    prices.taskloom_configure(settings)
    return prices, settings


def test_prices_exact_decimal_with_cached_input() -> None:
    prices, settings = _prices()
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=400_000, output_tokens=10_000)
    cost = prices.taskloom_price(
        alias="x", model="gpt-4o-mini-2024-07-18", provider="openai", usage=usage, settings=settings
    )
    # 600k * 0.15 + 400k * 0.075 + 10k * 0.60, per million
    assert cost.total == Decimal("0.09") + Decimal("0.03") + Decimal("0.006")
    assert cost.input == Decimal("0.09") and cost.cached_input == Decimal("0.03") and cost.output == Decimal("0.006")


def test_prices_longest_prefix_and_unknown_and_local() -> None:
    prices, settings = _prices({"models": {"my-model": {"input": 1, "output": 2}}})
    u = Usage(input_tokens=1_000_000, output_tokens=0)
    assert prices.taskloom_price(
        alias="x", model="gpt-4o-2024-08-06", provider="openai", usage=u, settings=settings
    ).total == Decimal("2.5")
    assert prices.taskloom_price(
        alias="x", model="gpt-4.1-mini", provider="openai", usage=u, settings=settings
    ).total == Decimal("0.4")
    assert prices.taskloom_price(
        alias="x", model="my-model", provider="vllm", usage=u, settings=settings
    ).total == Decimal("1")
    assert prices.taskloom_price(alias="x", model="who-knows", provider="vllm", usage=u, settings=settings) is None
    assert (
        prices.taskloom_price(alias="x", model="anything", provider="llamacpp", usage=u, settings=settings).total == 0
    )


def _limits(config: dict) -> tuple[Limits, object, Clock]:
    clock = Clock()
    limits = Limits(clock=clock)
    settings = load_settings(
        {"plugins": {"limits": config}, "models": {"small": {"provider": "scripted", "context_window": 50}}}
    )
    settings.set_plugin_config("limits", LimitsConfig)
    limits.taskloom_configure(settings)
    return limits, settings, clock


def _call(model: str = "m", user: str = "ann", text: str = "hi", tier: str | None = None) -> Action:
    return Action(
        kind="model_call",
        request=ModelRequest(model=model, messages=[Message.user(text)]),
        metadata=RequestMeta(user=user, tier=tier),
    )


def _deployment(alias: str, text: str = "hi", user: str = "ann", provider: object = None) -> Action:
    return Action(
        kind="deployment",
        request=ModelRequest(model="requested", messages=[Message.user(text)]),
        model=alias,
        provider=provider,
        metadata=RequestMeta(user=user),
    )


def test_limits_requests_per_minute_sliding_window() -> None:
    limits, settings, clock = _limits({"tiers": {"free": {"requests_per_minute": 2}}, "default_tier": "free"})
    assert limits.taskloom_check(_call(), settings) is None
    clock.now += 30
    assert limits.taskloom_check(_call(), settings) is None
    denial = limits.taskloom_check(_call(), settings)
    assert denial is not None and "2 requests a minute" in denial.reason and "try again in 30 s" in denial.reason
    assert limits.taskloom_check(_call(user="bob"), settings) is None  # per user
    clock.now += 31  # the first request left the window
    assert limits.taskloom_check(_call(), settings) is None


def test_limits_tokens_per_day_models_tools_depth_runs() -> None:
    config = {
        "tiers": {
            "free": {
                "tokens_per_day": 100,
                "allowed_models": ["m"],
                "allowed_tools": ["search"],
                "max_delegation_depth": 1,
                "concurrent_runs": 1,
            },
            "pro": {},
        },
        "users": {"vip": "pro"},
        "default_tier": "free",
    }
    limits, settings, clock = _limits(config)
    assert "may not use model 'big'" in limits.taskloom_check(_call(model="big"), settings).reason
    assert limits.taskloom_check(_call(model="big", user="vip"), settings) is None
    limits.taskloom_event(
        Event(kind="model.call", data={"user": "ann", "usage": Usage(input_tokens=80, output_tokens=30)})
    )
    assert "100 tokens a day; ann used 110" in limits.taskloom_check(_call(), settings).reason
    clock.now += 86_401
    assert limits.taskloom_check(_call(), settings) is None
    tool = Action(kind="tool_call", tool="shell", metadata=RequestMeta(user="ann"))
    assert "may not use tool 'shell'" in limits.taskloom_check(tool, settings).reason
    deep = Action(kind="delegate", metadata=RequestMeta(user="ann", depth=2))
    assert "delegation 1 deep" in limits.taskloom_check(deep, settings).reason
    run = Action(kind="run", metadata=RequestMeta(user="ann"))
    assert limits.taskloom_check(run, settings) is None
    limits.taskloom_event(Event(kind="run.start", run_id="r1", data={"user": "ann"}))
    assert "1 concurrent runs" in limits.taskloom_check(run, settings).reason
    limits.taskloom_event(Event(kind="run.finish", run_id="r1", data={"user": "ann"}))
    assert limits.taskloom_check(run, settings) is None


def test_limits_context_window_check_uses_the_token_counter() -> None:
    limits, settings, _ = _limits({})
    assert limits.taskloom_check(_deployment("small", text="short"), settings) is None
    denial = limits.taskloom_check(_deployment("small", text="word " * 200), settings)
    assert denial is not None and "small holds 50" in denial.reason


def test_limits_context_window_comes_from_the_provider_and_its_token_counter() -> None:
    from taskloom.testing import ScriptedProvider
    from taskloom.tokens import count_messages

    limits, settings, _ = _limits({})
    prompt = "hello world " * 10
    tiktoken_count = count_messages([Message.user(prompt)], "gpt-4o")
    assert tiktoken_count > 20  # so the outcomes below can only come from the provider's counter
    provider = ScriptedProvider(context_window=20)  # no context_window in config: the provider declares it
    provider.count_tokens = lambda messages: 7  # type: ignore[method-assign]  # a tokenizer that packs tightly
    assert limits.taskloom_check(_deployment("unconfigured", prompt, provider=provider), settings) is None
    provider.count_tokens = lambda messages: 999  # type: ignore[method-assign]
    denial = limits.taskloom_check(_deployment("unconfigured", prompt, provider=provider), settings)
    assert denial is not None and denial.reason == "the prompt has about 999 tokens; unconfigured holds 20"

    def cannot_count(messages: list[Message]) -> int:
        raise NotImplementedError

    provider.count_tokens = cannot_count  # type: ignore[method-assign]
    denial = limits.taskloom_check(_deployment("unconfigured", prompt, provider=provider), settings)
    assert denial is not None and f"about {tiktoken_count} tokens" in denial.reason  # tiktoken's count


async def test_limits_context_window_of_the_scripted_provider_through_the_gateway() -> None:
    config = {"taskloom": {"store": "memory", "default_model": "tiny"}, "models": {"tiny": {"provider": "scripted"}}}
    kernel = load_kernel(config)
    provider = kernel.provider("tiny")
    provider.context_window = 30
    provider.add_text("fits")
    assert (await kernel.gateway.complete(ModelRequest(model="", messages=[Message.user("hi")]))).text == "fits"
    # 1006 is the scripted provider's own count (4 characters a token); tiktoken says about 807.
    with pytest.raises(PolicyDenied, match="the prompt has about 1006 tokens; tiny holds 30"):
        await kernel.gateway.complete(ModelRequest(model="", messages=[Message.user("word " * 800)]))
    assert len(provider.requests) == 1


async def test_allowed_models_applies_to_fallbacks_and_routed_models() -> None:
    from taskloom import hookimpl
    from taskloom.testing import register_plugin

    class Events:
        def __init__(self) -> None:
            self.events: list[Event] = []

        @hookimpl
        def taskloom_event(self, event: Event) -> None:
            self.events.append(event)

    class RouteToBig:
        @hookimpl
        def taskloom_route(self, request, settings):  # type: ignore[no-untyped-def]
            return ["big", "small"] if request.model == "auto" else None

    config = {
        "taskloom": {"store": "memory", "default_model": "small", "user": "ann", "router": "route-to-big"},
        "models": {
            "small": {"provider": "scripted", "fallbacks": ["big"], "retry": {"attempts": 1}},
            "big": {"provider": "scripted", "default": "big answers"},
        },
        "plugins": {"limits": {"tiers": {"free": {"allowed_models": ["small"]}}, "default_tier": "free"}},
    }
    events = Events()
    with register_plugin(events, "events"), register_plugin(RouteToBig(), "route-to-big"):
        kernel = load_kernel(config)
    small, big = kernel.provider("small"), kernel.provider("big")
    small.add_error("server")
    from taskloom.errors import AllDeploymentsFailed

    with pytest.raises(AllDeploymentsFailed, match=r"small: ServerError.*big: PolicyDenied: .*may not use model 'big'"):
        await kernel.gateway.complete(ModelRequest(model="small", messages=[Message.user("a")]))
    assert big.requests == [] and len(small.requests) == 1
    skips = [e.data for e in events.events if e.kind == "model.skip"]
    assert skips == [{"alias": "big", "plugin": "limits", "reason": skips[0]["reason"]}]

    small.add_text("small answers")  # the router picks big first: it is skipped, small is called
    response = await kernel.gateway.complete(ModelRequest(model="auto", messages=[Message.user("b")]))
    assert response.alias == "small" and response.text == "small answers"
    assert big.requests == []

    limits_config = kernel.settings.plugin_config("limits")
    limits_config.tiers["pro"] = Tier()
    limits_config.users["vip"] = "pro"
    vip = ModelRequest(model="auto", messages=[Message.user("c")], metadata=RequestMeta(user="vip"))
    assert (await kernel.gateway.complete(vip)).alias == "big"
    # The same prompt for ann: the cached answer came from big, so it is not served to her.
    small.add_text("small again")
    again = await kernel.gateway.complete(ModelRequest(model="auto", messages=[Message.user("c")]))
    assert not again.cached and again.alias == "small"


def test_limits_config_rejects_unknown_tier() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="user 'ann' has unknown tier 'gold'"):
        LimitsConfig.model_validate({"tiers": {"free": {}}, "users": {"ann": "gold"}})


async def test_limits_through_the_gateway() -> None:
    config = {
        "taskloom": {"store": "memory", "default_model": "fake", "user": "ann"},
        "models": {"fake": {"provider": "scripted", "default": "ok"}},
        "plugins": {"limits": {"tiers": {"free": {"requests_per_minute": 1}}, "default_tier": "free"}},
    }
    kernel = load_kernel(config)
    from taskloom import Agent, run_agent

    assert (await run_agent(kernel, Agent(), "one")).ok
    result = await run_agent(kernel, Agent(), "two")
    assert result.stop_reason == "denied" and "denied by limits" in result.detail


async def test_jsonl_sink_writes_every_event(tmp_path: Path) -> None:
    path = tmp_path / "events" / "log.jsonl"
    config = {
        "taskloom": {"store": "memory", "default_model": "fake"},
        "models": {"fake": {"provider": "scripted", "default": "ok"}},
        "plugins": {"jsonl": {"path": str(path)}},
    }
    kernel = load_kernel(config)
    await kernel.gateway.complete(
        ModelRequest(model="fake", messages=[Message.user("x")], metadata=RequestMeta(run_id="r9"))
    )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["model.call"]
    assert lines[0]["run_id"] == "r9" and lines[0]["data"]["usage"]["input_tokens"] > 0


async def test_console_sink_prints_progress(capsys: pytest.CaptureFixture[str]) -> None:
    config = {
        "taskloom": {"store": "memory", "default_model": "fake"},
        "models": {"fake": {"provider": "scripted", "default": "ok"}},
        "plugins": {"console": {"mode": "always"}},
    }
    kernel = load_kernel(config)
    await kernel.gateway.complete(ModelRequest(model="fake", messages=[Message.user("x")]))
    err = capsys.readouterr().err
    assert "model fake:" in err and "tokens" in err
    quiet = load_kernel({**config, "plugins": {"console": {"mode": "never"}}})
    await quiet.gateway.complete(ModelRequest(model="fake", messages=[Message.user("y")]))
    assert capsys.readouterr().err == ""


async def test_denial_message_names_the_plugin() -> None:
    kernel = load_kernel(
        {
            "taskloom": {"store": "memory"},
            "plugins": {"limits": {"tiers": {"t": {"allowed_tools": []}}, "default_tier": "t"}},
        }
    )
    with pytest.raises(PolicyDenied, match="denied by limits: tier 't' may not use tool 'x'"):
        kernel.check(Action(kind="tool_call", tool="x"))


def test_limits_says_which_kinds_it_checks_and_whether_it_wants_events() -> None:
    limits, settings, _ = _limits({})
    assert limits.taskloom_check_kinds(settings) == ["deployment"]  # the context window only
    assert limits.taskloom_wants_events(settings) is False
    limits, settings, _ = _limits({"context_check": False})
    assert limits.taskloom_check_kinds(settings) == []
    limits, settings, _ = _limits({"tiers": {"free": {"allowed_tools": ["a"]}}})
    assert limits.taskloom_check_kinds(settings) is None  # a tier: every kind
    assert limits.taskloom_wants_events(settings) is False  # nothing to count
    for counted in ({"tokens_per_day": 10}, {"concurrent_runs": 1}):
        limits, settings, _ = _limits({"tiers": {"free": counted}})
        assert limits.taskloom_wants_events(settings) is True, counted


async def test_limits_counts_tokens_per_day_through_events_of_the_gateway() -> None:
    """The tier that counts tokens makes limits a sink again: the day's usage reaches it
    through ``model.call`` events and the next call is denied."""
    config = {
        "taskloom": {
            "store": "memory",
            "default_model": "fake",
            "user": "ann",
            "plugins": ["memory-cache", "memory-store", "prices", "limits", "console", "jsonl", "scripted"],
        },
        "models": {"fake": {"provider": "scripted", "default": "a long enough answer"}},
        "plugins": {
            "limits": {"tiers": {"free": {"tokens_per_day": 5}}, "default_tier": "free"},
            "console": {"mode": "never"},
        },
    }
    kernel = load_kernel(config)
    assert kernel.event_sinks == ["limits"]
    from taskloom import Agent, run_agent

    assert (await run_agent(kernel, Agent(), "one")).ok
    result = await run_agent(kernel, Agent(), "two")
    assert result.stop_reason == "denied" and "tokens a day" in (result.detail or ""), result.detail


async def test_console_and_jsonl_want_events_only_when_they_show_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskloom.builtin.console import ConsoleSink
    from taskloom.builtin.jsonl import JsonlSink

    monkeypatch.delenv("TASKLOOM_PROGRESS", raising=False)
    monkeypatch.delenv("TASKLOOM_EVENTS_JSONL", raising=False)

    def settings(plugins: dict) -> object:
        s = load_settings({"plugins": plugins})
        from taskloom.builtin.console import ConsoleConfig
        from taskloom.builtin.jsonl import JsonlConfig

        s.set_plugin_config("console", ConsoleConfig)
        s.set_plugin_config("jsonl", JsonlConfig)
        return s

    for mode, wanted in (("never", False), ("always", True)):
        sink = ConsoleSink()
        s = settings({"console": {"mode": mode}})
        sink.taskloom_configure(s)
        assert sink.taskloom_wants_events(s) is wanted, mode
    monkeypatch.setenv("TASKLOOM_PROGRESS", "1")
    sink = ConsoleSink()
    s = settings({"console": {"mode": "never"}})
    sink.taskloom_configure(s)
    assert sink.taskloom_wants_events(s) is True  # the variable wins
    jsonl = JsonlSink()
    s = settings({})
    jsonl.taskloom_configure(s)
    assert jsonl.taskloom_wants_events(s) is False  # no path: it would drop every event
    jsonl = JsonlSink()
    s = settings({"jsonl": {"path": str(tmp_path / "e.jsonl")}})
    jsonl.taskloom_configure(s)
    assert jsonl.taskloom_wants_events(s) is True
    assert jsonl.file is not None
    jsonl.file.close()
