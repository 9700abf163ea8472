"""The Responses and Conversations APIs' state: responses and their chains, conversation
metadata, and conversation items.

Items are not stored apart: they are read off the `messages` rows every chat route writes
(services/responses/items.py's `row_items`), so a conversation is one thing whichever route
continues it. Everything belongs to the client key that made it (services/ownership.py).
Every function takes the session of the caller's unit of work and never commits it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, Select, Text, bindparam, cast, delete, func, insert, literal, select, update
from sqlalchemy.orm import Session

from models import ConversationRecord, Message, MessageStatus, StoredResponse, as_utc
from services.exchanges import ITEM_IDS, new_exchange_id, replayed, stored_columns
from services.history import completed_exchanges
from services.ownership import owned_by
from services.pages import PageFill
from services.responses.items import response_of_item, row_items, row_of_item
from services.summaries import delete_summaries_covering

MESSAGES = Message.__table__
RESPONSES = StoredResponse.__table__
CONVERSATIONS = ConversationRecord.__table__
MAX_CHAIN = 10_000  # a chain longer than this is a loop, not a conversation

# -- responses ------------------------------------------------------------------------------


def stored_response(session: Session, response_id: str, client_key_id: int | None) -> Any:
    """The stored (store: true) response of this key, as a row; None for any other id."""
    return session.execute(
        select(RESPONSES).where(RESPONSES.c.id == response_id, owned_by(client_key_id, RESPONSES), RESPONSES.c.store)
    ).first()


def _compacted(responses: Any) -> Any:
    """Whether a stored response compacted its input (`context_management`): its output opens
    with the compaction item, and its exchange's rows hold the kept messages and the summary
    that stand for every link before it."""
    first_type = responses.c.body[("output", 0, "type")].as_string()
    return func.coalesce(first_type == "compaction", False).label("compacted")


def _chain_links(keyless: bool) -> Select:
    """The chain ending at `:response` of one key (`:key`, or of no key), newest link first:
    each stored response's exchange, conversation and the link before it, with its depth
    (1 for `:response`), at most MAX_CHAIN deep. One statement (a recursive query), built
    once per kind of owner and only bound after that."""
    owner = None if keyless else bindparam("key")
    columns = (RESPONSES.c.id, RESPONSES.c.exchange_id, RESPONSES.c.user_id, RESPONSES.c.previous_response_id)
    links = (
        select(*columns, _compacted(RESPONSES), literal(1, Integer).label("depth"))
        .where(RESPONSES.c.id == bindparam("response"), owned_by(owner, RESPONSES), RESPONSES.c.store)
        .cte("chain", recursive=True)
    )
    earlier = RESPONSES.alias("earlier")
    links = links.union_all(
        select(*(earlier.c[column.name] for column in columns), _compacted(earlier), (links.c.depth + 1).label("depth"))
        .join(links, earlier.c.id == links.c.previous_response_id)
        # A compacted response's exchange holds what it compacted: the chain ends there.
        .where(owned_by(owner, earlier), earlier.c.store, links.c.depth < MAX_CHAIN, links.c.compacted.is_(False))
    )
    return select(links).order_by(links.c.depth)


_CHAIN_LINKS = {keyless: _chain_links(keyless) for keyless in (True, False)}


def response_chain(session: Session, response_id: str, client_key_id: int | None) -> tuple[str, tuple[str, ...]] | None:
    """The conversation of the chain ending at `response_id` and its exchanges, oldest first;
    None when the response, or one before it, is unknown, deleted, not stored or another key's.
    One statement however long the chain (up to MAX_CHAIN links)."""
    values = {"response": response_id, "key": client_key_id}
    links = session.execute(_CHAIN_LINKS[client_key_id is None], values).all()
    if not links:
        return None
    oldest = links[-1]
    if oldest.previous_response_id is not None and not oldest.compacted and len(links) < MAX_CHAIN:
        return None  # the link before it is not this key's stored response
    user_id = next((link.user_id for link in links if link.user_id), links[0].user_id)
    return user_id, tuple(link.exchange_id for link in reversed(links))


def conversation_exchanges(session: Session, conversation_id: str, client_key_id: int | None) -> tuple[str, ...]:
    """The conversation's completed exchanges, oldest first: its history as a chain."""
    query = completed_exchanges(conversation_id, client_key_id)
    rows = session.execute(query.order_by(query.selected_columns.first_id)).all()
    return tuple(row.exchange_id for row in rows)


def history_end(
    session: Session, client_key_id: int | None, exchange_ids: Sequence[str] | None, conversation_id: str
) -> list[dict[str, Any]]:
    """The items of the exchange a new turn's history ends with: the last completed one of
    `exchange_ids` (a chain, oldest first), or, when that is None, the conversation's newest
    completed one; none without history."""
    completed = MESSAGES.c.status == MessageStatus.COMPLETED
    if exchange_ids is None:
        query = completed_exchanges(conversation_id, client_key_id)
        newest = session.execute(query.order_by(query.selected_columns.first_id.desc()).limit(1)).first()
        last = newest.exchange_id if newest is not None else None
    elif exchange_ids:
        done = set(
            session.scalars(
                select(MESSAGES.c.exchange_id)
                .where(MESSAGES.c.exchange_id.in_(exchange_ids), owned_by(client_key_id), completed)
                .distinct()
            )
        )
        last = next((exchange_id for exchange_id in reversed(exchange_ids) if exchange_id in done), None)
    else:
        last = None
    if last is None:
        return []
    rows = session.execute(select(MESSAGES).where(MESSAGES.c.exchange_id == last, completed).order_by(MESSAGES.c.id))
    return [item for row in rows.all() for item in row_items(row)]


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
        "created_at": int(as_utc(created).timestamp()),
        "metadata": dict(record.metadata) if record is not None else {},
    }


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
    session: Session,
    conversation_id: str,
    client_key_id: int | None,
    limit: int,
    newest_first: bool,
    after: str | None,
    max_bytes: int | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the conversation's items (its completed exchanges' rows): up to `limit`
    and `max_bytes` of JSON (the first item whatever its size), oldest or newest first,
    those after the item `after` (none when it is not one of them); and whether more
    follow. Reads at most `limit` + 1 rows past `after`'s (a row is at least one item), a
    few at a time, none past the first that does not fit."""

    def in_order(row: Any) -> list[dict[str, Any]]:
        items = row_items(row)
        return items[::-1] if newest_first else items

    listed = MESSAGES.c.status.in_((MessageStatus.COMPLETED, MessageStatus.SUMMARY))  # a summary: a compaction item
    rows = select(MESSAGES).where(MESSAGES.c.user_id == conversation_id, owned_by(client_key_id), listed)
    page = PageFill(limit, max_bytes if max_bytes is not None else 2**62)
    if after is not None:
        start = _item_row(session, conversation_id, client_key_id, after)
        if start is None:
            return [], False
        mine = in_order(start)
        if not page.add_all(mine[[item["id"] for item in mine].index(after) + 1 :]):  # the rest of its own row
            return page.entries, True
        rows = rows.where(MESSAGES.c.id < start.id if newest_first else MESSAGES.c.id > start.id)
    ordered = rows.order_by(MESSAGES.c.id.desc() if newest_first else MESSAGES.c.id).limit(limit + 1)
    result = session.execute(ordered.execution_options(yield_per=16))
    try:
        for row in result:
            if not page.add_all(in_order(row)):
                break
    finally:
        result.close()
    return page.entries, page.more


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


def _item_row(session: Session, conversation_id: str, client_key_id: int | None, item_id: str) -> Any:
    """The completed row of the conversation that holds the item `item_id`, or None. Found by
    the row's public id, or by the response whose output the item is: never by reading the
    conversation's rows one by one."""
    completed = MESSAGES.c.status.in_((MessageStatus.COMPLETED, MessageStatus.SUMMARY))
    mine = (MESSAGES.c.user_id == conversation_id, owned_by(client_key_id), completed)
    public_id = row_of_item(item_id)
    response_id = response_of_item(item_id)
    if public_id is not None:
        candidates = select(MESSAGES).where(MESSAGES.c.public_id == public_id, *mine)
    elif response_id is not None:  # an output item: on the reply row of its response's exchange
        responses = (RESPONSES.c.id == response_id, owned_by(client_key_id, RESPONSES))
        made_by = select(RESPONSES.c.exchange_id).where(*responses)
        candidates = select(MESSAGES).where(MESSAGES.c.exchange_id.in_(made_by), MESSAGES.c.model.is_not(None), *mine)
    elif _EARLIER_OUTPUT_ID.fullmatch(item_id):  # the output ids responses gave before they said whose they are
        named = cast(MESSAGES.c.message_fields, Text).like(f'%"{item_id}"%')
        candidates = select(MESSAGES).where(named, MESSAGES.c.role == "assistant", MESSAGES.c.model.is_not(None), *mine)
    else:
        return None
    rows = session.execute(candidates).all()
    return next((row for row in rows if any(item["id"] == item_id for item in row_items(row))), None)


# msg_<48 hex> or fc_<48 hex>: what a response named its output items before they carried its id.
_EARLIER_OUTPUT_ID = re.compile(r"(?:msg|fc)_[0-9a-f]{48}", re.ASCII)


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
    delete_summaries_covering(session, conversation_id, client_key_id, row.id)
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
