"""Load balancing within a tier, and health learned from the gateway's events."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from taskloom import Agent, Event, Message, ModelRequest, run_agent
from taskloom.resilience import CircuitBreaker
from taskloom.types import RequestMeta, Usage
from taskloom_router import NoDeploymentAvailable, router_of
from taskloom_router.health import DecayingAverage
from taskloom_router.plugin import Router

from .conftest import MODELS, Clock, config, make

pytestmark = pytest.mark.anyio

MODELS3 = {
    **MODELS,
    "nano2": {**MODELS["nano"], "default": "nano2: {prompt}"},
    "nano3": {**MODELS["nano"], "default": "nano3: {prompt}"},
}


def weak_pool(strategy: str, deployments: list[Any] | None = None, **extra: Any) -> Router:
    tiers = [
        {"name": "weak", "deployments": deployments or ["nano", "nano2", "nano3"], "strategy": strategy},
        {"name": "strong", "deployments": ["big"]},
    ]
    router = router_of(make(config({"tiers": tiers, **extra}, models=MODELS3)))
    router.clock = Clock()
    return router


def req(agent: str = "a", task_id: str | None = None) -> ModelRequest:
    return ModelRequest(
        model="auto",
        messages=[Message.user("hi")],
        metadata=RequestMeta(task_type="classification", agent=agent, task_id=task_id),
    )


def call_event(router: Router, alias: str, latency: float = 0.1, agent: str = "a", task_id: str | None = None) -> None:
    router.taskloom_event(
        Event(
            kind="model.call",
            agent=agent,
            task_id=task_id,
            data={
                "alias": alias,
                "latency_s": latency,
                "usage": Usage(input_tokens=10, output_tokens=5),
                "cached": False,
            },
        )
    )


def error_event(
    router: Router, alias: str, error: str = "ServerError: boom", final: bool = True, agent: str = "a"
) -> None:
    router.taskloom_event(
        Event(
            kind="model.error" if final else "model.retry",
            agent=agent,
            data={"alias": alias, "error": error, "transient": True},
        )
    )


def test_weighted_random_follows_weights() -> None:
    router = weak_pool(
        "weighted", [{"model": "nano", "weight": 6}, {"model": "nano2", "weight": 3}, {"model": "nano3", "weight": 1}]
    )
    firsts = Counter()
    for i in range(3000):
        chain = router.decide(req(task_id=str(i)))
        firsts[chain[0]] += 1
        assert sorted(chain[:3]) == ["nano", "nano2", "nano3"] and chain[3] == "big"
        call_event(router, chain[0], task_id=str(i))
    assert 0.55 < firsts["nano"] / 3000 < 0.65
    assert 0.25 < firsts["nano2"] / 3000 < 0.35
    assert 0.07 < firsts["nano3"] / 3000 < 0.13


def test_least_busy_spreads_in_flight_calls() -> None:
    router = weak_pool("least_busy")
    firsts = [router.decide(req(task_id=str(i)))[0] for i in range(3)]  # none reports back: all in flight
    assert sorted(firsts) == ["nano", "nano2", "nano3"]
    call_event(router, "nano2", task_id=str(firsts.index("nano2")))
    assert router.decide(req(task_id="x"))[0] == "nano2"


def test_latency_prefers_the_fastest_and_old_samples_age_out() -> None:
    router = weak_pool("latency", latency_half_life_s=10)
    clock = router.clock
    for alias, latency in (("nano", 0.9), ("nano2", 0.2), ("nano3", 0.5)):
        router.decide(req())
        call_event(router, alias, latency)
    assert router.decide(req())[:3] == ["nano2", "nano3", "nano"]
    call_event(router, "nano2", 0.2)
    # nano2 turns slow; the decaying average follows within a few samples
    for _ in range(3):
        clock.now += 10
        router.decide(req())
        call_event(router, "nano2", 3.0)
    assert router.decide(req())[0] == "nano3"
    call_event(router, "nano3", 0.5)
    # much later, every sample has aged out: nano2's slow spell is forgotten, and a deployment
    # with no recent sample (nano) is measured again first; the others follow by fresh samples
    clock.now += 1000
    assert all(router.by_alias[a].latency.value(clock.now) is None for a in ("nano", "nano2", "nano3"))
    for alias, latency in (("nano3", 0.5), ("nano2", 0.3)):
        router.decide(req())
        call_event(router, alias, latency)
    assert router.decide(req())[:3] == ["nano", "nano2", "nano3"]


def test_a_lost_completion_stops_counting_after_inflight_ttl() -> None:
    router = weak_pool("least_busy", ["nano", "nano2"], inflight_ttl_s=30)
    clock = router.clock
    assert router.decide(req(task_id="lost"))[0] == "nano"  # its model.call never arrives
    for i in range(3):  # nano looks busy: every other call goes to nano2 (which reports back)
        assert router.decide(req(task_id=str(i)))[0] == "nano2"
        call_event(router, "nano2", task_id=str(i))
    clock.now += 29
    assert router.decide(req(task_id="a"))[0] == "nano2"
    call_event(router, "nano2", task_id="a")
    clock.now += 2  # past the TTL: the lost call no longer counts
    assert router.by_alias["nano"].busy(clock.now) == 0
    assert router.decide(req(task_id="b"))[0] == "nano"
    snapshot = router.by_alias["nano"].snapshot(clock.now)
    assert snapshot["expired_in_flight"] == 1 and snapshot["in_flight"] == 1  # the call just routed


def test_decaying_average_weights_recent_samples() -> None:
    avg = DecayingAverage(half_life=10.0)
    avg.add(1.0, 0.0)
    avg.add(3.0, 10.0)  # the first sample now weighs half
    assert avg.value(10.0) == pytest.approx((0.5 * 1.0 + 3.0) / 1.5)
    assert avg.value(10.0 + 10 * 5) is None  # weight 1.5 / 32 < 0.1


def test_errors_put_a_deployment_in_cooldown_and_it_comes_back() -> None:
    router = weak_pool("weighted", ["nano", "nano2"], cooldown={"failures": 2, "window_s": 60, "seconds": 30})
    error_event(router, "nano", final=False)
    assert "nano" in router.decide(req())
    error_event(router, "nano")
    plan = router.plan(req())
    assert [d.alias for d in plan.chain] == ["nano2", "big"]
    assert "cooling down for 30 s more after errors (last: ServerError: boom)" in plan.skipped["weak/nano"]
    router.clock.now += 31
    assert "nano" in router.decide(req())


def test_request_faults_do_not_count_and_rate_limits_cool_down_at_once() -> None:
    router = weak_pool("weighted", ["nano", "nano2"], cooldown={"failures": 1})
    error_event(router, "nano", "BadRequest: your prompt is malformed")
    assert "nano" in router.decide(req())
    error_event(router, "nano2", "RateLimitError: slow down", final=False)
    assert "nano2" not in router.decide(req())


def test_circuit_mirror_opens_after_the_models_threshold() -> None:
    models = {**MODELS3, "nano": {**MODELS["nano"], "circuit": {"threshold": 2, "cooldown": 5}}}
    router = router_of(
        make(
            config(
                {
                    "tiers": [
                        {"name": "weak", "deployments": ["nano", "nano2"]},
                        {"name": "strong", "deployments": ["big"]},
                    ],
                    "cooldown": {"failures": 100},
                },
                models=models,
            )
        )
    )
    router.clock = Clock()
    error_event(router, "nano")
    assert "nano" in router.decide(req())
    error_event(router, "nano")
    assert "circuit open after 2 consecutive failures" in router.plan(req()).skipped["weak/nano"]
    router.clock.now += 6
    assert "nano" in router.decide(req())
    call_event(router, "nano")
    assert router.by_alias["nano"].consecutive == 0


def test_a_bound_kernel_reads_the_gateways_breakers() -> None:
    kernel = make(config())
    router = router_of(kernel)
    breaker = kernel.gateway.breaker("nano")
    assert isinstance(breaker, CircuitBreaker)
    for _ in range(breaker.threshold):
        breaker.record_failure()
    plan = router.plan(req())
    assert plan.skipped["weak/nano"].startswith("circuit open in the gateway")
    assert [d.alias for d in plan.chain] == ["mini"]  # the next tier takes it


def test_rpm_and_tpm_limits_are_respected() -> None:
    router = weak_pool("weighted", [{"model": "nano", "rpm": 2}, {"model": "nano2", "tpm": 20}])
    firsts = Counter(router.decide(req(task_id=str(i)))[0] for i in range(4))  # "hi" is about 7 tokens
    assert firsts == {"nano": 2, "nano2": 2}
    skipped = router.plan(req()).skipped
    assert skipped["weak/nano"] == "at its rpm limit (2/2 requests in the last minute)"
    assert skipped["weak/nano2"].startswith("over its tpm limit")
    router.clock.now += 61
    assert router.plan(req()).skipped == {}


def test_every_deployment_down_is_a_clear_error() -> None:
    router = weak_pool("weighted", ["nano"], cooldown={"failures": 1})
    error_event(router, "nano", "ServerError: weak is down")
    error_event(router, "big", "ConnectionFailed: strong is unreachable")
    with pytest.raises(NoDeploymentAvailable) as info:
        router.decide(req())
    message = str(info.value)
    assert "weak/nano: cooling down" in message and "ServerError: weak is down" in message
    assert "strong/big: cooling down" in message and "ConnectionFailed: strong is unreachable" in message
    assert info.value.transient


async def test_every_deployment_failing_in_the_gateway_lists_each_failure() -> None:
    kernel = make(config({"escalation": {"max_tiers": 2}}))
    for alias in ("nano", "mini", "big"):
        kernel.provider(alias).add_error("auth", message=f"{alias} key refused")
    result = await run_agent(kernel, Agent(model="auto", task_type="classification"), "hi")
    assert result.stop_reason == "error"
    assert "AllDeploymentsFailed" in result.detail
    for alias in ("nano", "mini", "big"):
        assert f"{alias}: AuthenticationError: {alias} key refused" in result.detail
    # then the router stops sending calls there: every deployment is cooling down
    router = router_of(kernel)
    router.config.cooldown.failures = 1
    for alias in ("nano", "mini", "big"):
        kernel.provider(alias).add_error("server", message=f"{alias} 500")
    result = await run_agent(kernel, Agent(model="auto", task_type="classification"), "hi")
    result = await run_agent(kernel, Agent(model="auto", task_type="classification"), "hi")
    assert result.stop_reason == "error" and "router: no deployment can take this call" in result.detail
