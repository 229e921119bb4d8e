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
    price_in, price_out = per_million(dep, model, settings)
    if price_in is None or price_out is None:
        return None, None
    return price_in / MILLION, price_out / MILLION


def per_million(dep: Deployment, model: ModelConfig, settings: Settings) -> tuple[float | None, float | None]:
    """USD per million tokens (input, output), or (None, None) when unpriced."""
    if dep.price is not None:
        return dep.price.input, dep.price.output
    if model.price is not None:
        return model.price.input, model.price.output
    prices_config = settings.plugin_config("prices")
    free = getattr(prices_config, "free_providers", FREE_PROVIDERS)
    if model.provider in free:
        return 0.0, 0.0
    name = (model.model or model.alias).lower().rsplit("/", 1)[-1]
    extra = {k.lower(): v for k, v in getattr(prices_config, "models", {}).items()}
    if name in extra:
        return extra[name].input, extra[name].output
    key = (
        name
        if name in PRICE_TABLE
        else max((k for k in PRICE_TABLE if name.startswith(k + "-")), key=len, default=None)
    )
    if key is None:
        return None, None
    inp, _cached, out = PRICE_TABLE[key]
    return float(inp), float(out)
