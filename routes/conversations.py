"""The conversations the service keeps: list, read (paginated), usage, erase; and the same
conversations through OpenAI's Conversations API under /v1/conversations (metadata, items).

A conversation is one thing whichever route made it: one continued with /openai-completion
can be continued with `responses.create(conversation=...)` and read as items, and the other
way round. Each request sees only the conversations of its own client key (see
services/ownership.py); another key's get the same 404 as an unknown id.
"""

from __future__ import annotations

from types import SimpleNamespace

from flask import jsonify
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.utils import get_operation_id_for_path

from auth import current_client_key_id
from database import unit_of_work
from errors import ApiError
from routes.api_docs import KEY_REQUIRED, responses
from routes.responses import not_found, openai_object
from schemas import (
    ConversationCreate,
    ConversationListQuery,
    ConversationListResponse,
    ConversationPageQuery,
    ConversationPageResponse,
    ConversationPath,
    ConversationUpdate,
    ConversationUsageResponse,
    ItemListQuery,
    ItemPath,
    ItemsAdd,
    UserIdPath,
)
from services.conversations import (
    conversation_exists,
    conversation_page,
    conversation_usage,
    delete_conversation,
    list_conversations,
)
from services.responses.items import input_items, items_to_chat_messages, new_id
from services.responses.objects import item_list
from services.responses.store import (
    add_items,
    conversation_items,
    conversation_object,
    delete_item,
    find_item,
    save_conversation,
)

bp = APIBlueprint("conversations", __name__, abp_tags=[Tag(name="conversations")], abp_security=KEY_REQUIRED)
# The Conversations API's operationIds, as they were when these routes shared the Responses
# API's blueprint: kept, so that clients generated from the document keep working.
_FORMER_NAMES = {"retrieve_conversation": "get_conversation", "remove_conversation": "erase_conversation"}


def _former_operation_id(*, name: str, path: str, method: str) -> str:
    return get_operation_id_for_path(
        bp_name="responses_api", name=_FORMER_NAMES.get(name, name), path=path, method=method
    )


openai_bp = APIBlueprint(
    "conversations_api",
    __name__,
    url_prefix="/v1",
    abp_tags=[Tag(name="responses")],
    abp_security=KEY_REQUIRED,
    operation_id_callback=_former_operation_id,
)

NOT_FOUND = "Conversation not found"


@bp.get("/conversations", responses=responses({200: ConversationListResponse}, read_only=True))
def get_conversations(query: ConversationListQuery):
    """The caller's conversations by user_id, `limit` at a time after `cursor` (a user_id)."""
    with unit_of_work(write=False) as session:
        listed = list_conversations(session, current_client_key_id(), query.limit, query.cursor or "")
    return jsonify({"conversations": listed.conversations, "next_cursor": listed.next_cursor})


@bp.get("/conversations/<user_id>", responses=responses({200: ConversationPageResponse}, read_only=True))
def get_conversation(path: UserIdPath, query: ConversationPageQuery):
    """The stored rows of one conversation, oldest first, `limit` at a time after `cursor`."""
    key_id = current_client_key_id()
    with unit_of_work(write=False) as session:
        page = conversation_page(session, path.user_id, key_id, query.limit, int(query.cursor or 0))
        # An empty page past the end of a conversation is a 200; of none (erased, never
        # started, or another key's), whatever the cursor, a 404.
        if not page.rows and not conversation_exists(session, path.user_id, key_id):
            raise ApiError(404, NOT_FOUND)
    return jsonify({"user_id": path.user_id, "messages": page.rows, "next_cursor": page.next_cursor})


@bp.get("/conversations/<user_id>/usage", responses=responses({200: ConversationUsageResponse}, read_only=True))
def get_conversation_usage(path: UserIdPath):
    """Token totals and exchange counts of one conversation."""
    with unit_of_work(write=False) as session:
        usage = conversation_usage(session, path.user_id, current_client_key_id())
    if usage is None:
        raise ApiError(404, NOT_FOUND)
    return jsonify(usage)


@bp.delete("/conversations/<user_id>", responses=responses({204: None}, read_only=True))
def erase_conversation(path: UserIdPath):
    """Erase every row of one conversation: 204, and it is gone from any later history."""
    with unit_of_work() as session:
        deleted = delete_conversation(session, path.user_id, current_client_key_id())
    if not deleted:
        raise ApiError(404, NOT_FOUND)
    return "", 204


# /v1/conversations: OpenAI's Conversations API -------------------------------------------


def _conversation(session, conversation_id: str, key_id: int | None) -> dict:
    """The conversation of this key, or the 404 for an unknown (or another key's) one."""
    found = conversation_object(session, conversation_id, key_id)
    if found is None:
        raise not_found("Conversation", conversation_id)
    return found


def _chat_messages(items: list) -> list[dict]:
    """Validated Conversations-API items as the chat messages they are stored as."""
    return items_to_chat_messages(input_items(SimpleNamespace(input=items)))


@openai_bp.post("/conversations", responses=openai_object())
def create_conversation(body: ConversationCreate):
    """A new conversation, with its first items and metadata."""
    conversation_id, key_id = new_id("conv"), current_client_key_id()
    with unit_of_work() as session:
        save_conversation(session, conversation_id, key_id, dict(body.metadata or {}))
        if body.items:
            add_items(session, conversation_id, key_id, _chat_messages(body.items))
        created = conversation_object(session, conversation_id, key_id)
    return jsonify(created)


@openai_bp.get("/conversations/<conversation_id>", responses=openai_object(read_only=True))
def retrieve_conversation(path: ConversationPath):
    """A conversation: its id, when it began, its metadata."""
    with unit_of_work(write=False) as session:
        found = _conversation(session, path.conversation_id, current_client_key_id())
    return jsonify(found)


@openai_bp.post("/conversations/<conversation_id>", responses=openai_object())
def update_conversation(path: ConversationPath, body: ConversationUpdate):
    """Replace a conversation's metadata."""
    key_id = current_client_key_id()
    with unit_of_work() as session:
        _conversation(session, path.conversation_id, key_id)
        save_conversation(session, path.conversation_id, key_id, dict(body.metadata))
        updated = conversation_object(session, path.conversation_id, key_id)
    return jsonify(updated)


@openai_bp.delete("/conversations/<conversation_id>", responses=openai_object(read_only=True))
def remove_conversation(path: ConversationPath):
    """Erase a conversation, its items and the responses made in it, for good."""
    key_id = current_client_key_id()
    with unit_of_work() as session:
        _conversation(session, path.conversation_id, key_id)
        delete_conversation(session, path.conversation_id, key_id)
    return jsonify({"id": path.conversation_id, "object": "conversation.deleted", "deleted": True})


@openai_bp.get("/conversations/<conversation_id>/items", responses=openai_object(read_only=True))
def list_items(path: ConversationPath, query: ItemListQuery):
    """A conversation's items, newest first unless `order=asc`."""
    key_id = current_client_key_id()
    with unit_of_work(write=False) as session:
        _conversation(session, path.conversation_id, key_id)
        page, has_more = conversation_items(
            session, path.conversation_id, key_id, query.limit, query.order == "desc", query.after
        )
    return jsonify(item_list(page, has_more))


@openai_bp.post("/conversations/<conversation_id>/items", responses=openai_object())
def append_items(path: ConversationPath, body: ItemsAdd):
    """Append up to 20 items to a conversation."""
    key_id = current_client_key_id()
    with unit_of_work() as session:
        _conversation(session, path.conversation_id, key_id)
        added = add_items(session, path.conversation_id, key_id, _chat_messages(body.items))
    return jsonify(item_list(added, has_more=False))  # every item added, oldest first


@openai_bp.get("/conversations/<conversation_id>/items/<item_id>", responses=openai_object(read_only=True))
def get_item(path: ItemPath):
    """One item of a conversation."""
    with unit_of_work(write=False) as session:
        item = find_item(session, path.conversation_id, current_client_key_id(), path.item_id)
    if item is None:
        raise not_found("Item", path.item_id)
    return jsonify(item)


@openai_bp.delete("/conversations/<conversation_id>/items/<item_id>", responses=openai_object(read_only=True))
def remove_item(path: ItemPath):
    """Erase one item of a conversation for good; answers the conversation."""
    key_id = current_client_key_id()
    with unit_of_work() as session:
        if not delete_item(session, path.conversation_id, key_id, path.item_id):
            raise not_found("Item", path.item_id)
        conversation = conversation_object(session, path.conversation_id, key_id)
    return jsonify(conversation)
