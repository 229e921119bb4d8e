"""Load balancing within a tier: order the deployments that can take a call.

The first of the order gets the call; the others follow it in the fallback chain.

* ``weighted``: the first is drawn at random in proportion to ``weight``; the rest follow
  by weight.
* ``least_busy``: fewest calls in flight (per unit of weight), then fewest requests in the
  last minute.
* ``latency``: lowest time-decayed average latency. A deployment with no recent samples
  (never used, or its samples aged out) goes first, so it is measured again.
"""

from __future__ import annotations

import random

from .health import DeploymentState


def order(strategy: str, deployments: list[DeploymentState], now: float, rng: random.Random) -> list[DeploymentState]:
    if len(deployments) < 2:
        return deployments
    if strategy == "least_busy":
        return sorted(deployments, key=lambda d: (d.busy(now) / d.weight, len(d.requests) / d.weight))
    if strategy == "latency":
        return sorted(deployments, key=lambda d: (_latency_key(d, now), -d.weight))
    return _weighted(deployments, rng)


def _latency_key(d: DeploymentState, now: float) -> float:
    value = d.latency.value(now)
    return -1.0 if value is None else value


def _weighted(deployments: list[DeploymentState], rng: random.Random) -> list[DeploymentState]:
    total = 0.0
    for d in deployments:
        total += d.weight
    point = rng.random() * total
    first = deployments[-1]
    for d in deployments:
        point -= d.weight
        if point < 0:
            first = d
            break
    rest = sorted((d for d in deployments if d is not first), key=lambda d: -d.weight)
    return [first, *rest]
