"""Prices for cost estimates, per token, in the order the ``prices`` cost model uses them:
the deployment's own ``price`` in ``[plugins.router]``, then ``[models.<alias>] price``,
then free for local providers, then the ``prices`` plugin's extra models and the kernel's
shipped list-price table (``taskloom.builtin.prices.PRICE_TABLE``). None: unpriced."""

from __future__ import annotations

from taskloom.builtin.prices import PRICE_TABLE
from taskloom.config import ModelConfig, Settings

from .config import Deployment

MILLION = 1_000_000.0
FREE_PROVIDERS = ("llamacpp", "ollama", "scripted")


def per_token(dep: Deployment, model: ModelConfig, settings: Settings) -> tuple[float | None, float | None]:
    if dep.price is not None:
        return dep.price.input / MILLION, dep.price.output / MILLION
    if model.price is not None:
        return model.price.input / MILLION, model.price.output / MILLION
    prices_config = settings.plugin_config("prices")
    free = getattr(prices_config, "free_providers", FREE_PROVIDERS)
    if model.provider in free:
        return 0.0, 0.0
    name = (model.model or model.alias).lower().rsplit("/", 1)[-1]
    extra = {k.lower(): v for k, v in getattr(prices_config, "models", {}).items()}
    if name in extra:
        return extra[name].input / MILLION, extra[name].output / MILLION
    key = (
        name
        if name in PRICE_TABLE
        else max((k for k in PRICE_TABLE if name.startswith(k + "-")), key=len, default=None)
    )
    if key is None:
        return None, None
    inp, _cached, out = PRICE_TABLE[key]
    return float(inp) / MILLION, float(out) / MILLION
