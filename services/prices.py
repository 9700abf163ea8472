"""What a model's tokens cost: the price table, its overrides, and an exchange's cost.

Prices are USD per million tokens (input, cached input, output), as OpenAI publishes
them. They come, last word first, from:

1. the routing file (ROUTING_FILE): a `price` on a deployment, else on its group;
2. the file PRICES_FILE names (same shape as the shipped table; its models replace the
   shipped ones of the same name);
3. the table shipped with the service, services/prices.yaml (dated and sourced in it).

A model none of them prices is *unpriced*: it costs 0 and its replies are recorded with
no cost (NULL), never a guessed one. Both files are validated with pydantic at start-up:
a bad one stops the service naming the file and the field.

Costs are kept as integer micro-dollars (millionths of a USD). A price per million tokens
is exactly micro-dollars per token, so a cost is a sum of tokens times prices, rounded up
once per exchange to a whole micro-dollar: integers add exactly in SQL on SQLite and
PostgreSQL alike (SQLite has no exact decimal type), and a budget check is one integer
comparison in the conditional UPDATE that reserves it, as token budgets are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from config import ConfigError, read_yaml_file

if TYPE_CHECKING:
    from services.llm.routing import Deployment, RoutingFile

SHIPPED_TABLE = Path(__file__).with_name("prices.yaml")
CURRENCY = "USD"


class Price(BaseModel):
    """A model's price in USD per million tokens; cached input costs `input` unless given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0, max_digits=12, decimal_places=6)
    cached_input: Decimal | None = Field(None, ge=0, max_digits=12, decimal_places=6)
    output: Decimal = Field(ge=0, max_digits=12, decimal_places=6)

    @field_validator("input", "cached_input", "output", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        # YAML reads 0.075 as a float: take its shortest text, not its binary expansion.
        return str(value) if isinstance(value, float) else value

    @property
    def cached(self) -> Decimal:
        """The price of a cached prompt token's million."""
        return self.input if self.cached_input is None else self.cached_input

    def cost_micros(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """The cost of these tokens in micro-dollars, rounded up: `cached_tokens` are part of
        `prompt_tokens` (as OpenAI's usage counts them) and cost the cached price."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        exact = (prompt_tokens - cached) * self.input + cached * self.cached + completion_tokens * self.output
        return math.ceil(exact)

    def most(self, other: Price) -> Price:
        """The higher of two prices, part by part: a worst case over deployments."""
        return Price(
            input=max(self.input, other.input),
            cached_input=max(self.cached, other.cached),
            output=max(self.output, other.output),
        )


# The built-in offline model's name (services/llm/offline.py answers under it), and what its
# replies cost (README "Money"): it calls no upstream.
OFFLINE_MODEL = "offline"
FREE = Price(input=0, output=0)


class PriceTable(BaseModel):
    """A price file: its currency, the date its prices were read, where, and the models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: Literal["USD"] = CURRENCY
    as_of: date | None = None
    source: str | None = None
    models: dict[str, Price] = Field(default_factory=dict)


def read_price_file(path: str | Path, setting: str = "PRICES_FILE") -> PriceTable:
    """The price file at `path`, validated; ConfigError naming it and the field if unusable."""
    raw = read_yaml_file(path, setting)
    try:
        return PriceTable.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(the file)'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"{setting} {path} is invalid: {problems}") from None


@dataclass(frozen=True)
class ExchangeCost:
    """What an exchange cost: micro-dollars, or None when its model is unpriced (costs 0)."""

    micros: int | None

    @property
    def charged(self) -> int:
        """What a budget is charged: the cost, 0 when unpriced."""
        return self.micros or 0


class PriceBook:
    """The prices this process charges: the tables merged, the routing file's overrides."""

    def __init__(self, table: Mapping[str, Price], routing: RoutingFile | None = None) -> None:
        self.table = dict(table)
        self._deployments: dict[str, tuple[Deployment, Price | None]] = {}
        self._groups: dict[str, list[tuple[Deployment, Price | None]]] = {}
        if routing is not None:
            for name, group in routing.groups.items():
                members = [(d, d.price or group.price) for d in group.deployments]
                self._groups[name] = members
                self._deployments.update({d.name: (d, price) for d, price in members})

    @classmethod
    def from_config(cls, config: Mapping[str, Any], routing: RoutingFile | None = None) -> PriceBook:
        """The shipped table, PRICES_FILE's models over it, and the routing file's prices."""
        shipped = read_price_file(SHIPPED_TABLE, "the shipped price table")
        table = dict(shipped.models)
        if config.get("PRICES_FILE"):
            table.update(read_price_file(config["PRICES_FILE"]).models)
        return cls(table, routing)

    def of_model(self, names: Iterable[str | None]) -> Price | None:
        """The table's price of the first of `names` it has."""
        for name in names:
            if name and name in self.table:
                return self.table[name]
        return None

    def of_reply(self, deployment: str | None, answered_model: str | None, asked_model: str | None) -> Price | None:
        """The price of a reply `deployment` gave: the routing file's, else the table's for
        the model the upstream says answered, else for the one the deployment was asked for."""
        if answered_model == OFFLINE_MODEL and deployment is None:
            return FREE  # the built-in stand-in (services/llm/offline.py): no upstream, nothing spent
        found = self._deployments.get(deployment or "")
        if found is not None and found[1] is not None:
            return found[1]
        if found is not None and not self._is_wildcard(deployment):
            # A named group's deployment serves its own model: the group's name is no price.
            return self.of_model((answered_model, found[0].model))
        return self.of_model((answered_model, asked_model))

    def of_request(self, group: str | None, asked_model: str | None) -> Price | None:
        """The most any deployment of `group` may charge per token (the reservation's prices);
        None when none of them is priced."""
        members = self._groups.get(group or "", [])
        prices = [price or self.of_model((d.model if group != "*" else asked_model,)) for d, price in members]
        if not members:
            prices = [self.of_model((asked_model,))]
        priced = [p for p in prices if p is not None]
        if not priced:
            return None
        worst = priced[0]
        for price in priced[1:]:
            worst = worst.most(price)
        return worst

    def _is_wildcard(self, deployment: str | None) -> bool:
        return any(deployment == d.name for d, _ in self._groups.get("*", []))


def reply_cost(
    book: PriceBook,
    deployment: str | None,
    answered_model: str | None,
    asked_model: str | None,
    tokens: tuple[int, int, int],
) -> ExchangeCost:
    """The cost of a reply's (prompt, completion, cached prompt) tokens at today's prices."""
    price = book.of_reply(deployment, answered_model, asked_model)
    if price is None:
        return ExchangeCost(None)
    prompt, completion, cached = tokens
    return ExchangeCost(price.cost_micros(prompt, completion, cached))


def parse_usd(text: str | None) -> int | None:
    """An amount of USD ("5", "0.25") as micro-dollars; ValueError unless it is a positive
    number with at most 6 decimals (a budget is kept to the micro-dollar)."""
    if text is None or str(text).strip() == "":
        return None
    try:
        amount = Decimal(str(text).strip())
    except ArithmeticError:
        raise ValueError(f"{text!r} is not an amount of USD such as 5 or 0.25") from None
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(Decimal("0.000001")) or amount > 10**9:
        raise ValueError(f"{text!r} is not an amount of USD above 0 with at most 6 decimals")
    return int(amount * 1_000_000)
