"""OpenAI-compatible API: clients of the official SDKs change only `base_url`.

POST /v1/chat/completions answers in OpenAI's shape (errors included). Memory is opt-in:
with an `X-Conversation-Id` header (or a `user_id` body field) the stored conversation is
added as /openai-completion does; without, the call is stateless. Every call is recorded
either way, and the conversation id is returned in the `X-Conversation-Id` header.
`"stream": true` answers Server-Sent Events in OpenAI's chunk format.
"""

from __future__ import annotations

import re

from flask import current_app, jsonify, request
from flask_openapi3 import APIBlueprint, Tag

from errors import ApiError
from extensions import completion_limit, limiter
from routes.api_docs import KEY_REQUIRED, delay_validation, responses
from routes.request_body import check_model_allowed, validated_body
from routes.streaming import openai_events, sse_response
from schemas import USER_ID_PATTERN, ChatCompletionResponse, ConversationHeader, ModelList, OpenAIChatRequest
from services.chat import complete_exchange, start_streamed_exchange
from services.conversation import new_user_id
from telemetry import note_conversation

bp = APIBlueprint(
    "openai_compat", __name__, url_prefix="/v1", abp_tags=[Tag(name="openai-compatible")], abp_security=KEY_REQUIRED
)

CONVERSATION_HEADER = "X-Conversation-Id"
_LEADING_ROLES = {"system", "developer"}
# Fields this route handles itself; every other one is passed to the upstream as sent.
_OWN_FIELDS = {"model", "messages", "stream", "stream_options", "user_id"}


@bp.get("/models", responses=responses({200: ModelList}, openai=True, read_only=True))
def list_models():
    """The models this service serves."""
    models = current_app.config.get("ALLOWED_MODELS") or [current_app.extensions["llm"].default_model]
    data = [{"id": model, "object": "model", "created": 0, "owned_by": "gateway"} for model in models]
    return jsonify({"object": "list", "data": data})


def _conversation_id(body: OpenAIChatRequest) -> str | None:
    header = request.headers.get(CONVERSATION_HEADER)
    offered = header if header is not None else body.user_id
    if offered is not None and not re.match(USER_ID_PATTERN, offered):
        raise ApiError(
            400,
            f"{CONVERSATION_HEADER} must be 1 to 128 letters, digits or ._:-",
            details=[{"field": "user_id", "message": "invalid conversation id"}],
        )
    return offered


@bp.post("/chat/completions", responses=responses({200: ChatCompletionResponse}, openai=True))
@limiter.limit(completion_limit)
@delay_validation
def chat_completions(body: OpenAIChatRequest = None, header: ConversationHeader = None):
    """OpenAI's chat completion, recorded, with the conversation's history when asked for."""
    body, data = validated_body(OpenAIChatRequest, "Invalid request", name_fields=True)
    check_model_allowed(body.model)

    conversation = _conversation_id(body)
    user_id = conversation or new_user_id()
    messages = [m.model_dump(mode="json", exclude_none=True) for m in body.messages]
    leading = [m for m in messages if m["role"] in _LEADING_ROLES]
    new_messages = [m for m in messages if m["role"] not in _LEADING_ROLES]
    if not new_messages:
        raise ApiError(
            400,
            "Invalid request: messages must include at least one user, assistant or tool message",
            details=[{"field": "messages", "message": "no user, assistant or tool message"}],
        )
    passed_through = {k: v for k, v in data.items() if k not in _OWN_FIELDS}
    note_conversation(user_id)

    call = {"model": body.model, "new_conversation": conversation is None, "extra_body": passed_through or None}
    if body.stream:
        streamed = start_streamed_exchange(user_id, leading, new_messages, **call)
        return sse_response(openai_events(streamed), {CONVERSATION_HEADER: user_id})
    result = complete_exchange(user_id, leading, new_messages, **call)
    response = jsonify(result.completion.as_chat_completion())
    response.headers[CONVERSATION_HEADER] = user_id
    return response
