"""OpenAI's Conversations API (/v1/conversations): what each of its routes does, with its
units of work, so the routes only parse and shape. A conversation is the same rows every chat
route writes (services/responses/store.py reads them as items); everything belongs to the
client key that made it, and another key gets the same 404 as for an unknown id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from database import unit_of_work
from schemas import ItemListQuery
from services.conversations import ConversationLimits, check_new_items, delete_conversation
from services.responses import store
from services.responses.compaction import Sealer, sealed_summaries
from services.responses.items import items_to_chat_messages, new_id, validated_items
from services.responses.objects import item_list
from services.responses.service import not_found


def _conversation(session: Any, conversation_id: str, client_key_id: int | None) -> dict[str, Any]:
    """The conversation of this key, or the 404 for an unknown (or another key's) one."""
    found = store.conversation_object(session, conversation_id, client_key_id)
    if found is None:
        raise not_found("Conversation", conversation_id)
    return found


def _chat_messages(items: Sequence[Any]) -> list[dict[str, Any]]:
    """Validated Conversations-API items as the chat messages they are stored as."""
    return items_to_chat_messages(validated_items(items))


def create_conversation(
    client_key_id: int | None, items: Sequence[Any] | None, metadata: dict, limits: ConversationLimits
) -> dict[str, Any]:
    """A new conversation of this key, with its first items (within `limits`) and metadata."""
    conversation_id = new_id("conv")
    with unit_of_work() as session:
        store.save_conversation(session, conversation_id, client_key_id, metadata)
        if items:
            messages = _chat_messages(items)
            check_new_items(session, conversation_id, client_key_id, messages, limits)
            store.add_items(session, conversation_id, client_key_id, messages)
        return store.conversation_object(session, conversation_id, client_key_id)


def retrieve_conversation(conversation_id: str, client_key_id: int | None) -> dict[str, Any]:
    """A conversation: its id, when it began, its metadata."""
    with unit_of_work(write=False) as session:
        return _conversation(session, conversation_id, client_key_id)


def update_conversation(conversation_id: str, client_key_id: int | None, metadata: dict) -> dict[str, Any]:
    """Replace a conversation's metadata; the conversation as it is now."""
    with unit_of_work() as session:
        _conversation(session, conversation_id, client_key_id)
        store.save_conversation(session, conversation_id, client_key_id, metadata)
        return store.conversation_object(session, conversation_id, client_key_id)


def erase_conversation(conversation_id: str, client_key_id: int | None) -> dict[str, Any]:
    """Erase a conversation, its items and the responses made in it, for good; OpenAI's answer."""
    with unit_of_work() as session:
        _conversation(session, conversation_id, client_key_id)
        delete_conversation(session, conversation_id, client_key_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def conversation_item_page(
    conversation_id: str, client_key_id: int | None, query: ItemListQuery, page_bytes: int, sealer: Sealer | None = None
) -> dict[str, Any]:
    """The page `query` asks for of a conversation's items, newest first unless `order=asc`,
    at most `page_bytes` of JSON; its summary a `compaction` item sealed by `sealer`."""
    with unit_of_work(write=False) as session:
        _conversation(session, conversation_id, client_key_id)
        page, has_more = store.conversation_items(
            session, conversation_id, client_key_id, query.limit, query.order == "desc", query.after, page_bytes
        )
    return item_list(sealed_summaries(page, sealer, client_key_id), has_more)


def append_items(
    conversation_id: str, client_key_id: int | None, items: Sequence[Any], limits: ConversationLimits
) -> dict[str, Any]:
    """Append items (within `limits`) to a conversation; every item added, oldest first, as one list page."""
    with unit_of_work() as session:
        _conversation(session, conversation_id, client_key_id)
        messages = _chat_messages(items)
        check_new_items(session, conversation_id, client_key_id, messages, limits)
        added = store.add_items(session, conversation_id, client_key_id, messages)
    return item_list(added, has_more=False)


def conversation_item(
    conversation_id: str, client_key_id: int | None, item_id: str, sealer: Sealer | None = None
) -> dict[str, Any]:
    """One item of a conversation (a summary: a `compaction` item sealed by `sealer`); the 404 for any other."""
    with unit_of_work(write=False) as session:
        item = store.find_item(session, conversation_id, client_key_id, item_id)
    if item is None:
        raise not_found("Item", item_id)
    return sealed_summaries([item], sealer, client_key_id)[0]


def erase_item(conversation_id: str, client_key_id: int | None, item_id: str) -> dict[str, Any]:
    """Erase one item of a conversation for good; the conversation as it is now."""
    with unit_of_work() as session:
        if not store.delete_item(session, conversation_id, client_key_id, item_id):
            raise not_found("Item", item_id)
        return store.conversation_object(session, conversation_id, client_key_id)
