"""The console's Requests page: the request log (models/request_log.py), filtered, newest
first, a page at a time by keyset (never OFFSET), and one exchange with its attempts.

Every filter has an index that starts with it and goes on (created_at, id): a page is one
range of one index read backwards from the keyset, however many rows the log holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.orm import Session

from models import ApiKey, RequestLog, UpstreamAttempt, iso_utc, usd
from services.client_keys import KEY_PREFIX, PREFIX_LENGTH

PAGE_SIZE = 50
LOG = RequestLog.__table__
STATUSES = ("completed", "failed", "disconnected", "abandoned")


@dataclass(frozen=True)
class RequestFilters:
    """What the page is narrowed to; None: any. `since` and `until` (UTC) bound created_at."""

    api_key_id: int | None = None
    model: str | None = None
    route: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[Any]:
        """The WHERE clauses these filters make."""
        conditions = []
        for name in ("api_key_id", "model", "route", "status"):
            value = getattr(self, name)
            if value is not None:
                conditions.append(LOG.c[name] == value)
        if self.since is not None:
            conditions.append(LOG.c.created_at >= self.since)
        if self.until is not None:
            conditions.append(LOG.c.created_at < self.until)
        return conditions


def key_filter_text(text: str) -> str:
    """What the key filter keeps of `text` (and the page shows again): a whole key pasted
    in is cut to its prefix, so that no page ever shows a key."""
    text = text.strip()
    return text[:PREFIX_LENGTH] if text.startswith(KEY_PREFIX) else text


def key_id_of(session: Session, text: str) -> int | None:
    """The id of the key `text` names (its id, or its prefix); None when it names none."""
    if text.isdigit():
        return int(text)
    if text.startswith(KEY_PREFIX):
        return session.scalar(select(ApiKey.id).where(ApiKey.prefix == text[:PREFIX_LENGTH]))
    return None


def _row(row: Any) -> dict[str, Any]:
    """A log row as the page shows it."""
    shown = dict(row._mapping)
    shown["created_at"] = iso_utc(shown["created_at"])
    shown["cost_usd"] = usd(shown["cost_micros"])
    return shown


def _with_key(query: Any) -> Any:
    return query.add_columns(ApiKey.name.label("key_name"), ApiKey.prefix.label("key_prefix")).outerjoin(
        ApiKey, ApiKey.id == LOG.c.api_key_id
    )


def request_page(
    session: Session,
    filters: RequestFilters,
    before: int | None = None,
    size: int | None = None,
    at: datetime | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to `size` (PAGE_SIZE) log rows matching `filters`, newest first, older than the row
    `before` ended at `at` (the page's keyset; without `at`, the time of the row `before`)
    when given; and the id the next page starts before (None: last page). The cursor holds
    both, so a page goes on even when its last row has been replaced or pruned since."""
    size = size or PAGE_SIZE
    query = _with_key(select(LOG)).where(*filters.conditions())
    if before is not None:
        if at is None:
            at = session.scalar(select(LOG.c.created_at).where(LOG.c.id == before))
            if at is None:
                return [], None
        anchor = tuple_(bindparam("at", at, type_=LOG.c.created_at.type), bindparam("before", before))
        query = query.where(tuple_(LOG.c.created_at, LOG.c.id) < anchor)
    query = query.order_by(LOG.c.created_at.desc(), LOG.c.id.desc()).limit(size + 1)
    rows = [_row(row) for row in session.execute(query)]
    more = len(rows) > size
    rows = rows[:size]
    return rows, rows[-1]["id"] if more else None


def request_detail(session: Session, exchange_id: str) -> dict[str, Any] | None:
    """The exchange's log row with its upstream attempts (in order); None when not logged."""
    found = session.execute(_with_key(select(LOG)).where(LOG.c.exchange_id == exchange_id)).first()
    if found is None:
        return None
    shown = _row(found)
    attempts = session.scalars(
        select(UpstreamAttempt).where(UpstreamAttempt.exchange_id == exchange_id).order_by(UpstreamAttempt.attempt)
    )
    shown["attempts"] = [attempt.to_dict() for attempt in attempts]
    return shown
