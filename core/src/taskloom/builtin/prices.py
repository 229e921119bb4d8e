"""``prices``: the cost model from a shipped price table.

Prices are USD per million tokens, list prices of the common OpenAI models. Local
providers (llama.cpp, Ollama, the scripted test provider) cost zero. Config can add or
override models, and ``[models.<alias>] price`` overrides one alias. A model no table
knows is *unpriced* (this plugin answers None), never silently zero.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from taskloom import hookimpl
from taskloom.config import ModelPrice, Settings
from taskloom.types import ZERO, Cost, Usage, build

NAME = "prices"
MILLION = Decimal(1_000_000)
LOCAL = f"{NAME}:local"

# model: (input, cached input, output) in USD per 1M tokens.
PRICE_TABLE: dict[str, tuple[str, str | None, str]] = {
    "gpt-5": ("1.25", "0.125", "10.00"),
    "gpt-5-mini": ("0.25", "0.025", "2.00"),
    "gpt-5-nano": ("0.05", "0.005", "0.40"),
    "gpt-4.1": ("2.00", "0.50", "8.00"),
    "gpt-4.1-mini": ("0.40", "0.10", "1.60"),
    "gpt-4.1-nano": ("0.10", "0.025", "0.40"),
    "gpt-4o": ("2.50", "1.25", "10.00"),
    "gpt-4o-mini": ("0.15", "0.075", "0.60"),
    "gpt-4-turbo": ("10.00", None, "30.00"),
    "gpt-4": ("30.00", None, "60.00"),
    "gpt-3.5-turbo": ("0.50", None, "1.50"),
    "o1": ("15.00", "7.50", "60.00"),
    "o1-mini": ("1.10", "0.55", "4.40"),
    "o3": ("2.00", "0.50", "8.00"),
    "o3-mini": ("1.10", "0.55", "4.40"),
    "o4-mini": ("1.10", "0.275", "4.40"),
    "text-embedding-3-small": ("0.02", None, "0"),
    "text-embedding-3-large": ("0.13", None, "0"),
}


class PricesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelPrice] = Field(default_factory=dict, description="Extra or overriding prices by model name.")
    free_providers: list[str] = Field(
        default_factory=lambda: ["llamacpp", "ollama", "scripted"],
        description="Providers whose models cost nothing (run locally).",
    )


def _lookup(table: dict[str, tuple[Decimal, Decimal, Decimal]], model: str) -> tuple[Decimal, Decimal, Decimal] | None:
    """Exact name, else the longest known prefix (``gpt-4o-2024-08-06`` is ``gpt-4o``)."""
    name = model.lower().rsplit("/", 1)[-1]
    if name in table:
        return table[name]
    best = max((k for k in table if name.startswith(k + "-")), key=len, default=None)
    return table[best] if best else None


def _triple(price: ModelPrice) -> tuple[Decimal, Decimal, Decimal]:
    inp = Decimal(str(price.input))
    cached = Decimal(str(price.cached_input)) if price.cached_input is not None else inp
    return inp, cached, Decimal(str(price.output))


def compute(usage: Usage, prices: tuple[Decimal, Decimal, Decimal], source: str) -> Cost:
    inp, cached, out = prices
    cached_tokens = min(usage.cached_input_tokens, usage.input_tokens)
    c_in = Decimal(usage.input_tokens - cached_tokens) * inp / MILLION
    c_cached = Decimal(cached_tokens) * cached / MILLION
    c_out = Decimal(usage.output_tokens) * out / MILLION
    # Decimals made here: built without revalidating them, every field given (see ``build``).
    return build(Cost,
        total=c_in + c_cached + c_out, input=c_in, cached_input=c_cached, output=c_out, tools=ZERO, priced=True,
        source=source,
    )  # fmt: skip


class Prices:
    """One instance per kernel: the table merged with config is built once."""

    def __init__(self) -> None:
        self.table: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        self.free: set[str] = set()

    @hookimpl
    def taskloom_config_model(self) -> type[BaseModel]:
        return PricesConfig

    @hookimpl
    def taskloom_configure(self, settings: Settings) -> None:
        cfg: PricesConfig = settings.plugin_config(NAME) or PricesConfig()
        self.table = {
            k: (Decimal(i), Decimal(c) if c is not None else Decimal(i), Decimal(o))
            for k, (i, c, o) in PRICE_TABLE.items()
        }
        self.table.update({k.lower(): _triple(v) for k, v in cfg.models.items()})
        self.free = set(cfg.free_providers)

    @hookimpl
    def taskloom_price(self, alias: str, model: str, provider: str, usage: Usage, settings: Settings) -> Cost | None:
        config = settings.models.get(alias)
        if config is not None and config.price is not None:
            return compute(usage, _triple(config.price), f"{NAME}:[models.{alias}]")
        if provider in self.free:
            return build(
                Cost, total=ZERO, input=ZERO, output=ZERO, cached_input=ZERO, tools=ZERO, priced=True, source=LOCAL
            )
        prices = _lookup(self.table, model)
        return compute(usage, prices, NAME) if prices else None
