"""The conversation store: rebuild and trim a conversation's history, record its exchanges.

An exchange is one request and its reply; its rows share `exchange_id` and a status.
Every function takes the session of the caller's unit of work (database.unit_of_work)
and never commits or closes it: the pipeline decides where transactions begin and end.

A conversation is a conversation id (the `user_id` column, as the seed routes call it on
the wire) within a client key (`client_key_id`: the key's id, or None when keys are
off): two keys using the same id each have their own, and no function here reads or
changes another key's rows. Only the operator's CLI passes ANY_KEY.

The Responses and Conversations APIs keep their state here too: responses and their
chains, conversation metadata, and conversation items. Items are not stored apart: they
are read off the `messages` rows every chat route writes, so a conversation is one thing
whichever route continues it. A row is one or more items, with ids derived from the
row's id: `msg_<row>` (its message), `fc_<row>_<n>` (its n-th tool call) and `fco_<row>`
(a tool message: a function_call_output).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Row,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session

from models import ConversationRecord, Message, MessageStatus, StoredResponse, iso_utc
from services.llm import estimate_message_tokens, text_of

MESSAGES = Message.__table__
RESPONSES = StoredResponse.__table__
CONVERSATIONS = ConversationRecord.__table__
MAX_CHAIN = 10_000  # a chain longer than this is a loop, not a conversation

# The statements every exchange runs, built once (SQLAlchemy then only looks up their
# compiled form): building them per request was a quarter of its two transactions' CPU.
_ADD_ROWS = insert(MESSAGES)
_CLOSE_ROWS = (
    update(MESSAGES)
    .where(MESSAGES.c.exchange_id == bindparam("exchange"))
    .values(status=bindparam("new_status"), error=bindparam("new_error"))
)
_CLOSE_PENDING_ROWS = _CLOSE_ROWS.where(MESSAGES.c.status == MessageStatus.PENDING)

Item = dict[str, Any]


class _AnyKey:
    def __repr__(self) -> str:
        return "ANY_KEY"


# The operator's view (CLI): rows of every key. Requests always pass their own key.
ANY_KEY = _AnyKey()
KeyScope = int | None | _AnyKey


def owned_by(client_key_id: KeyScope, table: Table = MESSAGES) -> ColumnElement[bool]:
    """The rows of `table` (any with an api_key_id) of a client key: its own, the keyless
    ones for None, everyone's for ANY_KEY."""
    if isinstance(client_key_id, _AnyKey):
        return true()
    if client_key_id is None:
        return table.c.api_key_id.is_(None)
    return table.c.api_key_id == client_key_id


@dataclass(frozen=True)
class HistoryLimits:
    """How much stored history may be sent: messages, and an estimated token budget."""

    max_messages: int
    max_tokens: int


# No trimming at all: every stored exchange is sent.
UNLIMITED = HistoryLimits(max_messages=10**9, max_tokens=10**15)


def new_conversation_id() -> str:
    """A fresh conversation id (UUID4)."""
    return str(uuid.uuid4())


def new_exchange_id() -> str:
    """A fresh exchange id (UUID4)."""
    return str(uuid.uuid4())


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
) -> History:
    """The completed exchanges `exchange_ids` (a chain, oldest first) as history, each
    message as it was, trimmed as rebuild_history trims a conversation."""
    if not exchange_ids:
        return History([])
    rows = session.execute(
        select(MESSAGES.c.exchange_id, MESSAGES.c.role, MESSAGES.c.content, MESSAGES.c.message_fields)
        .where(
            MESSAGES.c.exchange_id.in_(exchange_ids),
            owned_by(client_key_id),
            MESSAGES.c.status == MessageStatus.COMPLETED,
        )
        .order_by(MESSAGES.c.id)
    ).all()
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row.exchange_id, []).append(replayed(row.role, row.content, row.message_fields))
    exchanges = [grouped[exchange_id] for exchange_id in exchange_ids if exchange_id in grouped]
    return _fitted(exchanges, turn, limits, always_sent_tokens)


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


def without_content(message: dict[str, Any]) -> dict[str, Any]:
    """The message with nothing of what was said: its role only (store: false keeps no content)."""
    return {"role": message["role"], "content": ""}


def stored_columns(message: dict[str, Any]) -> dict[str, Any]:
    """The columns one chat message is stored in: role, content, and every other field."""
    fields = {name: value for name, value in message.items() if name not in ("role", "content")}
    content = message.get("content")
    if content is None:
        # A message without content (an assistant's tool calls): the column holds "",
        # the fields remember that it was null.
        fields["content"] = None
    stored = content if content is not None else ""
    return {"role": message["role"], "content": stored, "message_fields": fields or None}


# In message_fields, but not a field of the chat message: the ids a Responses-API answer gave
# the items this row is, so the conversation lists them under the same ids.
ITEM_IDS = "item_ids"


def replayed(role: str, content: Any, message_fields: dict[str, Any] | None) -> dict[str, Any]:
    """A stored message as it was sent or received: role, content and every other field."""
    fields = {name: value for name, value in (message_fields or {}).items() if name != ITEM_IDS}
    return {"role": role, "content": content, **fields}


def record_turn(
    session: Session,
    exchange_id: str,
    conversation_id: str,
    client_key_id: int | None,
    messages: list[dict[str, Any]],
    reserved_tokens: int | None = None,
    now: datetime | None = None,
) -> None:
    """Store the new messages of an exchange as `pending` rows of the conversation, stamped
    `now` (by default the present); the first carries the tokens the exchange reserved
    from the budget of that UTC day (see abandon_stale)."""
    # Core statements on the table: no ORM bookkeeping for rows we never read back.
    now = now or datetime.now(UTC)
    session.execute(
        _ADD_ROWS,
        [
            {
                "user_id": conversation_id,
                "exchange_id": exchange_id,
                "api_key_id": client_key_id,
                "status": MessageStatus.PENDING,
                "timestamp": now,
                "reserved_tokens": reserved_tokens if index == 0 else None,
                **stored_columns(message),
            }
            for index, message in enumerate(messages)
        ],
    )


def _close_exchange(session: Session, exchange_id: str, status: str, error: str | None) -> str | None:
    """Set every row of the exchange to `status`; the status they had: PENDING, ABANDONED
    (the sweeper closed it while its call still ran), or None (its rows were erased)."""
    values = {"exchange": exchange_id, "new_status": status, "new_error": error}
    if session.execute(_CLOSE_PENDING_ROWS, values).rowcount:
        return MessageStatus.PENDING
    return MessageStatus.ABANDONED if session.execute(_CLOSE_ROWS, values).rowcount else None


def record_reply(
    session: Session,
    exchange_id: str,
    conversation_id: str,
    client_key_id: int | None,
    reply: dict[str, Any],
    status: str = MessageStatus.COMPLETED,
    error: str | None = None,
) -> str | None:
    """Store the assistant turn (`reply`: its stored_columns, completion_id, model and
    token counts) and set the exchange's status; the status it had (see _close_exchange).
    None, storing nothing, when the conversation was erased while the model worked: a
    reply must not bring back what its owner erased."""
    before = _close_exchange(session, exchange_id, status, error)
    if before is None:
        return None
    row = {"user_id": conversation_id, "exchange_id": exchange_id, "api_key_id": client_key_id}
    row.update(status=status, error=error, timestamp=datetime.now(UTC))
    session.execute(_ADD_ROWS, [{**row, **reply}])
    return before


def record_failure(session: Session, exchange_id: str, error: str) -> str | None:
    """Mark an exchange failed, keeping it for audit only (never sent as history); the
    status it had (see _close_exchange)."""
    return _close_exchange(session, exchange_id, MessageStatus.FAILED, error)


def exchange_status(session: Session, exchange_id: str) -> str | None:
    """The status of an exchange's rows, or None when none is stored (never, or erased)."""
    return session.scalar(select(MESSAGES.c.status).where(MESSAGES.c.exchange_id == exchange_id).limit(1))


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
    """Exchange counts by status and token totals of a conversation; None when nothing is stored."""
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
    # A response made by one of these exchanges goes with it: nothing of it may outlive retention.
    session.execute(delete(RESPONSES).where(RESPONSES.c.exchange_id.in_(batch)))
    return session.execute(delete(MESSAGES).where(MESSAGES.c.exchange_id.in_(batch))).rowcount or 0


def touch_pending(session: Session, exchange_id: str, now: datetime) -> None:
    """Mark a pending exchange alive at `now` (a long stream is still being relayed)."""
    session.execute(
        update(MESSAGES)
        .where(MESSAGES.c.exchange_id == exchange_id, MESSAGES.c.status == MessageStatus.PENDING)
        .values(heartbeat_at=now)
    )


def _unheartbeated(older_than: datetime) -> ColumnElement[bool]:
    """Pending rows not heartbeated since `older_than`."""
    # 'pending' rendered as a literal: only then can SQLite's and PostgreSQL's planners
    # (a generic plan too) use the partial index ix_messages_pending_timestamp.
    pending = literal(MessageStatus.PENDING, literal_execute=True)
    return (MESSAGES.c.status == pending) & (MESSAGES.c.heartbeat_at.is_(None) | (MESSAGES.c.heartbeat_at < older_than))


def abandon_stale(session: Session, older_than: datetime, error: str, batch_size: int) -> list[Row]:
    """Close the exchanges of up to `batch_size` rows still pending since before `older_than`
    (and not heartbeated since), whole, as ABANDONED with `error`; return the rows this
    statement changed (exchange_id, api_key_id, role, content, message_fields, and the
    reserved_tokens and timestamp of the reservation a first row records): fewer than
    `batch_size` means none is left.

    One UPDATE ... RETURNING of whole exchanges whose WHERE re-checks the status and the
    heartbeat: a row another sweeper, a heartbeat or the exchange's own reply changed
    first is not changed, nor returned, again.
    """
    stale = (
        select(MESSAGES.c.exchange_id)
        .where(_unheartbeated(older_than), MESSAGES.c.timestamp < older_than)
        .limit(batch_size)
    )
    statement = (
        update(MESSAGES)
        .where(_unheartbeated(older_than), MESSAGES.c.exchange_id.in_(stale))
        .values(status=MessageStatus.ABANDONED, error=error)
        .returning(
            MESSAGES.c.exchange_id,
            MESSAGES.c.api_key_id,
            MESSAGES.c.role,
            MESSAGES.c.content,
            MESSAGES.c.message_fields,
            MESSAGES.c.reserved_tokens,
            MESSAGES.c.timestamp,
        )
    )
    return list(session.execute(statement).all())


# -- the Responses and Conversations APIs: ids and items -------------------------------------


def new_id(prefix: str) -> str:
    """A fresh id in OpenAI's style: the prefix ("resp", "msg", "fc", "fco", "call"), "_", 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


def message_item(role: str, content: str | Sequence[Mapping[str, Any]], *, item_id: str | None = None) -> Item:
    """A message item; string content becomes one text part of the kind the role takes."""
    parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else list(content)
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [_item_part(role, part) for part in parts],
    }


def _item_part(role: str, part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if role == "assistant":
        if kind == "refusal":
            return {"type": "refusal", "refusal": part["refusal"]}
        # Annotations are citations from built-in tools, which this service has none of.
        return {"type": "output_text", "text": part["text"], "annotations": []}
    if kind == "input_image":
        return {"type": "input_image", "image_url": part["image_url"], "detail": part.get("detail") or "auto"}
    return {"type": "input_text", "text": part["text"]}


def function_call_item(
    call_id: str, name: str, arguments: str, *, item_id: str | None = None, status: str = "completed"
) -> Item:
    """A function_call item (id fc_...): the call the model made, as OpenAI lists it."""
    return {
        "id": item_id or new_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def function_call_output_item(
    call_id: str, output: str | Sequence[Mapping[str, Any]], *, item_id: str | None = None
) -> Item:
    """A function_call_output item (id fco_...): the client's answer to a call; output kept as sent."""
    if not isinstance(output, str):
        output = [{"type": "input_text", "text": part["text"]} for part in output]
    return {
        "id": item_id or new_id("fco"),
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": output,
    }


# -- responses ------------------------------------------------------------------------------


def stored_response(session: Session, response_id: str, client_key_id: int | None) -> Any:
    """The stored (store: true) response of this key, as a row; None for any other id."""
    return session.execute(
        select(RESPONSES).where(RESPONSES.c.id == response_id, owned_by(client_key_id, RESPONSES), RESPONSES.c.store)
    ).first()


def response_chain(session: Session, response_id: str, client_key_id: int | None) -> tuple[str, tuple[str, ...]] | None:
    """The conversation of the chain ending at `response_id` and its exchanges, oldest first;
    None when the response, or one before it, is unknown, deleted, not stored or another key's."""
    exchanges: list[str] = []
    current: str | None = response_id
    user_id = None
    while current is not None and len(exchanges) < MAX_CHAIN:
        row = stored_response(session, current, client_key_id)
        if row is None:
            return None
        user_id = user_id or row.user_id
        exchanges.append(row.exchange_id)
        current = row.previous_response_id
    return user_id, tuple(reversed(exchanges))


def conversation_exchanges(session: Session, conversation_id: str, client_key_id: int | None) -> tuple[str, ...]:
    """The conversation's completed exchanges, oldest first: its history as a chain."""
    query = completed_exchanges(conversation_id, client_key_id)
    rows = session.execute(query.order_by(query.selected_columns.first_id)).all()
    return tuple(row.exchange_id for row in rows)


def record_response(session: Session, **columns: Any) -> None:
    """Store one response (its id, key, exchange, conversation, chain link, store flag, status, body)."""
    session.execute(insert(RESPONSES), [{"created_at": datetime.now(UTC), **columns}])


def response_recorded(session: Session, response_id: str) -> bool:
    """Whether a response row with this id exists (stored or not, any key's)."""
    return session.execute(select(RESPONSES.c.id).where(RESPONSES.c.id == response_id)).first() is not None


def delete_response(session: Session, response_id: str, client_key_id: int | None) -> bool:
    """Erase a stored response and its exchange's rows, for good; False when there is none."""
    row = stored_response(session, response_id, client_key_id)
    if row is None:
        return False
    session.execute(delete(MESSAGES).where(MESSAGES.c.exchange_id == row.exchange_id))
    session.execute(delete(RESPONSES).where(RESPONSES.c.id == response_id))
    return True


def response_input_items(session: Session, row: Any) -> list[dict[str, Any]]:
    """The input items of a stored response: its exchange's rows but the reply, oldest first."""
    rows = session.execute(select(MESSAGES).where(MESSAGES.c.exchange_id == row.exchange_id).order_by(MESSAGES.c.id))
    # The reply is the assistant row that carries the model's name; a client's own assistant turn has none.
    inputs = [message for message in rows.all() if not (message.role == "assistant" and message.model is not None)]
    return [item for message in inputs for item in row_items(message)]


# -- conversations ----------------------------------------------------------------------------


def conversation_object(session: Session, conversation_id: str, client_key_id: int | None) -> dict[str, Any] | None:
    """The conversation as the Conversations API shows it; None when this key has no such one
    (neither created through the API nor written by any chat route)."""
    record = session.execute(
        select(CONVERSATIONS).where(CONVERSATIONS.c.user_id == conversation_id, owned_by(client_key_id, CONVERSATIONS))
    ).first()
    first = session.scalar(
        select(func.min(MESSAGES.c.timestamp)).where(MESSAGES.c.user_id == conversation_id, owned_by(client_key_id))
    )
    if record is None and first is None:
        return None
    created = record.created_at if record is not None else first
    return {
        "id": conversation_id,
        "object": "conversation",
        "created_at": int(_aware(created).timestamp()),
        "metadata": dict(record.metadata) if record is not None else {},
    }


def _aware(stamp: Any) -> datetime:
    return datetime.fromisoformat(iso_utc(stamp))


def save_conversation(session: Session, conversation_id: str, client_key_id: int | None, metadata: dict) -> None:
    """Create the conversation's record, or replace its metadata."""
    updated = session.execute(
        update(CONVERSATIONS)
        .where(CONVERSATIONS.c.user_id == conversation_id, owned_by(client_key_id, CONVERSATIONS))
        .values(metadata=metadata)
    ).rowcount
    if not updated:
        session.add(ConversationRecord(api_key_id=client_key_id, user_id=conversation_id, metadata_=metadata))
        session.flush()


# -- items ----------------------------------------------------------------------------------


def _input_parts(content: Any) -> Any:
    """Chat content as Responses input parts (input_text, input_image)."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if part.get("type") == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail")})
        else:
            parts.append({"type": "input_text", "text": part.get("text", "")})
    return parts


def row_items(row: Any) -> list[dict[str, Any]]:
    """The items one stored message row is, with ids derived from the row's id."""
    message = replayed(row.role, row.content, row.message_fields)
    if row.role == "tool":
        call_id = message.get("tool_call_id") or ""
        return [function_call_output_item(call_id, text_of(row.content), item_id=f"fco_{row.id}")]
    if row.role != "assistant":
        return [message_item(row.role, _input_parts(row.content), item_id=f"msg_{row.id}")]
    items = []
    calls = message.get("tool_calls") or []
    text = text_of(row.content)
    if text or message.get("refusal") or not calls:
        parts = [{"type": "output_text", "text": text}] if text or not message.get("refusal") else []
        if message.get("refusal"):
            parts.append({"type": "refusal", "refusal": message["refusal"]})
        items.append(message_item("assistant", parts, item_id=f"msg_{row.id}"))
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        name, arguments = function.get("name", ""), function.get("arguments", "")
        items.append(function_call_item(call.get("id"), name, arguments, item_id=f"fc_{row.id}_{index}"))
    named = (row.message_fields or {}).get(ITEM_IDS) or []
    if len(named) == len(items):  # the ids the response that made this reply gave its items
        for item, item_id in zip(items, named, strict=True):
            item["id"] = item_id
    return items


def name_reply_items(session: Session, exchange_id: str, item_ids: list[str]) -> None:
    """Give the items of an exchange's reply the ids its response answered with."""
    row = session.execute(
        select(MESSAGES.c.id, MESSAGES.c.message_fields)
        .where(MESSAGES.c.exchange_id == exchange_id, MESSAGES.c.role == "assistant", MESSAGES.c.model.is_not(None))
        .order_by(MESSAGES.c.id.desc())
        .limit(1)
    ).first()
    if row is not None:
        fields = {**(row.message_fields or {}), ITEM_IDS: item_ids}
        session.execute(update(MESSAGES).where(MESSAGES.c.id == row.id).values(message_fields=fields))


def conversation_items(
    session: Session, conversation_id: str, client_key_id: int | None, limit: int, newest_first: bool, after: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the conversation's items (its completed exchanges' rows): up to `limit`,
    oldest or newest first, those after the item `after` (none when it is not one of them);
    and whether more follow. Reads at most `limit` + 1 rows past `after`'s: a row is at
    least one item."""

    def in_order(row: Any) -> list[dict[str, Any]]:
        items = row_items(row)
        return items[::-1] if newest_first else items

    rows = select(MESSAGES).where(
        MESSAGES.c.user_id == conversation_id, owned_by(client_key_id), MESSAGES.c.status == MessageStatus.COMPLETED
    )
    items: list[dict[str, Any]] = []
    if after is not None:
        start = _item_row(session, conversation_id, client_key_id, after)
        if start is None:
            return [], False
        mine = in_order(start)
        items = mine[[item["id"] for item in mine].index(after) + 1 :]  # the rest of its own row
        rows = rows.where(MESSAGES.c.id < start.id if newest_first else MESSAGES.c.id > start.id)
    ordered = rows.order_by(MESSAGES.c.id.desc() if newest_first else MESSAGES.c.id).limit(limit + 1)
    items += [item for row in session.execute(ordered).all() for item in in_order(row)]
    return items[:limit], len(items) > limit


def add_items(
    session: Session, conversation_id: str, client_key_id: int | None, messages: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Append chat messages to the conversation as one completed exchange; the items they became."""
    exchange_id = new_exchange_id()
    base = {"user_id": conversation_id, "exchange_id": exchange_id, "api_key_id": client_key_id}
    if messages:
        rows = [{**base, "status": MessageStatus.COMPLETED, **stored_columns(m)} for m in messages]
        session.execute(insert(MESSAGES), rows)
    added = session.execute(select(MESSAGES).where(MESSAGES.c.exchange_id == exchange_id).order_by(MESSAGES.c.id))
    return [item for row in added.all() for item in row_items(row)]


def _row_of(item_id: str) -> int | None:
    """The row id a derived item id (msg_<row>, fc_<row>_<n>, fco_<row>) names, or None."""
    prefix, _, rest = item_id.partition("_")
    number = rest.split("_")[0]
    return int(number) if prefix in ("msg", "fc", "fco") and number.isdigit() and len(number) < 19 else None


def _item_row(session: Session, conversation_id: str, client_key_id: int | None, item_id: str) -> Any:
    """The completed row of the conversation that holds the item `item_id`, or None."""
    mine = (MESSAGES.c.user_id == conversation_id, owned_by(client_key_id))
    completed = MESSAGES.c.status == MessageStatus.COMPLETED
    row_id = _row_of(item_id)
    if row_id is not None:
        rows = session.execute(select(MESSAGES).where(MESSAGES.c.id == row_id, *mine, completed)).all()
    else:  # an id a response gave its output: on a reply row that recorded it
        replies = select(MESSAGES).where(
            *mine, completed, MESSAGES.c.role == "assistant", MESSAGES.c.model.is_not(None)
        )
        rows = session.execute(replies).all()
    return next((row for row in rows if any(item["id"] == item_id for item in row_items(row))), None)


def find_item(session: Session, conversation_id: str, client_key_id: int | None, item_id: str) -> dict | None:
    """The item `item_id` of the conversation, or None."""
    row = _item_row(session, conversation_id, client_key_id, item_id)
    return next(item for item in row_items(row) if item["id"] == item_id) if row is not None else None


def delete_item(session: Session, conversation_id: str, client_key_id: int | None, item_id: str) -> bool:
    """Erase one item for good: its row, or, of an assistant row that is several items, only
    the tool call or the text it is. False when the conversation has no such item."""
    row = _item_row(session, conversation_id, client_key_id, item_id)
    if row is None:
        return False
    items = row_items(row)
    keep = [item for item in items if item["id"] != item_id]
    if not keep:
        session.execute(delete(MESSAGES).where(MESSAGES.c.id == row.id))
        return True
    message = replayed(row.role, row.content, row.message_fields)
    kept_calls = {item["call_id"] for item in keep if item["type"] == "function_call"}
    message["tool_calls"] = [call for call in message.get("tool_calls") or [] if call.get("id") in kept_calls]
    if not message["tool_calls"]:
        message.pop("tool_calls")
    if not any(item["type"] == "message" for item in keep):
        message["content"] = None  # the text goes, the calls stay
    columns = stored_columns(message)
    columns["message_fields"] = {**(columns["message_fields"] or {}), ITEM_IDS: [item["id"] for item in keep]}
    session.execute(update(MESSAGES).where(MESSAGES.c.id == row.id).values(**columns))
    return True
