"""Our conversations routes' reads and erasure, and the operator CLI's batches.

A conversation is every row of one conversation id within a client key (see
services/ownership.py), pending, failed and abandoned ones included: these are the views
of an owner or an operator, not history (services/history.py). Every function takes the
session of the caller's unit of work and never commits it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, cast, delete, func, select
from sqlalchemy.orm import Session

from errors import ApiError
from models import (
    ConversationRecord,
    Message,
    MessageStatus,
    RequestLog,
    StoredResponse,
    UpstreamAttempt,
    iso_utc,
    usd,
)
from services.exchanges import stored_columns
from services.ownership import ANY_KEY, KeyScope, owned_by
from services.pages import PageFill
from services.prices import CURRENCY
from services.summaries import delete_summaries_of_pruned, erase_leases
from services.tokens import prompt_characters

MESSAGES = Message.__table__
RESPONSES = StoredResponse.__table__
CONVERSATIONS = ConversationRecord.__table__
ATTEMPTS = UpstreamAttempt.__table__
REQUEST_LOG = RequestLog.__table__


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


@dataclass(frozen=True)
class ConversationLimits:
    """What the Conversations API lets a client store and read at once: the characters of
    one add (MAX_PROMPT_CHARS, as a chat turn), a conversation's stored bytes
    (CONVERSATION_MAX_BYTES), and the bytes of one page of a listing (PAGE_MAX_BYTES)."""

    max_prompt_chars: int
    max_bytes: int
    page_bytes: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConversationLimits:
        """The limits of a Flask configuration (see config.py)."""
        return cls(config["MAX_PROMPT_CHARS"], config["CONVERSATION_MAX_BYTES"], config["PAGE_MAX_BYTES"])


def stored_size(messages: Sequence[dict[str, Any]]) -> int:
    """The bytes chat messages take once stored: their content and fields as JSON text, as
    stored_bytes measures stored rows."""
    size = 0
    for message in messages:
        columns = stored_columns(message)
        size += len(json.dumps(columns["content"])) + len(json.dumps(columns["message_fields"]))
    return size


def stored_bytes(session: Session, conversation_id: str, client_key_id: KeyScope) -> int:
    """The bytes a conversation's rows take: their content and fields as stored JSON text."""
    fields = func.coalesce(func.length(cast(Message.message_fields, Text)), 0)
    length = func.length(cast(Message.content, Text)) + fields
    total = session.scalar(
        select(func.coalesce(func.sum(length), 0)).where(Message.user_id == conversation_id, owned_by(client_key_id))
    )
    return int(total or 0)


def check_new_items(
    session: Session,
    conversation_id: str,
    client_key_id: KeyScope,
    messages: Sequence[dict[str, Any]],
    limits: ConversationLimits,
) -> None:
    """The 400 for items a conversation may not take: more characters than one chat turn may
    have, or more bytes than the conversation has room left for. Nothing is stored then."""
    characters = prompt_characters(messages)
    if characters > limits.max_prompt_chars:
        raise ApiError(
            400,
            f"Items are too long: {characters} characters, the limit is {limits.max_prompt_chars}",
            details=[{"field": "items", "message": "too long"}],
        )
    adding = stored_size(messages)
    stored = stored_bytes(session, conversation_id, client_key_id) if adding else 0
    if stored + adding > limits.max_bytes:
        raise ApiError(
            400,
            f"Conversation is full: it stores {stored} bytes and these items would add {adding}, "
            f"the limit is {limits.max_bytes}; delete items or start a new conversation",
            details=[{"field": "items", "message": "the conversation has no room for them"}],
            code="conversation_too_large",
        )


def conversation_page(
    session: Session,
    conversation_id: str,
    client_key_id: KeyScope,
    limit: int,
    after: str | None = None,
    max_bytes: int | None = None,
) -> Page:
    """Rows of a conversation after the row whose public id is `after` (none when it is not
    one of them), oldest first, at most `limit` of them and `max_bytes` of JSON (the first
    row whatever its size); the next page's cursor (the last row's public id) when more
    follow. Rows are fetched a few at a time, none past the first that does not fit."""
    page = PageFill(limit, max_bytes if max_bytes is not None else 2**62)
    mine = (Message.user_id == conversation_id, owned_by(client_key_id))
    query = select(Message).where(*mine)
    if after is not None:
        start = select(Message.id).where(Message.public_id == after, *mine).scalar_subquery()
        query = query.where(Message.id > start)
    rows = session.scalars(query.order_by(Message.id).limit(limit + 1).execution_options(yield_per=16))
    try:
        for row in rows:
            if not page.add(row.to_dict()):
                break
    finally:
        rows.close()
    return Page(rows=page.entries, next_cursor=page.entries[-1]["id"] if page.more else None)


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
    responses made in it, its Conversations-API record, and its exchanges' request log rows
    and upstream attempts (which name it and hold its errors; the daily rollups, counts with
    no conversation in them, stay); return how many rows went."""
    erase_leases(session, conversation_id, client_key_id)  # first: see services/summaries.py
    for table in (RESPONSES, CONVERSATIONS):
        session.execute(delete(table).where(table.c.user_id == conversation_id, owned_by(client_key_id, table)))
    mine = (MESSAGES.c.user_id == conversation_id, owned_by(client_key_id))
    exchanges = select(MESSAGES.c.exchange_id).where(*mine)
    for table in (REQUEST_LOG, ATTEMPTS):
        session.execute(delete(table).where(table.c.exchange_id.in_(exchanges)))
    result = session.execute(delete(MESSAGES).where(*mine))
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
    with their api_key_id (an export of every key's rows must say whose each one is) and
    their row id (the export's order, and where the next batch starts)."""
    query = select(Message).where(owned_by(client_key_id)).order_by(Message.user_id, Message.id).limit(size)
    if conversation_id is not None:
        query = query.where(Message.user_id == conversation_id, Message.id > after[1])
    else:
        query = query.where((Message.user_id > after[0]) | ((Message.user_id == after[0]) & (Message.id > after[1])))
    return [{**row.to_dict(), "api_key_id": row.api_key_id, "row_id": row.id} for row in session.scalars(query)]


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
    # A response made by one of these exchanges goes with it, and its upstream attempts and
    # request log row: nothing of it may outlive retention (the daily rollups, counts with
    # no conversation in them, stay).
    session.execute(delete(RESPONSES).where(RESPONSES.c.exchange_id.in_(batch)))
    session.execute(delete(ATTEMPTS).where(ATTEMPTS.c.exchange_id.in_(batch)))
    session.execute(delete(REQUEST_LOG).where(REQUEST_LOG.c.exchange_id.in_(batch)))
    delete_summaries_of_pruned(session, list(batch))  # a summary of them would outlive them
    return session.execute(delete(MESSAGES).where(MESSAGES.c.exchange_id.in_(batch))).rowcount or 0
