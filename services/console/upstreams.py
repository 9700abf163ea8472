"""The console's upstreams page: each deployment of the routing (services/llm/routing.py)
with its endpoint's host (never its key), its breaker, and how its calls went lately.

The breakers are read from where the router keeps them: Redis when RATELIMIT_STORAGE_URI
names one (every process's view), else this process's memory (`breaker_scope` says which).
Recent errors and latency come from the `upstream_attempts` table, on its index by
deployment and time (migration 0019), every query bounded by time and by row count. That
table keeps the attempts of exchanges that were retried, failed over or failed (a reply
given by its first attempt keeps none: services/chat.py), so the page counts the replies
each deployment gave from the reply rows of `messages` (by their time's index) as well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Message, MessageStatus, UpstreamAttempt, iso_utc
from services.llm.routing import WILDCARD

WINDOW = timedelta(hours=1)  # latency and error rate are over the last hour
ERRORS_WINDOW = timedelta(days=1)  # the recent errors shown go back a day at most
RECENT_ERRORS = 5
# The most attempts of one deployment read for its percentiles: a bound on the page's work
# however busy the hour was (past it, the newest are the sample).
LATENCY_SAMPLE = 5000
OPENAI_HOST = "api.openai.com"


def endpoint_host(base_url: str | None) -> str:
    """The host (and port) of an endpoint URL: never its path, query or credentials."""
    if not base_url:
        return OPENAI_HOST
    parts = urlsplit(base_url if "//" in base_url else f"//{base_url}")
    host = parts.hostname or "?"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def deployments_of(llm: Any) -> list[dict[str, Any]]:
    """Every deployment the process's LLM client routes to, in the routing file's order:
    name, group, model, provider, endpoint host, priority and weight, timeouts. The offline
    model is one deployment of its own (no endpoint)."""
    if getattr(llm, "offline", False):
        return [_offline()]
    found = []
    for group_name, group in llm.routing.groups.items():
        for spec in group.deployments:
            found.append(
                {
                    "name": spec.name,
                    "group": "any model (no routing file)" if group_name == WILDCARD else group_name,
                    "aliases": list(group.aliases),
                    "model": spec.model,
                    "provider": spec.provider,
                    "host": endpoint_host(spec.base_url),
                    "priority": spec.priority,
                    "weight": spec.weight,
                    "strategy": group.strategy,
                    "timeouts": spec.timeouts.model_dump(),
                }
            )
    return found


def _offline() -> dict[str, Any]:
    return {
        "name": "offline",
        "group": "any model",
        "aliases": [],
        "model": "offline",
        "provider": "built-in offline model",
        "host": "none (answers in process)",
        "priority": None,
        "weight": None,
        "strategy": None,
        "timeouts": None,
    }


def breaker_view(llm: Any, config: Mapping[str, Any], now: float | None = None) -> tuple[dict[str, dict], str]:
    """Each deployment's breaker ({"state", "failures", "open_until"}) and where the states
    were read: shared through Redis, or this process's own view."""
    if getattr(llm, "offline", False):
        return {}, "none: the offline model has no breaker"
    breakers = llm.pool.breakers
    names = [t.name for t in llm.pool.deployments()]
    stored = breakers.states(names)  # Redis, or this process's memory while Redis is down
    view = {}
    for name in names:
        failures, open_until = stored.get(name, (0, 0.0))
        state = breakers.state_of(failures, open_until, now)
        until = datetime.fromtimestamp(open_until, UTC) if state == "open" else None
        view[name] = {"state": state, "failures": failures, "open_until": iso_utc(until)}
    uri = config.get("RATELIMIT_STORAGE_URI") or "memory://"
    if not uri.startswith(("redis://", "rediss://", "redis+unix://")):
        scope = "this process's view: breakers are kept in each process's memory (RATELIMIT_STORAGE_URI is memory://)"
    elif breakers.degraded:
        scope = "this process's view: Redis does not answer, so each process keeps its own until it does"
    else:
        scope = "shared through Redis (RATELIMIT_STORAGE_URI): every process and host sees these states"
    return view, scope


def health_of(breaker: Mapping[str, Any] | None, stats: Mapping[str, Any]) -> str:
    """A word for the deployment's health: its breaker first, then its last hour."""
    if breaker and breaker["state"] == "open":
        return "down"
    if breaker and breaker["state"] == "half_open":
        return "recovering"
    if (breaker and breaker["failures"]) or stats["failed"]:
        return "erroring"
    return "healthy"


def recent_stats(session: Session, names: Sequence[str], now: datetime | None = None) -> dict[str, dict]:
    """Per deployment, over the last hour: attempts recorded and failed, replies given,
    error rate, p50/p95 latency of the recorded attempts; and its last few errors (of the
    last day). A few bounded indexed reads per deployment and one for the replies."""
    now = now or datetime.now(UTC)
    since = now - WINDOW
    replies = _replies_since(session, since)
    stats = {}
    for name in names:
        attempts = _attempts_since(session, name, since)
        failed = sum(1 for _, outcome in attempts if outcome != "ok")
        answered = replies.get(name, 0)
        tried = failed + answered
        latencies = sorted(latency for latency, _ in attempts)
        stats[name] = {
            "attempts": len(attempts),
            "failed": failed,
            "replies": answered,
            "error_rate": failed / tried if tried else None,
            "p50_ms": percentile(latencies, 0.50),
            "p95_ms": percentile(latencies, 0.95),
            "errors": _recent_errors(session, name, now - ERRORS_WINDOW),
        }
    return stats


def _attempts_since(session: Session, name: str, since: datetime) -> list[tuple[int, str]]:
    query = (
        select(UpstreamAttempt.latency_ms, UpstreamAttempt.outcome)
        .where(UpstreamAttempt.deployment == name, UpstreamAttempt.created_at >= since)
        .order_by(UpstreamAttempt.created_at.desc())
        .limit(LATENCY_SAMPLE)
    )
    return [(latency, outcome) for latency, outcome in session.execute(query)]


def _recent_errors(session: Session, name: str, since: datetime) -> list[dict[str, Any]]:
    query = (
        select(UpstreamAttempt.created_at, UpstreamAttempt.outcome, UpstreamAttempt.status_code, UpstreamAttempt.error)
        .where(
            UpstreamAttempt.deployment == name,
            UpstreamAttempt.created_at >= since,
            UpstreamAttempt.outcome != "ok",
        )
        .order_by(UpstreamAttempt.created_at.desc())
        .limit(RECENT_ERRORS)
    )
    return [
        {"at": iso_utc(at), "outcome": outcome, "status_code": status, "error": (error or "")[:300]}
        for at, outcome, status, error in session.execute(query)
    ]


def _replies_since(session: Session, since: datetime) -> dict[str, int]:
    """Replies each deployment gave since then (reply rows name their deployment)."""
    query = (
        select(Message.deployment, func.count())
        .where(Message.timestamp >= since, Message.deployment.is_not(None), Message.status == MessageStatus.COMPLETED)
        .group_by(Message.deployment)
    )
    return dict(session.execute(query).all())


def percentile(ordered: Sequence[int], fraction: float) -> int | None:
    """The nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
