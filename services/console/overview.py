"""The console's Overview page: requests, tokens, cost and errors for today, 7 and 30 days;
by model, key and route; latency percentiles; the last 30 days as bar charts.

Everything is summed from the daily rollups (models/request_log.py), never from the log:
the totals, charts and breakdowns by model and route from the rollups by day, model and
route (a few rows a day), the breakdown by key from those by day and key (one row per
active key and day), whatever the number of exchanges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import ApiKey, RequestKeyRollup, RequestRollup, usd
from models.request_log import LATENCY_BUCKETS_MS, LATENCY_COLUMNS

ROLLUPS = RequestRollup.__table__
KEY_ROLLUPS = RequestKeyRollup.__table__
WINDOWS = (1, 7, 30)
BREAKDOWN_ROWS = 20
_SUMMED = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros", *LATENCY_COLUMNS)


@dataclass
class Totals:
    """Sums over some rollup rows, and the latency percentiles their histogram gives."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_COLUMNS))

    def add(self, row: Any) -> None:
        """Add one summed row (columns named as _SUMMED)."""
        for name in ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros"):
            setattr(self, name, getattr(self, name) + int(getattr(row, name) or 0))
        counts = zip(self.latency, LATENCY_COLUMNS, strict=True)
        self.latency = [held + int(getattr(row, name) or 0) for held, name in counts]

    def shown(self) -> dict[str, Any]:
        """The totals as the page shows them: dollars, and p50/p95 in ms (None: no latency known)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": usd(self.cost_micros),
            "p50": percentile(self.latency, 0.50),
            "p95": percentile(self.latency, 0.95),
        }


def percentile(histogram: list[int], quantile: float) -> str | None:
    """The `quantile` of the latencies counted in `histogram` (LATENCY_BUCKETS_MS), as
    text: interpolated within its bucket ("420 ms"), "< 100 ms" in the first (from 0 ms an
    interpolation would be made up: local upstreams answer in a few), or "> 60000 ms" past
    the last bound; None when it counts none."""
    total = sum(histogram)
    if not total:
        return None
    wanted, below = quantile * total, 0
    for index, count in enumerate(histogram):
        if count and below + count >= wanted:
            if index == len(LATENCY_BUCKETS_MS):
                return f"> {LATENCY_BUCKETS_MS[-1]} ms"
            if index == 0:
                return f"< {LATENCY_BUCKETS_MS[0]} ms"
            lower = LATENCY_BUCKETS_MS[index - 1] if index else 0
            upper = LATENCY_BUCKETS_MS[index]
            return f"{round(lower + (wanted - below) / count * (upper - lower))} ms"
        below += count
    return None  # not reached: the counts add up to total


def _sums(table: Any = ROLLUPS) -> list[Any]:
    return [func.sum(table.c[name]).label(name) for name in _SUMMED]


def window_totals(session: Session, today: date) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """Totals of today and the last 7 and 30 days (keyed 1, 7, 30), and the last 30 days one by one."""
    first = today - timedelta(days=WINDOWS[-1] - 1)
    rows = session.execute(select(ROLLUPS.c.day, *_sums()).where(ROLLUPS.c.day >= first).group_by(ROLLUPS.c.day))
    by_day = {row.day: row for row in rows}
    windows = {days: Totals() for days in WINDOWS}
    daily = []
    for offset in range(WINDOWS[-1]):
        day = first + timedelta(days=offset)
        totals = Totals()
        if day in by_day:
            totals.add(by_day[day])
            for days in WINDOWS:
                if day > today - timedelta(days=days):
                    windows[days].add(by_day[day])
        daily.append({"day": day.isoformat(), **totals.shown()})
    return {days: totals.shown() for days, totals in windows.items()}, daily


def breakdown(session: Session, today: date, days: int, by: str) -> list[dict[str, Any]]:
    """The window's totals by `by` ("model", "route" or "api_key_id"), the costliest first
    (then the busiest), BREAKDOWN_ROWS at most; keys named."""
    table = KEY_ROLLUPS if by == "api_key_id" else ROLLUPS
    column = table.c[by]
    query = (
        select(column.label("name"), *_sums(table))
        .where(table.c.day > today - timedelta(days=days))
        .group_by(column)
        .order_by(func.sum(table.c.cost_micros).desc(), func.sum(table.c.requests).desc(), column)
        .limit(BREAKDOWN_ROWS)
    )
    shown = []
    for row in session.execute(query):
        totals = Totals()
        totals.add(row)
        shown.append({"name": row.name, **totals.shown()})
    if by == "api_key_id":
        _name_keys(session, shown)
    return shown


def _name_keys(session: Session, rows: list[dict[str, Any]]) -> None:
    """Give each row of a breakdown by key its key's name and prefix (key 0: none)."""
    ids = [row["name"] for row in rows if row["name"]]
    keys = {key.id: key for key in session.scalars(select(ApiKey).where(ApiKey.id.in_(ids)))} if ids else {}
    for row in rows:
        key = keys.get(row["name"])
        row["key_id"] = row["name"] or None
        row["name"] = f"{key.name} ({key.prefix})" if key else ("no key" if not row["name"] else f"key {row['name']}")


def bar_chart(daily: list[dict[str, Any]], value: str, height: int = 120, bar: int = 18) -> dict[str, Any]:
    """An SVG bar chart's geometry for one value of each day (drawn by the template): bars
    scaled to the highest, each with its day and value for its tooltip."""
    values = [float(day[value] or 0) for day in daily]
    highest = max(values) if values and max(values) > 0 else 1.0
    bars = []
    for index, (day, amount) in enumerate(zip(daily, values, strict=True)):
        tall = round(amount / highest * (height - 20))
        bars.append({"x": index * (bar + 4), "y": height - tall, "height": tall, "day": day["day"], "value": amount})
    return {"width": len(daily) * (bar + 4), "height": height, "bar": bar, "bars": bars, "highest": highest}
