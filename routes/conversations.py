"""The conversations the service keeps: list, read (paginated), usage, erase.

Each request sees only the conversations of its own client key (see services.conversation).
"""

from __future__ import annotations

from flask import jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import ValidationError

from auth import current_owner
from errors import ApiError
from routes.api_docs import KEY_REQUIRED, delay_validation, responses
from schemas import (
    ConversationListQuery,
    ConversationListResponse,
    ConversationPageQuery,
    ConversationPageResponse,
    ConversationUsageResponse,
    UserIdPath,
    error_details,
)
from services.conversation import (
    conversation_exists,
    conversation_page,
    conversation_usage,
    delete_conversation,
    list_conversations,
)

bp = APIBlueprint("conversations", __name__, abp_tags=[Tag(name="conversations")], abp_security=KEY_REQUIRED)

NOT_FOUND = "Conversation not found"


def _user_id(raw: str) -> str:
    try:
        return UserIdPath.model_validate({"user_id": raw}).user_id
    except ValidationError as exc:
        raise ApiError(400, "Invalid user_id", details=error_details(exc)) from None


def _query(model):
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(400, "Invalid query", details=error_details(exc)) from None


@bp.get("/conversations", responses=responses({200: ConversationListResponse}, read_only=True))
@delay_validation
def get_conversations(query: ConversationListQuery = None):
    """The caller's conversations by user_id, `limit` at a time after `cursor` (a user_id)."""
    query = _query(ConversationListQuery)
    listed = list_conversations(current_owner(), query.limit, query.cursor or "")
    return jsonify({"conversations": listed.conversations, "next_cursor": listed.next_cursor})


@bp.get("/conversations/<user_id>", responses=responses({200: ConversationPageResponse}, read_only=True))
@delay_validation
def get_conversation(user_id: str, path: UserIdPath = None, query: ConversationPageQuery = None):
    """The stored rows of one conversation, oldest first, `limit` at a time after `cursor`."""
    user_id = _user_id(user_id)
    query = _query(ConversationPageQuery)
    owner = current_owner()
    page = conversation_page(user_id, owner, query.limit, int(query.cursor or 0))
    # An empty page past the end of a conversation is a 200; of none (erased, never
    # started, or another key's), whatever the cursor, a 404.
    if not page.rows and not conversation_exists(user_id, owner):
        raise ApiError(404, NOT_FOUND)
    return jsonify({"user_id": user_id, "messages": page.rows, "next_cursor": page.next_cursor})


@bp.get("/conversations/<user_id>/usage", responses=responses({200: ConversationUsageResponse}, read_only=True))
@delay_validation
def get_conversation_usage(user_id: str, path: UserIdPath = None):
    """Token totals and exchange counts of one conversation."""
    usage = conversation_usage(_user_id(user_id), current_owner())
    if usage is None:
        raise ApiError(404, NOT_FOUND)
    return jsonify(usage)


@bp.delete("/conversations/<user_id>", responses=responses({204: None}, read_only=True))
@delay_validation
def erase_conversation(user_id: str, path: UserIdPath = None):
    """Erase every row of one conversation: 204, and it is gone from any later history."""
    if not delete_conversation(_user_id(user_id), current_owner()):
        raise ApiError(404, NOT_FOUND)
    return "", 204
