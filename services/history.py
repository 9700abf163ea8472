"""Loading and trimming a conversation's history: the stored messages a turn is sent after.

Only completed exchanges are history (a failed or abandoned one is kept for audit, never
fed back), each message as it was stored, whole exchanges oldest first, trimmed to the
limits without ever splitting a tool round. Every function takes the session of the
caller's unit of work and never commits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Integer, Select, bindparam, func, select
from sqlalchemy.orm import Session

from models import Message, MessageStatus
from services.exchanges import replayed
from services.ownership import owned_by
from services.tokens import estimate_message_tokens, text_of

MESSAGES = Message.__table__


@dataclass(frozen=True)
class HistoryLimits:
    """How much stored history may be sent: messages, and an estimated token budget."""

    max_messages: int
    max_tokens: int


# No trimming at all: every stored exchange is sent.
UNLIMITED = HistoryLimits(max_messages=10**9, max_tokens=10**15)


def completed_exchanges(conversation_id: str | BindParameter, client_key_id: int | BindParameter | None) -> Select:
    """The query of a conversation's completed exchanges: each one's id and the id of its
    first row (`first_id`, their order), for the caller to order and limit."""
    return (
        select(MESSAGES.c.exchange_id, func.min(MESSAGES.c.id).label("first_id"))
        .where(
            MESSAGES.c.user_id == conversation_id,
            owned_by(client_key_id),
            MESSAGES.c.status == MessageStatus.COMPLETED,
        )
        .group_by(MESSAGES.c.exchange_id)
    )


def _recent_exchange_rows(keyless: bool) -> Select:
    """The rows of a conversation's `:newest` most recent completed exchanges of one key
    (`:key`, or of no key), in the order the exchanges began, each exchange's rows together
    in order: one statement, built once per kind of owner and only bound after that."""
    conversation = bindparam("conversation")
    query = completed_exchanges(conversation, None if keyless else bindparam("key"))
    recent = query.order_by(query.selected_columns.first_id.desc()).limit(bindparam("newest", type_=Integer)).subquery()
    return (
        select(MESSAGES.c.exchange_id, MESSAGES.c.role, MESSAGES.c.content, MESSAGES.c.message_fields)
        .join(recent, MESSAGES.c.exchange_id == recent.c.exchange_id)
        .where(MESSAGES.c.user_id == conversation)
        .order_by(recent.c.first_id, MESSAGES.c.id)
    )


_RECENT_EXCHANGE_ROWS = {keyless: _recent_exchange_rows(keyless) for keyless in (True, False)}


def _load_exchanges(session: Session, conversation_id: str, client_key_id: int | None, newest: int) -> list[list[Any]]:
    """The `newest` completed exchanges of a conversation, each a list of rows, oldest first.
    Exchanges in the order they began; rows of one exchange together, so two exchanges
    that ran at the same time are never interleaved."""
    values = {"conversation": conversation_id, "key": client_key_id, "newest": newest}
    exchanges: list[list[Any]] = []
    for row in session.execute(_RECENT_EXCHANGE_ROWS[client_key_id is None], values):
        if not exchanges or exchanges[-1][0].exchange_id != row.exchange_id:
            exchanges.append([])
        exchanges[-1].append(row)
    return exchanges


def _tool_rounds(exchanges: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Exchanges glued into units that trimming keeps or drops whole: an exchange whose
    first message is a `tool` message answers the tool calls of the exchange before it,
    so the two (and any further such exchanges) form one unit. A unit that still starts
    with a tool message lost its call (trimmed or failed) and is never sent."""
    units: list[list[dict[str, Any]]] = []
    for exchange in exchanges:
        if units and exchange and exchange[0].get("role") == "tool":
            units[-1] = units[-1] + exchange
        else:
            units.append(list(exchange))
    return [unit for unit in units if unit and unit[0].get("role") != "tool"]


def trim_exchanges(
    exchanges: list[list[dict[str, Any]]], limits: HistoryLimits, always_sent_tokens: int, keep_newest: bool = False
) -> list[list[dict[str, Any]]]:
    """The newest whole exchanges that fit the limits, oldest first.

    `always_sent_tokens` is what the messages always sent (system prompts and the new turn)
    already cost; history gets what is left of `limits.max_tokens`. Walking from newest to
    oldest, the first exchange that does not fit ends the history, so no gap is left. A
    tool round (an assistant's tool calls and the tool messages answering them) is never
    split: exchanges that answer tool calls stay with the exchange that made them.
    `keep_newest` keeps the newest unit even over the limits.
    """
    kept: list[list[dict[str, Any]]] = []
    messages = 0
    tokens = always_sent_tokens
    for unit in reversed(_tool_rounds(exchanges)):
        cost = sum(estimate_message_tokens(m) for m in unit)
        over = messages + len(unit) > limits.max_messages or tokens + cost > limits.max_tokens
        if over and not (keep_newest and not kept):
            break
        kept.append(unit)
        messages += len(unit)
        tokens += cost
    kept.reverse()
    return kept


@dataclass(frozen=True)
class History:
    """The stored messages a turn is sent after, and how many of the turn's own leading
    messages repeat stored ones (a client that resends its conversation: not new)."""

    messages: list[dict[str, Any]]
    repeated: int = 0


def rebuild_history(
    session: Session,
    conversation_id: str,
    client_key_id: int | None,
    limits: HistoryLimits,
    turn: Sequence[dict[str, Any]] = (),
    always_sent_tokens: int = 0,
) -> History:
    """The stored conversation to send the model before `turn`: whole completed exchanges,
    oldest first, each message as it was, trimmed to `limits` after `always_sent_tokens` (what
    is always sent) and the turn's new messages are counted; the newest exchange is kept
    whatever it costs when the turn answers its tool calls."""
    if limits.max_messages <= 0:
        return History([])
    rows = _load_exchanges(session, conversation_id, client_key_id, newest=limits.max_messages)
    exchanges = [[replayed(m.role, m.content, m.message_fields) for m in exchange] for exchange in rows]
    return _fitted(exchanges, turn, limits, always_sent_tokens)


def chain_history(
    session: Session,
    exchange_ids: tuple[str, ...],
    client_key_id: int | None,
    limits: HistoryLimits,
    turn: Sequence[dict[str, Any]] = (),
    always_sent_tokens: int = 0,
    held: Sequence[list[dict[str, Any]]] = (),
) -> History:
    """The completed exchanges `exchange_ids` (a chain, oldest first) as history, each
    message as it was, then the exchanges the caller `held` in memory (each a list of chat
    messages), trimmed as rebuild_history trims a conversation."""
    if not exchange_ids and not held:
        return History([])
    grouped: dict[str, list[dict[str, Any]]] = {}
    if exchange_ids:
        rows = session.execute(
            select(MESSAGES.c.exchange_id, MESSAGES.c.role, MESSAGES.c.content, MESSAGES.c.message_fields)
            .where(
                MESSAGES.c.exchange_id.in_(exchange_ids),
                owned_by(client_key_id),
                MESSAGES.c.status == MessageStatus.COMPLETED,
            )
            .order_by(MESSAGES.c.id)
        ).all()
        for row in rows:
            grouped.setdefault(row.exchange_id, []).append(replayed(row.role, row.content, row.message_fields))
    exchanges = [grouped[exchange_id] for exchange_id in exchange_ids if exchange_id in grouped]
    return _fitted([*exchanges, *(list(exchange) for exchange in held)], turn, limits, always_sent_tokens)


def _fitted(
    exchanges: list[list[dict[str, Any]]],
    turn: Sequence[dict[str, Any]],
    limits: HistoryLimits,
    always_sent_tokens: int,
) -> History:
    """The exchanges trimmed to what the window leaves once the turn's new messages are
    counted; which of the turn's messages are new is decided against everything loaded,
    before trimming, so a resent conversation longer than the window is still recognised."""
    repeated = already_stored([m for exchange in exchanges for m in exchange], list(turn))
    new = turn[repeated:]
    reserved = always_sent_tokens + sum(estimate_message_tokens(m) for m in new)
    # A turn that answers the newest exchange's tool calls needs that exchange, whatever it costs.
    keep_newest = bool(new) and new[0].get("role") == "tool"
    kept = trim_exchanges(exchanges, limits, reserved, keep_newest=keep_newest)
    return History([message for exchange in kept for message in exchange], repeated)


def _sameness(message: dict[str, Any]) -> tuple:
    """What makes two chat messages the same turn, whatever their spelling (null or "" content)."""
    calls = tuple(call.get("id") for call in message.get("tool_calls") or [] if isinstance(call, dict))
    return message.get("role"), text_of(message.get("content")), calls, message.get("tool_call_id")


def already_stored(history: list[dict[str, Any]], messages: list[dict[str, Any]]) -> int:
    """How many leading `messages` repeat the stored `history` a client sent again.

    Either they are the history's last ones (a client resending what it has), or the whole
    history appears in them, after older turns that trimming no longer sends. At least the
    last message is always new: a one-message turn is never taken for a repeat.
    """
    seen, sent = [_sameness(m) for m in history], [_sameness(m) for m in messages]
    for overlap in range(min(len(seen), len(sent) - 1), 0, -1):
        if sent[:overlap] == seen[-overlap:]:
            return overlap
    for end in range(len(sent) - 1, len(seen) - 1, -1):
        if seen and sent[end - len(seen) : end] == seen:
            return end
    return 0
