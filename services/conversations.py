"""Our conversations routes' reads and erasure, and the operator CLI's batches.

A conversation is every row of one conversation id within a client key (see
services/ownership.py), pending, failed and abandoned ones included: these are the views
of an owner or an operator, not history (services/history.py). Every function takes the
session of the caller's unit of work and never commits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models import ConversationRecord, Message, MessageStatus, StoredResponse, UpstreamAttempt, iso_utc, usd
from services.ownership import ANY_KEY, KeyScope, owned_by
from services.prices import CURRENCY

MESSAGES = Message.__table__
RESPONSES = StoredResponse.__table__
CONVERSATIONS = ConversationRecord.__table__
ATTEMPTS = UpstreamAttempt.__table__


def conversation_rows(session: Session, conversation_id: str, client_key_id: KeyScope = ANY_KEY) -> list[Message]:
    """Every stored row of a conversation, oldest first, failed and pending ones included."""
    return list(
        session.scalars(
            select(Message).where(Message.user_id == conversation_id, owned_by(client_key_id)).order_by(Message.id)
        )
    )


@dataclass(frozen=True)
class Page:
    """One page of a conversation's rows and the cursor of the next page (None: last)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class ConversationList:
    """One page of a key's conversations and the cursor of the next page (None: last)."""

    conversations: list[dict[str, Any]]
    next_cursor: str | None


def conversation_page(
    session: Session, conversation_id: str, client_key_id: KeyScope, limit: int, after_id: int = 0
) -> Page:
    """Rows of a conversation with id > `after_id`, oldest first, at most `limit` of them."""
    rows = session.scalars(
        select(Message)
        .where(Message.user_id == conversation_id, owned_by(client_key_id), Message.id > after_id)
        .order_by(Message.id)
        .limit(limit + 1)
    ).all()
    page = [row.to_dict() for row in rows[:limit]]
    return Page(rows=page, next_cursor=str(page[-1]["id"]) if len(rows) > limit else None)


def list_conversations(
    session: Session, client_key_id: KeyScope, limit: int, after_conversation_id: str = ""
) -> ConversationList:
    """The conversations of a key by id, `limit` at a time after `after_conversation_id`."""
    rows = session.execute(
        select(Message.user_id, func.count(Message.id), func.max(Message.timestamp))
        .where(owned_by(client_key_id), Message.user_id > after_conversation_id)
        .group_by(Message.user_id)
        .order_by(Message.user_id)
        .limit(limit + 1)
    ).all()
    listed = [
        {"user_id": conversation_id, "messages": count, "last_message_at": iso_utc(last)}
        for conversation_id, count, last in rows[:limit]
    ]
    return ConversationList(conversations=listed, next_cursor=listed[-1]["user_id"] if len(rows) > limit else None)


def conversation_exists(session: Session, conversation_id: str, client_key_id: KeyScope) -> bool:
    """True when at least one row of the conversation is stored."""
    found = session.scalar(
        select(Message.id).where(Message.user_id == conversation_id, owned_by(client_key_id)).limit(1)
    )
    return found is not None


def delete_conversation(session: Session, conversation_id: str, client_key_id: KeyScope) -> int:
    """Erase a conversation for good: every row (pending, failed and completed), the
    responses made in it and its Conversations-API record; return how many rows went."""
    for table in (RESPONSES, CONVERSATIONS):
        session.execute(delete(table).where(table.c.user_id == conversation_id, owned_by(client_key_id, table)))
    result = session.execute(delete(MESSAGES).where(MESSAGES.c.user_id == conversation_id, owned_by(client_key_id)))
    return result.rowcount or 0


def conversation_usage(session: Session, conversation_id: str, client_key_id: KeyScope) -> dict[str, Any] | None:
    """Exchange counts by status, token totals and cost of a conversation; None when nothing is stored."""
    mine = (Message.user_id == conversation_id, owned_by(client_key_id))
    by_status = dict(
        session.execute(
            select(Message.status, func.count(func.distinct(Message.exchange_id))).where(*mine).group_by(Message.status)
        ).all()
    )
    if not by_status:
        return None
    totals = session.execute(
        select(
            func.count(Message.id),
            func.coalesce(func.sum(Message.prompt_tokens), 0),
            func.coalesce(func.sum(Message.completion_tokens), 0),
            func.coalesce(func.sum(Message.total_tokens), 0),
            func.min(Message.timestamp),
            func.max(Message.timestamp),
            func.coalesce(func.sum(Message.cost_micros), 0),
            func.count(Message.id).filter(Message.role == "assistant", Message.cost_micros.is_(None)),
        ).where(*mine)
    ).one()
    return {
        "user_id": conversation_id,
        "exchanges": {
            "total": sum(by_status.values()),
            "completed": by_status.get(MessageStatus.COMPLETED, 0),
            "failed": by_status.get(MessageStatus.FAILED, 0),
            "pending": by_status.get(MessageStatus.PENDING, 0),
            "abandoned": by_status.get(MessageStatus.ABANDONED, 0),
        },
        "messages": totals[0],
        "tokens": {"prompt": int(totals[1]), "completion": int(totals[2]), "total": int(totals[3])},
        "first_message_at": iso_utc(totals[4]),
        "last_message_at": iso_utc(totals[5]),
        # Each reply's cost as recorded with it (services/prices.py); unpriced replies cost 0.
        "cost": {"currency": CURRENCY, "amount": usd(int(totals[6])), "unpriced_replies": totals[7]},
    }


def rows_batch(
    session: Session, after: tuple[str, int], conversation_id: str | None, client_key_id: KeyScope, size: int
) -> list[dict[str, Any]]:
    """Up to `size` rows after `after` (conversation id, row id), in export order, as dicts
    with their api_key_id (an export of every key's rows must say whose each one is)."""
    query = select(Message).where(owned_by(client_key_id)).order_by(Message.user_id, Message.id).limit(size)
    if conversation_id is not None:
        query = query.where(Message.user_id == conversation_id, Message.id > after[1])
    else:
        query = query.where((Message.user_id > after[0]) | ((Message.user_id == after[0]) & (Message.id > after[1])))
    return [{**row.to_dict(), "api_key_id": row.api_key_id} for row in session.scalars(query)]


def prune_batch(session: Session, older_than: datetime, batch_size: int) -> int | None:
    """Delete up to `batch_size` exchanges that began before `older_than`; rows deleted,
    or None when none is left."""
    batch = session.scalars(
        select(Message.exchange_id)
        .where(Message.timestamp < older_than)
        .group_by(Message.exchange_id)
        .limit(batch_size)
    ).all()
    if not batch:
        return None
    # A response made by one of these exchanges goes with it, and its upstream attempts:
    # nothing of it may outlive retention.
    session.execute(delete(RESPONSES).where(RESPONSES.c.exchange_id.in_(batch)))
    session.execute(delete(ATTEMPTS).where(ATTEMPTS.c.exchange_id.in_(batch)))
    return session.execute(delete(MESSAGES).where(MESSAGES.c.exchange_id.in_(batch))).rowcount or 0
