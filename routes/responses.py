"""OpenAI's Responses and Conversations APIs (/v1/responses, /v1/conversations), with the
state kept in this service's own store, over any chat-completions upstream.

A conversation here is the same conversation the other routes keep (a `user_id`): one
continued with /openai-completion can be continued with `responses.create(conversation=...)`
and read as items, and the other way round. Everything belongs to the client key that
made it; another key gets the same 404 as for an unknown id.
"""

from __future__ import annotations

from types import SimpleNamespace

from flask import current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag

from auth import current_client_key, current_client_key_id
from database import unit_of_work
from errors import ApiError
from extensions import completion_limit, limiter
from routes.api_docs import KEY_REQUIRED, responses
from routes.chat import event_stream, exchange_report
from schemas.responses import (
    ConversationCreate,
    ConversationPath,
    ConversationUpdate,
    ItemListQuery,
    ItemPath,
    ItemsAdd,
    ResponsePath,
    ResponseRequest,
)
from services.conversation import delete_conversation
from services.responses import create_response
from services.responses_format import input_items, items_to_chat_messages, new_id
from services.responses_store import (
    add_items,
    conversation_items,
    conversation_object,
    delete_item,
    delete_response,
    find_item,
    response_input_items,
    save_conversation,
    stored_response,
)

bp = APIBlueprint(
    "responses_api", __name__, url_prefix="/v1", abp_tags=[Tag(name="responses")], abp_security=KEY_REQUIRED
)
# The document's answer for these routes' JSON: OpenAI's objects, as the SDK's types define them.
_OBJECT = {"application/json": {"schema": {"type": "object"}}}
_STREAM = {"text/event-stream": {"schema": {}}}  # each event's data: one of OpenAI's stream events


def _documented(read_only: bool = False, streams: bool = False) -> dict:
    content = {**_OBJECT, **_STREAM} if streams else _OBJECT
    return responses({200: {"description": "OpenAI's object", "content": content}}, openai=True, read_only=read_only)


def _not_found(kind: str, identifier: str) -> ApiError:
    return ApiError(404, f"{kind} with id '{identifier}' not found.", code="not_found")


def _conversation(session, conversation_id: str, key_id: int | None) -> dict:
    """The conversation of this key, or the 404 for an unknown (or another key's) one."""
    found = conversation_object(session, conversation_id, key_id)
    if found is None:
        raise _not_found("Conversation", conversation_id)
    return found


@bp.post("/responses", responses=_documented(streams=True))
@limiter.limit(completion_limit)
def create(body: ResponseRequest):
    """Create a model response (OpenAI's `responses.create`), plain or streamed."""
    answer = create_response(current_app.extensions["chat"], body, current_client_key(), exchange_report())
    return jsonify(answer.body) if answer.events is None else event_stream(answer.events)


@bp.get("/responses/<response_id>", responses=_documented(read_only=True))
def retrieve(path: ResponsePath):
    """A stored response, as it was answered."""
    with unit_of_work(write=False) as session:
        row = stored_response(session, path.response_id, current_client_key_id())
    if row is None or row.body is None:
        raise _not_found("Response", path.response_id)
    return jsonify(row.body)


@bp.delete("/responses/<response_id>", responses=_documented(read_only=True))
def delete(path: ResponsePath):
    """Erase a stored response and its input and output, for good."""
    with unit_of_work() as session:
        deleted = delete_response(session, path.response_id, current_client_key_id())
    if not deleted:
        raise _not_found("Response", path.response_id)
    return jsonify({"id": path.response_id, "object": "response", "deleted": True})


def _item_page(items: list[dict], query: ItemListQuery) -> dict:
    """One page of items in OpenAI's list shape."""
    ordered = items if query.order == "asc" else list(reversed(items))
    if query.after is not None:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(query.after) + 1 :] if query.after in ids else []
    page = ordered[: query.limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > query.limit,
    }


@bp.get("/responses/<response_id>/input_items", responses=_documented(read_only=True))
def list_input_items(path: ResponsePath, query: ItemListQuery):
    """The input items a stored response was given."""
    with unit_of_work(write=False) as session:
        row = stored_response(session, path.response_id, current_client_key_id())
        items = response_input_items(session, row) if row is not None else None
    if items is None:
        raise _not_found("Response", path.response_id)
    return jsonify(_item_page(items, query))


def _chat_messages(items: list) -> list[dict]:
    """Validated Conversations-API items as the chat messages they are stored as."""
    return items_to_chat_messages(input_items(SimpleNamespace(input=items)))


@bp.post("/conversations", responses=_documented())
def create_conversation(body: ConversationCreate):
    """A new conversation, with its first items and metadata."""
    conversation_id, key_id = new_id("conv"), current_client_key_id()
    with unit_of_work() as session:
        save_conversation(session, conversation_id, key_id, dict(body.metadata or {}))
        if body.items:
            add_items(session, conversation_id, key_id, _chat_messages(body.items))
        created = conversation_object(session, conversation_id, key_id)
    return jsonify(created)


@bp.get("/conversations/<conversation_id>", responses=_documented(read_only=True))
def get_conversation(path: ConversationPath):
    """A conversation: its id, when it began, its metadata."""
    with unit_of_work(write=False) as session:
        found = _conversation(session, path.conversation_id, current_client_key_id())
    return jsonify(found)


@bp.post("/conversations/<conversation_id>", responses=_documented())
def update_conversation(path: ConversationPath, body: ConversationUpdate):
    """Replace a conversation's metadata."""
    key_id = current_client_key_id()
    with unit_of_work() as session:
        _conversation(session, path.conversation_id, key_id)
        save_conversation(session, path.conversation_id, key_id, dict(body.metadata))
        updated = conversation_object(session, path.conversation_id, key_id)
    return jsonify(updated)


@bp.delete("/conversations/<conversation_id>", responses=_documented(read_only=True))
def erase_conversation(path: ConversationPath):
    """Erase a conversation, its items and the responses made in it, for good."""
    key_id = current_client_key_id()
    with unit_of_work() as session:
        _conversation(session, path.conversation_id, key_id)
        delete_conversation(session, path.conversation_id, key_id)
    return jsonify({"id": path.conversation_id, "object": "conversation.deleted", "deleted": True})


@bp.get("/conversations/<conversation_id>/items", responses=_documented(read_only=True))
def list_items(path: ConversationPath, query: ItemListQuery):
    """A conversation's items, newest first unless `order=asc`."""
    key_id = current_client_key_id()
    with unit_of_work(write=False) as session:
        _conversation(session, path.conversation_id, key_id)
        items = conversation_items(session, path.conversation_id, key_id)
    return jsonify(_item_page(items, query))


@bp.post("/conversations/<conversation_id>/items", responses=_documented())
def append_items(path: ConversationPath, body: ItemsAdd):
    """Append up to 20 items to a conversation."""
    key_id = current_client_key_id()
    with unit_of_work() as session:
        _conversation(session, path.conversation_id, key_id)
        added = add_items(session, path.conversation_id, key_id, _chat_messages(body.items))
    return jsonify(_item_page(added, ItemListQuery(limit=100, order="asc")))


@bp.get("/conversations/<conversation_id>/items/<item_id>", responses=_documented(read_only=True))
def get_item(path: ItemPath):
    """One item of a conversation."""
    with unit_of_work(write=False) as session:
        item = find_item(session, path.conversation_id, current_client_key_id(), path.item_id)
    if item is None:
        raise _not_found("Item", path.item_id)
    return jsonify(item)


@bp.delete("/conversations/<conversation_id>/items/<item_id>", responses=_documented(read_only=True))
def remove_item(path: ItemPath):
    """Erase one item of a conversation for good; answers the conversation."""
    key_id = current_client_key_id()
    with unit_of_work() as session:
        if not delete_item(session, path.conversation_id, key_id, path.item_id):
            raise _not_found("Item", path.item_id)
        conversation = conversation_object(session, path.conversation_id, key_id)
    return jsonify(conversation)
