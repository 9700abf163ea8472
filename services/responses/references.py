"""Item references in a response's input: `{"type": "item_reference", "id": ...}` names an
item this service stored for the same client key (a message, a function_call or a
function_call_output), and the item is sent on as if the client had sent it whole.

Clients that keep their own history send earlier output this way to save bandwidth (the
Vercel AI SDK does, with `store` at its default). Every id says where its item is kept
(services/responses/items.py): a row's own (`msg_<public>`, `fc_<public>_<n>`, `fco_<public>`) or a
response's output (`msg_<hex>_<n>`, `fc_<hex>_<n>`), so all the references of a request are
found in one read by unique keys, before the model is called and with no connection held
across the call. Only completed exchanges count (a failed one is never sent as history), and
nothing of a `store: false` response: its content was never kept.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import exists, false, or_, select
from sqlalchemy.orm import Session

from database import unit_of_work
from errors import ApiError
from models import Message, MessageStatus, StoredResponse
from services.ownership import owned_by
from services.responses.items import Item, response_of_item, row_items, row_of_item

MESSAGES = Message.__table__
RESPONSES = StoredResponse.__table__


def item_not_found(item_id: str) -> ApiError:
    """OpenAI's answer to a reference it has no item for: 404, `param` "input", no code."""
    return ApiError(
        404,
        f"Item with id '{item_id}' not found. Items are not persisted when `store` is set to false. "
        "Try again with `store` set to true, or remove this item from your input.",
        details=[{"field": "input", "message": "no stored item has this id"}],
    )


def resolve_references(items: list[Item], client_key_id: int | None) -> list[Item]:
    """`items` with every item reference replaced by the item it names; the items themselves
    when there is none (no database read then). Raises item_not_found for the first id that is
    unknown, another key's, of a `store: false` response or of an exchange that did not complete."""
    wanted = [item["id"] for item in items if item.get("type") == "item_reference"]
    if not wanted:
        return items
    with unit_of_work(write=False) as session:
        found = stored_items(session, wanted, client_key_id)
    for item_id in wanted:
        if item_id not in found:
            raise item_not_found(item_id)
    return [dict(found[item["id"]]) if item.get("type") == "item_reference" else item for item in items]


def stored_items(session: Session, item_ids: Collection[str], client_key_id: int | None) -> dict[str, Item]:
    """The stored items of this key among `item_ids`, by id (an id with no such item is absent),
    read in one query: the rows the ids name, and the rows of the responses whose output they name."""
    rows = {row for row in map(row_of_item, item_ids) if row is not None}
    responses = {response for response in map(response_of_item, item_ids) if response is not None}
    if not rows and not responses:
        return {}
    of_responses = select(RESPONSES.c.exchange_id).where(
        RESPONSES.c.id.in_(responses), owned_by(client_key_id, RESPONSES), RESPONSES.c.store
    )
    not_stored = select(RESPONSES.c.id).where(RESPONSES.c.exchange_id == MESSAGES.c.exchange_id, ~RESPONSES.c.store)
    query = select(MESSAGES).where(
        or_(
            MESSAGES.c.public_id.in_(rows) if rows else false(),
            MESSAGES.c.exchange_id.in_(of_responses) if responses else false(),
        ),
        owned_by(client_key_id),
        MESSAGES.c.status == MessageStatus.COMPLETED,
        ~exists(not_stored),
    )
    wanted = set(item_ids)
    found: dict[str, Any] = {}
    for row in session.execute(query).all():
        found.update((item["id"], item) for item in row_items(row) if item["id"] in wanted)
    return found
