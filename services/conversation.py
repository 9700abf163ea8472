"""Conversation memory: rebuild and trim a user's history, record both turns of an exchange.

An exchange is one request and its reply; its rows share `exchange_id` and a status.
Each function here is one short transaction that ends (and gives its connection back to
the pool) before it returns, so no transaction or connection is held across the LLM call.

A conversation is a `user_id` within a client key (`owner`: the key's id, or None when
keys are off): two keys using the same user_id each have their own, and no function
here reads or changes another key's rows. Only the operator's CLI passes ANY_KEY.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, delete, func, insert, select, true, update

from extensions import db
from models import Message, MessageStatus, iso_utc
from services.client_keys import ClientKey, charge_usage, ensure_budget_left
from services.llm import Completion
from services.tokens import estimate_message_tokens, estimate_text_tokens

MESSAGES = Message.__table__


class _AnyKey:
    def __repr__(self) -> str:
        return "ANY_KEY"


# The operator's view (CLI): rows of every key. Requests always pass their own key.
ANY_KEY = _AnyKey()
Owner = int | None | _AnyKey


def _owned_by(owner: Owner) -> ColumnElement[bool]:
    """The rows of `owner`: its key's, the keyless ones for None, everyone's for ANY_KEY."""
    if isinstance(owner, _AnyKey):
        return true()
    return MESSAGES.c.api_key_id.is_(None) if owner is None else MESSAGES.c.api_key_id == owner


@dataclass(frozen=True)
class HistoryLimits:
    """How much stored history may be sent: messages, and an estimated token budget."""

    max_messages: int
    max_tokens: int


@dataclass
class Exchange:
    """An exchange whose user turn is recorded; `context` is what the model will receive."""

    exchange_id: str
    user_id: str
    context: list[dict[str, Any]]
    history: list[dict[str, Any]] = field(default_factory=list)
    owner: int | None = None


def new_user_id() -> str:
    """A fresh conversation id (UUID4)."""
    return str(uuid.uuid4())


@contextmanager
def _transaction() -> Iterator[Any]:
    queue = current_app.extensions.get("sqlite_writer_queue")
    with queue.turn() if queue else nullcontext():
        try:
            yield db.session
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
        finally:
            # Hand the connection back to the pool now: the caller may be about to wait
            # seconds on the LLM, and must not hold a connection (or SQLite's lock) then.
            db.session.close()


def _load_exchanges(user_id: str, owner: int | None, newest: int) -> list[list[Message]]:
    """The `newest` completed exchanges of `user_id`, each a list of rows, oldest first."""
    first_id = func.min(Message.id).label("first_id")
    recent = db.session.execute(
        select(Message.exchange_id, first_id)
        .where(Message.user_id == user_id, _owned_by(owner), Message.status == MessageStatus.COMPLETED)
        .group_by(Message.exchange_id)
        .order_by(first_id.desc())
        .limit(newest)
    ).all()
    if not recent:
        return []
    rows = db.session.scalars(
        select(Message)
        .where(Message.user_id == user_id, Message.exchange_id.in_([r.exchange_id for r in recent]))
        .order_by(Message.id)
    ).all()
    grouped: dict[str, list[Message]] = {}
    for row in rows:
        grouped.setdefault(row.exchange_id, []).append(row)
    # Exchanges in the order they began; rows of one exchange together, so two
    # exchanges that ran at the same time are never interleaved.
    order = sorted(recent, key=lambda r: r.first_id)
    return [grouped[r.exchange_id] for r in order if r.exchange_id in grouped]


def trim_exchanges(
    exchanges: list[list[dict[str, Any]]], limits: HistoryLimits, reserved_tokens: int
) -> list[list[dict[str, Any]]]:
    """The newest whole exchanges that fit the limits, oldest first.

    `reserved_tokens` is what the messages always sent (system prompts and the new turn)
    already cost; history gets what is left of `limits.max_tokens`. Walking from newest to
    oldest, the first exchange that does not fit ends the history, so no gap is left.
    """
    kept: list[list[dict[str, Any]]] = []
    messages = 0
    tokens = reserved_tokens
    for exchange in reversed(exchanges):
        cost = sum(estimate_message_tokens(m) for m in exchange)
        if messages + len(exchange) > limits.max_messages or tokens + cost > limits.max_tokens:
            break
        kept.append(exchange)
        messages += len(exchange)
        tokens += cost
    kept.reverse()
    return kept


def rebuild_history(
    user_id: str, limits: HistoryLimits, reserved_tokens: int = 0, owner: int | None = None
) -> list[dict[str, Any]]:
    """The stored conversation of `user_id` to send the model: whole exchanges, oldest first."""
    if limits.max_messages <= 0:
        return []
    rows = _load_exchanges(user_id, owner, newest=limits.max_messages)
    exchanges = [[{"role": m.role, "content": m.content} for m in exchange] for exchange in rows]
    return [message for exchange in trim_exchanges(exchanges, limits, reserved_tokens) for message in exchange]


def start_exchange(
    user_id: str,
    leading: list[dict[str, Any]],
    new_messages: list[dict[str, Any]],
    limits: HistoryLimits,
    *,
    client: ClientKey | None = None,
    new_conversation: bool = False,
) -> Exchange:
    """Transaction 1: check the key's budget, read the trimmed history, record the new turn(s).

    The model's context is `leading` (system messages, always kept), then the history,
    then `new_messages` (always kept). Only `new_messages` are recorded, as pending, in
    the conversation of `client`'s key. A `new_conversation` (a user_id just generated)
    has no history to read. Raises BudgetSpent, writing nothing, when the key's daily
    token budget is used up.
    """
    reserved = sum(estimate_message_tokens(m) for m in leading + new_messages)
    exchange_id = str(uuid.uuid4())
    owner = client.id if client else None
    with _transaction() as session:
        ensure_budget_left(session, client)
        history = [] if new_conversation else rebuild_history(user_id, limits, reserved, owner)
        # Core statements on the table: no ORM bookkeeping for rows we never read back.
        session.execute(
            insert(MESSAGES),
            [
                {
                    "user_id": user_id,
                    "exchange_id": exchange_id,
                    "api_key_id": owner,
                    "role": message["role"],
                    # OpenAI allows a message without content (tool calls): store "" for it.
                    "content": message["content"] if message.get("content") is not None else "",
                    "status": MessageStatus.PENDING,
                }
                for message in new_messages
            ],
        )
    return Exchange(
        exchange_id=exchange_id,
        user_id=user_id,
        context=[*leading, *history, *new_messages],
        history=history,
        owner=owner,
    )


def record_reply(
    exchange: Exchange, completion: Completion, status: str = MessageStatus.COMPLETED, error: str | None = None
) -> bool:
    """Transaction 2: store the assistant turn and set the exchange's status.

    `status` is COMPLETED for a whole reply; a stream cut short stores what arrived with
    DISCONNECTED (the client left) or FAILED (the upstream broke off) and the `error`.
    Returns False (and stores nothing) when the conversation was deleted while the model
    worked: a reply must not bring back a conversation its owner erased. The key is
    charged for the tokens either way, the upstream's count or, when a cut-off stream
    brought none, the estimate.
    """
    spent = _tokens_spent(exchange, completion) if exchange.owner is not None else None
    with _transaction() as session:
        if spent is not None:
            charge_usage(session, exchange.owner, *spent)
        result = session.execute(
            update(MESSAGES).where(MESSAGES.c.exchange_id == exchange.exchange_id).values(status=status, error=error)
        )
        if not result.rowcount:
            return False
        session.execute(
            insert(MESSAGES),
            [
                {
                    "user_id": exchange.user_id,
                    "exchange_id": exchange.exchange_id,
                    "api_key_id": exchange.owner,
                    "role": "assistant",
                    "content": completion.text,
                    "status": status,
                    "error": error,
                    "completion_id": completion.completion_id,
                    "model": completion.model,
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                    "total_tokens": completion.total_tokens,
                }
            ],
        )
    return True


def _tokens_spent(exchange: Exchange, completion: Completion) -> tuple[int, int]:
    prompt = completion.prompt_tokens
    if prompt is None:
        prompt = sum(estimate_message_tokens(m) for m in exchange.context)
    answer = completion.completion_tokens
    if answer is None:
        answer = estimate_text_tokens(completion.text)
    return prompt, answer


def record_failure(exchange: Exchange, error: str) -> None:
    """Transaction 2 on failure: mark the exchange failed, keeping it for audit only."""
    with _transaction() as session:
        session.execute(
            update(MESSAGES)
            .where(MESSAGES.c.exchange_id == exchange.exchange_id)
            .values(status=MessageStatus.FAILED, error=error)
        )


def conversation_rows(user_id: str, owner: Owner = ANY_KEY) -> list[Message]:
    """Every stored row of `user_id`, oldest first, failed and pending ones included."""
    return list(
        db.session.scalars(select(Message).where(Message.user_id == user_id, _owned_by(owner)).order_by(Message.id))
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


def conversation_page(user_id: str, owner: Owner, limit: int, after_id: int = 0) -> Page:
    """Rows of `user_id` with id > `after_id`, oldest first, at most `limit` of them."""
    rows = db.session.scalars(
        select(Message)
        .where(Message.user_id == user_id, _owned_by(owner), Message.id > after_id)
        .order_by(Message.id)
        .limit(limit + 1)
    ).all()
    page = [row.to_dict() for row in rows[:limit]]
    db.session.close()
    return Page(rows=page, next_cursor=str(page[-1]["id"]) if len(rows) > limit else None)


def list_conversations(owner: Owner, limit: int, after_user_id: str = "") -> ConversationList:
    """The conversations of `owner` by user_id, `limit` at a time after `after_user_id`."""
    rows = db.session.execute(
        select(Message.user_id, func.count(Message.id), func.max(Message.timestamp))
        .where(_owned_by(owner), Message.user_id > after_user_id)
        .group_by(Message.user_id)
        .order_by(Message.user_id)
        .limit(limit + 1)
    ).all()
    db.session.close()
    listed = [
        {"user_id": user_id, "messages": count, "last_message_at": iso_utc(last)}
        for user_id, count, last in rows[:limit]
    ]
    return ConversationList(conversations=listed, next_cursor=listed[-1]["user_id"] if len(rows) > limit else None)


def conversation_exists(user_id: str, owner: Owner) -> bool:
    """True when at least one row of `user_id` is stored."""
    found = (
        db.session.scalar(select(Message.id).where(Message.user_id == user_id, _owned_by(owner)).limit(1)) is not None
    )
    db.session.close()
    return found


def delete_conversation(user_id: str, owner: Owner) -> int:
    """Erase every row of `user_id` (pending, failed and completed); return how many."""
    with _transaction() as session:
        return session.execute(delete(MESSAGES).where(MESSAGES.c.user_id == user_id, _owned_by(owner))).rowcount or 0


def conversation_usage(user_id: str, owner: Owner) -> dict[str, Any] | None:
    """Exchange counts by status and token totals of `user_id`; None when nothing is stored."""
    by_status = dict(
        db.session.execute(
            select(Message.status, func.count(func.distinct(Message.exchange_id)))
            .where(Message.user_id == user_id, _owned_by(owner))
            .group_by(Message.status)
        ).all()
    )
    if not by_status:
        db.session.close()
        return None
    totals = db.session.execute(
        select(
            func.count(Message.id),
            func.coalesce(func.sum(Message.prompt_tokens), 0),
            func.coalesce(func.sum(Message.completion_tokens), 0),
            func.coalesce(func.sum(Message.total_tokens), 0),
            func.min(Message.timestamp),
            func.max(Message.timestamp),
        ).where(Message.user_id == user_id, _owned_by(owner))
    ).one()
    db.session.close()
    return {
        "user_id": user_id,
        "exchanges": {
            "total": sum(by_status.values()),
            "completed": by_status.get(MessageStatus.COMPLETED, 0),
            "failed": by_status.get(MessageStatus.FAILED, 0),
            "pending": by_status.get(MessageStatus.PENDING, 0),
        },
        "messages": totals[0],
        "tokens": {"prompt": int(totals[1]), "completion": int(totals[2]), "total": int(totals[3])},
        "first_message_at": iso_utc(totals[4]),
        "last_message_at": iso_utc(totals[5]),
    }


def iter_rows(user_id: str | None = None, owner: Owner = ANY_KEY, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Every stored row (of `user_id` when given) as dicts with their api_key_id, by user then id, in batches."""
    after = ("", 0)
    while True:
        query = select(Message).where(_owned_by(owner)).order_by(Message.user_id, Message.id).limit(batch_size)
        if user_id is not None:
            query = query.where(Message.user_id == user_id, Message.id > after[1])
        else:
            query = query.where(
                (Message.user_id > after[0]) | ((Message.user_id == after[0]) & (Message.id > after[1]))
            )
        # The key's id too: an export of every key's rows must say whose each one is.
        batch = [{**row.to_dict(), "api_key_id": row.api_key_id} for row in db.session.scalars(query)]
        db.session.close()
        if not batch:
            return
        yield from batch
        after = (batch[-1]["user_id"], batch[-1]["id"])


def prune_exchanges(older_than: datetime, batch_size: int = 500) -> int:
    """Delete every exchange that began before `older_than`, in short batches; return rows deleted.

    Each batch is its own transaction of at most `batch_size` exchanges, so live traffic
    (and SQLite's single writer) waits at most one short batch at a time.
    """
    deleted = 0
    while True:
        with _transaction() as session:
            batch = session.scalars(
                select(Message.exchange_id)
                .where(Message.timestamp < older_than)
                .group_by(Message.exchange_id)
                .limit(batch_size)
            ).all()
            if not batch:
                return deleted
            result = session.execute(delete(MESSAGES).where(MESSAGES.c.exchange_id.in_(batch)))
            deleted += result.rowcount or 0
