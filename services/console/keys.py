"""The console's keys page: every key with today's usage (tokens, and USD against its daily
and monthly USD budgets) and its last day of use, and the changes an operator makes to a
key (services/client_keys.py issues and revokes)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models import ApiKey, ApiKeyMonthlySpend, ApiKeyUsage, usd
from services.client_keys import check_rate_limit, list_keys, utc_today

# What a key's limits are made of, as the audit log's from/to shows them.
LIMITS = ("rate_limit", "daily_tokens", "daily_usd", "monthly_usd")

# Keys per page: each row carries two forms, so a page of every key of a large deployment
# (1,000 keys: 1.3 MB of HTML, 0.3-0.5 s) would miss the console's 300 ms (bench/README.md).
PAGE_SIZE = 100


def keys_with_usage(session: Session, after_id: int | None = None, limit: int = PAGE_SIZE) -> list[dict[str, Any]]:
    """A page of keys, oldest first (the `limit` after `after_id` when given: keyset paging,
    never OFFSET), as `flask keys list` shows them, plus `last_used_day` (the last UTC day
    it answered a request: the usage counters keep days, not instants), `budget_used`
    (tokens spent and held today, for the bar against `daily_tokens`), `usd_used_today` and
    `usd_used_month` (USD spent and held today and this month, for the bars against
    `daily_usd` and `monthly_usd`). Bounded: a page's keys, and their usage rows found by a
    range of the counters' primary key."""
    keys = list_keys(session, after_id, limit)
    if not keys:
        return keys
    last_days = dict(
        session.execute(
            select(ApiKeyUsage.api_key_id, func.max(ApiKeyUsage.day))
            .where(ApiKeyUsage.api_key_id.between(keys[0]["id"], keys[-1]["id"]), ApiKeyUsage.requests > 0)
            .group_by(ApiKeyUsage.api_key_id)
        ).all()
    )
    month_held = dict(
        session.execute(
            select(ApiKeyMonthlySpend.api_key_id, ApiKeyMonthlySpend.reserved_micros).where(
                ApiKeyMonthlySpend.api_key_id.between(keys[0]["id"], keys[-1]["id"]),
                ApiKeyMonthlySpend.month == utc_today().replace(day=1),
                ApiKeyMonthlySpend.reserved_micros > 0,
            )
        ).all()
    )
    for key in keys:
        day = last_days.get(key["id"])
        key["last_used_day"] = day.isoformat() if day else None
        key["budget_used"] = key["tokens_today"] + key["reserved_today"]
        key["usd_used_today"] = usd(round((key["usd_today"] + key["usd_reserved_today"]) * 1_000_000))
        key["usd_used_month"] = usd(round(key["usd_this_month"] * 1_000_000) + month_held.get(key["id"], 0))
    return keys


def format_usd(amount: float | None) -> str:
    """An amount of USD as the page shows it: "$0.25", "$0.000125" (to the micro-dollar)."""
    if amount is None:
        return "none"
    whole, fraction = f"{amount:.6f}".split(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def limits_of(key: dict[str, Any]) -> dict[str, Any]:
    """A key's limits (a `find_key` record), for the audit log's from/to."""
    return {name: key[name] for name in LIMITS}


def find_key(session: Session, key_id: int) -> dict[str, Any] | None:
    """The key with this id (revoked or not), without its hash; None when there is none."""
    key = session.get(ApiKey, key_id)
    return key.to_dict() if key else None


def change_limits(
    session: Session,
    key_id: int,
    rate_limit: str | None,
    daily_tokens: int | None,
    daily_usd_micros: int | None = None,
    monthly_usd_micros: int | None = None,
) -> dict[str, Any] | None:
    """Set the key's own rate limit, daily token budget and daily and monthly USD budgets
    (micro-dollars, as services/prices.parse_usd reads them; None: the defaults, no budget);
    ValueError for a rate limit Flask-Limiter would not understand or a budget below 1.
    Every worker reads a key's limits on each request, so the change holds from the next.
    None when there is no such key."""
    check_rate_limit(rate_limit)
    if daily_tokens is not None and daily_tokens < 1:
        raise ValueError("a daily token budget is at least 1 token")
    if any(micros is not None and micros < 1 for micros in (daily_usd_micros, monthly_usd_micros)):
        raise ValueError("a USD budget is at least one micro-dollar")
    values = {
        "rate_limit": rate_limit,
        "daily_tokens": daily_tokens,
        "daily_usd_micros": daily_usd_micros,
        "monthly_usd_micros": monthly_usd_micros,
    }
    changed = session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values)).rowcount
    return find_key(session, key_id) if changed else None
