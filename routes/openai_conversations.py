"""OpenAI's Conversations API under /v1/conversations: a conversation's metadata and items.

These are the conversations routes/conversations.py lists and erases, seen as OpenAI shows
them: a conversation continued with /openai-completion can be continued with
`responses.create(conversation=...)` and read as items, and the other way round. Each route
parses its request (schemas), calls one function of services/responses/conversations_api.py, and
shapes the answer; another key's conversations get the same 404 as an unknown id.
"""

from __future__ import annotations

from flask import current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.utils import get_operation_id_for_path

from auth import current_client_key_id
from routes.openapi import KEY_REQUIRED, openai_object
from schemas import ConversationCreate, ConversationPath, ConversationUpdate, ItemListQuery, ItemPath, ItemsAdd
from services.conversations import ConversationLimits
from services.responses import conversations_api
from services.responses.compaction import app_sealer

# The Conversations API's operationIds, as they were when these routes shared the Responses
# API's blueprint: kept, so that clients generated from the document keep working.
_FORMER_NAMES = {"retrieve_conversation": "get_conversation", "remove_conversation": "erase_conversation"}


def _former_operation_id(*, name: str, path: str, method: str) -> str:
    return get_operation_id_for_path(
        bp_name="responses_api", name=_FORMER_NAMES.get(name, name), path=path, method=method
    )


openai_conversations_bp = APIBlueprint(
    "conversations_api",
    __name__,
    url_prefix="/v1",
    abp_tags=[Tag(name="responses")],
    abp_security=KEY_REQUIRED,
    operation_id_callback=_former_operation_id,
)


@openai_conversations_bp.post("/conversations", responses=openai_object())
def create_conversation(body: ConversationCreate):
    """A new conversation, with its first items and metadata."""
    limits = ConversationLimits.from_config(current_app.config)
    created = conversations_api.create_conversation(
        current_client_key_id(), body.items, dict(body.metadata or {}), limits
    )
    return jsonify(created)


@openai_conversations_bp.get("/conversations/<conversation_id>", responses=openai_object(read_only=True))
def retrieve_conversation(path: ConversationPath):
    """A conversation: its id, when it began, its metadata."""
    return jsonify(conversations_api.retrieve_conversation(path.conversation_id, current_client_key_id()))


@openai_conversations_bp.post("/conversations/<conversation_id>", responses=openai_object())
def update_conversation(path: ConversationPath, body: ConversationUpdate):
    """Replace a conversation's metadata."""
    updated = conversations_api.update_conversation(path.conversation_id, current_client_key_id(), dict(body.metadata))
    return jsonify(updated)


@openai_conversations_bp.delete("/conversations/<conversation_id>", responses=openai_object(read_only=True))
def remove_conversation(path: ConversationPath):
    """Erase a conversation, its items and the responses made in it, for good."""
    return jsonify(conversations_api.erase_conversation(path.conversation_id, current_client_key_id()))


@openai_conversations_bp.get("/conversations/<conversation_id>/items", responses=openai_object(read_only=True))
def list_items(path: ConversationPath, query: ItemListQuery):
    """A conversation's items, newest first unless `order=asc`."""
    page_bytes = current_app.config["PAGE_MAX_BYTES"]
    return jsonify(
        conversations_api.conversation_item_page(
            path.conversation_id, current_client_key_id(), query, page_bytes, app_sealer(current_app)
        )
    )


@openai_conversations_bp.post("/conversations/<conversation_id>/items", responses=openai_object())
def append_items(path: ConversationPath, body: ItemsAdd):
    """Append up to 20 items to a conversation."""
    limits = ConversationLimits.from_config(current_app.config)
    return jsonify(conversations_api.append_items(path.conversation_id, current_client_key_id(), body.items, limits))


@openai_conversations_bp.get(
    "/conversations/<conversation_id>/items/<item_id>", responses=openai_object(read_only=True)
)
def get_item(path: ItemPath):
    """One item of a conversation."""
    item = conversations_api.conversation_item(
        path.conversation_id, current_client_key_id(), path.item_id, app_sealer(current_app)
    )
    return jsonify(item)


@openai_conversations_bp.delete(
    "/conversations/<conversation_id>/items/<item_id>", responses=openai_object(read_only=True)
)
def remove_item(path: ItemPath):
    """Erase one item of a conversation for good; answers the conversation."""
    return jsonify(conversations_api.erase_item(path.conversation_id, current_client_key_id(), path.item_id))
