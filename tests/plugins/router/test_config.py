"""Bad tier configuration fails with a message naming the tier, the alias and the fix."""

from __future__ import annotations

import pytest
from taskloom import Agent, run_agent
from taskloom.errors import ConfigError
from taskloom_router import router_of

from .conftest import config, make

pytestmark = pytest.mark.anyio


def failure(cfg: dict) -> str:
    kernel = make(cfg)
    info = kernel.plugins.infos["router"]
    assert info.status == "failed"
    assert info.reason
    return info.reason


def test_unknown_alias_is_named_with_a_suggestion() -> None:
    reason = failure(
        config({"tiers": [{"name": "weak", "deployments": ["nanoo"]}, {"name": "strong", "deployments": ["gpt5"]}]})
    )
    assert "tier 'weak': unknown model alias 'nanoo' (did you mean 'nano'?)" in reason
    assert "tier 'strong': unknown model alias 'gpt5'" in reason
    assert "define [models.<alias>]" in reason


def test_empty_tier() -> None:
    reason = failure(config({"tiers": [{"name": "weak", "deployments": []}]}))
    assert "tier 'weak' has no deployments" in reason


def test_auto_is_not_a_deployment() -> None:
    assert '"auto" is the router itself' in failure(config({"tiers": [{"name": "weak", "deployments": ["auto"]}]}))


def test_alias_in_two_tiers_and_duplicate_names() -> None:
    assert "'nano' is in tiers 'weak' and 'base'" in failure(
        config({"tiers": [{"name": "weak", "deployments": ["nano"]}, {"name": "base", "deployments": ["nano"]}]})
    )
    assert "repeated: weak" in failure(
        config({"tiers": [{"name": "weak", "deployments": ["nano"]}, {"name": "weak", "deployments": ["mini"]}]})
    )


def test_thresholds_must_rise() -> None:
    reason = failure(
        config(
            {
                "tiers": [
                    {"name": "a", "deployments": ["nano"], "max_score": 6},
                    {"name": "b", "deployments": ["mini"], "max_score": 3},
                ]
            }
        )
    )
    assert "must rise" in reason


def test_unknown_key_and_bad_task_type() -> None:
    assert "unknown key 'stratgy' (did you mean 'strategy'?)" in failure(config({"stratgy": "latency"}))
    assert "use a number from 1 to 10" in failure(config({"task_types": {"triage": 12}}))


def test_invalid_refusal_regex() -> None:
    assert "invalid regex" in failure(config({"escalation": {"refusal_patterns": ["(unclosed"]}}))


def test_default_thresholds_split_evenly() -> None:
    router = router_of(make(config()))
    assert router.thresholds == [4.0, 7.0, 10.0]
    assert router.tier_names == ["weak", "base", "strong"]


async def test_auto_without_tiers_is_a_clear_error() -> None:
    cfg = config()
    cfg["plugins"]["router"]["tiers"] = []
    kernel = make(cfg)
    with pytest.raises(ConfigError, match=r"\[plugins.router\] has no tiers"):
        await run_agent(kernel, Agent(model="auto"), "hi")


async def test_failed_router_makes_auto_fail_clearly() -> None:
    kernel = make(config({"tiers": [{"name": "weak", "deployments": ["nope"]}]}))
    with pytest.raises(ConfigError, match="needs a router"):
        await run_agent(kernel, Agent(model="auto"), "hi")
    with pytest.raises(ConfigError, match=r"router plugin is failed: .*unknown model alias 'nope'"):
        router_of(kernel)
