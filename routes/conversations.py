"""The conversations the service keeps: read (paginated), usage, erase."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from pydantic import ValidationError

from errors import ApiError
from schemas import ConversationPageQuery, UserIdPath, error_details
from services.conversation import conversation_exists, conversation_page, conversation_usage, delete_conversation

bp = Blueprint("conversations", __name__)

NOT_FOUND = "Conversation not found"


def _user_id(raw: str) -> str:
    try:
        return UserIdPath.model_validate({"user_id": raw}).user_id
    except ValidationError as exc:
        raise ApiError(400, "Invalid user_id", details=error_details(exc)) from None


@bp.get("/conversations/<user_id>")
def get_conversation(user_id: str):
    """The stored rows of one conversation, oldest first, `limit` at a time after `cursor`."""
    user_id = _user_id(user_id)
    try:
        query = ConversationPageQuery.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(400, "Invalid query", details=error_details(exc)) from None
    page = conversation_page(user_id, query.limit, int(query.cursor or 0))
    if not page.rows and not query.cursor and not conversation_exists(user_id):
        raise ApiError(404, NOT_FOUND)
    return jsonify({"user_id": user_id, "messages": page.rows, "next_cursor": page.next_cursor})


@bp.get("/conversations/<user_id>/usage")
def get_conversation_usage(user_id: str):
    """Token totals and exchange counts of one conversation."""
    usage = conversation_usage(_user_id(user_id))
    if usage is None:
        raise ApiError(404, NOT_FOUND)
    return jsonify(usage)


@bp.delete("/conversations/<user_id>")
def erase_conversation(user_id: str):
    """Erase every row of one conversation: 204, and it is gone from any later history."""
    if not delete_conversation(_user_id(user_id)):
        raise ApiError(404, NOT_FOUND)
    return "", 204
