"""Writing the request log and its daily rollups (models/request_log.py) as exchanges end.

`log_exchange` runs in the unit of work that records an exchange's ending (services/recorder.py)
or closes it as abandoned (services/sweeper.py): one row in `request_log`, and the same
exchange added to its day's rollup by an upsert (INSERT ... ON CONFLICT DO UPDATE, which
SQLite and PostgreSQL both speak) to its day's row by model and route and its day's row
by key, so concurrent endings add up instead of racing.

An exchange has one row. An ending recorded over an exchange the sweeper had closed (its
reply was journaled for longer than ABANDON_AFTER_SECONDS), or applied twice (an erased
exchange's stays open), replaces the row it finds and takes that row's counts back out of
its rollup first.
"""

from __future__ import annotations

import bisect
import functools
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from database import insert_or_add
from models import MessageStatus, RequestKeyRollup, RequestLog, RequestRollup
from models.request_log import LATENCY_BUCKETS_MS, LATENCY_COLUMNS

LOG = RequestLog.__table__
ROLLUPS = RequestRollup.__table__
KEY_ROLLUPS = RequestKeyRollup.__table__
ERROR_STATUSES = (MessageStatus.FAILED, MessageStatus.ABANDONED)
_COUNTERS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros", "latency_ms_total")
_LOG_COLUMNS = tuple(column.name for column in LOG.columns if column.name != "id")
# The log's string columns and their sizes: what a row holds is cut to fit, so a long value
# (a journal line anyone could have edited) cannot make the database refuse the ending.
_SIZES = {column.name: column.type.length for column in LOG.columns if getattr(column.type, "length", None)}


def latency_bucket(latency_ms: int) -> int:
    """The index of the histogram bucket `latency_ms` falls in (the last: slower than all bounds)."""
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


def _utc_day(stamp: datetime) -> date:
    """The UTC day of `stamp`; naive values (SQLite returns those) are taken as UTC. Here, not
    models.as_utc: writing a row runs no code of the models folder (the request's path)."""
    return stamp.date() if stamp.tzinfo is None else stamp.astimezone(UTC).date()


@functools.cache
def _rollup_upsert(dialect_name: str, by_key: bool) -> Any:
    """A rollup's INSERT ... ON CONFLICT DO UPDATE adding to its counters, built once per
    backend: the day's by model and route, or (`by_key`) the day's by key."""
    return insert_or_add(dialect_name, KEY_ROLLUPS if by_key else ROLLUPS, (*_COUNTERS, *LATENCY_COLUMNS))


def _add_to_rollups(session: Session, row: dict[str, Any], sign: int) -> None:
    """Add the log row `row` to (sign 1) or take it from (sign -1) its day's two rollups."""
    dialect = session.get_bind().dialect.name
    values = _rollup_values(row, sign)
    session.execute(_rollup_upsert(dialect, False), values)
    session.execute(_rollup_upsert(dialect, True), values)


def _rollup_values(row: dict[str, Any], sign: int) -> dict[str, Any]:
    """What the log row `row` adds to (sign 1) or takes from (sign -1) its day's rollup."""
    values = {
        "day": _utc_day(row["created_at"]),
        "api_key_id": row["api_key_id"] or 0,
        "model": row["model"] or "",
        "route": row["route"] or "",
        "requests": sign,
        "errors": sign if row["status"] in ERROR_STATUSES else 0,
        "prompt_tokens": sign * (row["prompt_tokens"] or 0),
        "completion_tokens": sign * (row["completion_tokens"] or 0),
        "cost_micros": sign * (row["cost_micros"] or 0),
        "latency_ms_total": sign * (row["latency_ms"] or 0),
        **dict.fromkeys(LATENCY_COLUMNS, 0),
    }
    if row["latency_ms"] is not None:
        values[LATENCY_COLUMNS[latency_bucket(row["latency_ms"])]] = sign
    return values


def log_exchange(session: Session, row: dict[str, Any], *, replace: bool) -> None:
    """Write the exchange's log row (`row`: the request_log columns but id) and add it to
    its rollup, in the caller's transaction. With `replace` (the exchange was not pending:
    it may have a row already), a row it has is taken out of its rollup and deleted first."""
    row = {name: row.get(name) for name in _LOG_COLUMNS}
    for name, size in _SIZES.items():
        if isinstance(row[name], str):
            row[name] = row[name][:size]
    if replace:
        found = session.execute(select(LOG).where(LOG.c.exchange_id == row["exchange_id"])).mappings().first()
        if found is not None:
            _add_to_rollups(session, dict(found), -1)
            session.execute(delete(LOG).where(LOG.c.id == found["id"]))
    session.execute(LOG.insert(), row)
    _add_to_rollups(session, row, 1)


def ended_row(
    *,
    exchange_id: str,
    api_key_id: int | None,
    user_id: str,
    status: str,
    created_at: datetime,
    **columns: Any,
) -> dict[str, Any]:
    """A log row: the columns every row has, and any of the others (route, model,
    answered_model, deployment, error, prompt_tokens, completion_tokens, cost_micros, latency_ms)."""
    return {
        "exchange_id": exchange_id,
        "api_key_id": api_key_id,
        "user_id": user_id,
        "status": status,
        "created_at": created_at,
        **columns,
    }
