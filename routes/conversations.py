"""The conversations the service keeps: list, read (paginated), usage, erase.

A conversation is one thing whichever route made it: one continued with /openai-completion
can be continued with `responses.create(conversation=...)` and read as items through
OpenAI's Conversations API (routes/openai_conversations.py), and the other way round. Each
request sees only the conversations of its own client key (see services/ownership.py);
another key's get the same 404 as an unknown id.
"""

from __future__ import annotations

from flask import current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag

from auth import current_client_key_id
from database import unit_of_work
from errors import ApiError
from routes.openapi import KEY_REQUIRED, responses
from schemas import (
    ConversationListQuery,
    ConversationListResponse,
    ConversationPageQuery,
    ConversationPageResponse,
    ConversationUsageResponse,
    UserIdPath,
)
from services.conversations import (
    conversation_exists,
    conversation_page,
    conversation_usage,
    delete_conversation,
    list_conversations,
)

conversations_bp = APIBlueprint(
    "conversations", __name__, abp_tags=[Tag(name="conversations")], abp_security=KEY_REQUIRED
)

NOT_FOUND = "Conversation not found"


@conversations_bp.get("/conversations", responses=responses({200: ConversationListResponse}, read_only=True))
def get_conversations(query: ConversationListQuery):
    """The caller's conversations by user_id, `limit` at a time after `cursor` (a user_id)."""
    with unit_of_work(write=False) as session:
        listed = list_conversations(session, current_client_key_id(), query.limit, query.cursor or "")
    return jsonify({"conversations": listed.conversations, "next_cursor": listed.next_cursor})


@conversations_bp.get("/conversations/<user_id>", responses=responses({200: ConversationPageResponse}, read_only=True))
def get_conversation(path: UserIdPath, query: ConversationPageQuery):
    """The stored rows of one conversation, oldest first, `limit` at a time after `cursor`."""
    key_id = current_client_key_id()
    with unit_of_work(write=False) as session:
        # Fewer than `limit` when they pass PAGE_MAX_BYTES: next_cursor then names the next page.
        page = conversation_page(
            session, path.user_id, key_id, query.limit, query.cursor, current_app.config["PAGE_MAX_BYTES"]
        )
        # An empty page past the end of a conversation is a 200; of none (erased, never
        # started, or another key's), whatever the cursor, a 404.
        if not page.rows and not conversation_exists(session, path.user_id, key_id):
            raise ApiError(404, NOT_FOUND)
    return jsonify({"user_id": path.user_id, "messages": page.rows, "next_cursor": page.next_cursor})


@conversations_bp.get(
    "/conversations/<user_id>/usage", responses=responses({200: ConversationUsageResponse}, read_only=True)
)
def get_conversation_usage(path: UserIdPath):
    """Token totals and exchange counts of one conversation."""
    with unit_of_work(write=False) as session:
        usage = conversation_usage(session, path.user_id, current_client_key_id())
    if usage is None:
        raise ApiError(404, NOT_FOUND)
    return jsonify(usage)


@conversations_bp.delete("/conversations/<user_id>", responses=responses({204: None}, read_only=True))
def erase_conversation(path: UserIdPath):
    """Erase every row of one conversation: 204, and it is gone from any later history."""
    with unit_of_work() as session:
        deleted = delete_conversation(session, path.user_id, current_client_key_id())
    if not deleted:
        raise ApiError(404, NOT_FOUND)
    return "", 204
