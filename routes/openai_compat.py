"""OpenAI-compatible API: clients of the official SDKs change only `base_url`.

POST /v1/chat/completions answers in OpenAI's shape (errors included). Memory is opt-in:
with an `X-Conversation-Id` header (or a `user_id` body field) the stored conversation is
added as /openai-completion does; without, the call is stateless. Every call is recorded
either way, and the conversation id is returned in the `X-Conversation-Id` header.
`"stream": true` answers Server-Sent Events in OpenAI's chunk format.
"""

from __future__ import annotations

from flask import current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag

from auth import current_client_key
from errors import ApiError
from extensions import completion_limit, limiter
from routes.api_docs import KEY_REQUIRED, responses
from routes.chat_response import openai_events, respond
from schemas import ChatCompletionResponse, ConversationHeader, ModelInfo, ModelList, ModelPath, OpenAIChatRequest
from services.chat import ChatTurn

bp = APIBlueprint(
    "openai_compat", __name__, url_prefix="/v1", abp_tags=[Tag(name="openai-compatible")], abp_security=KEY_REQUIRED
)

_LEADING_ROLES = {"system", "developer"}
# Fields this route handles itself; every other one is passed to the upstream as sent.
_OWN_FIELDS = {"model", "messages", "stream", "stream_options", "user_id"}


def _served_models() -> list[dict]:
    models = current_app.config.get("ALLOWED_MODELS") or [current_app.extensions["llm"].default_model]
    return [{"id": model, "object": "model", "created": 0, "owned_by": "gateway"} for model in models]


@bp.get("/models", responses=responses({200: ModelList}, openai=True, read_only=True))
def list_models():
    """The models this service serves."""
    return jsonify({"object": "list", "data": _served_models()})


@bp.get("/models/<path:model>", responses=responses({200: ModelInfo}, openai=True, read_only=True))
def retrieve_model(path: ModelPath):
    """One model this service serves (`client.models.retrieve`); 404 for any other."""
    for model in _served_models():
        if model["id"] == path.model:
            return jsonify(model)
    raise ApiError(404, f"The model '{path.model}' does not exist", code="model_not_found")


@bp.post("/chat/completions", responses=responses({200: ChatCompletionResponse}, openai=True))
@limiter.limit(completion_limit)
def chat_completions(body: OpenAIChatRequest, header: ConversationHeader):
    """OpenAI's chat completion, recorded, with the conversation's history when asked for."""
    messages = [m.model_dump(mode="json", exclude_none=True) for m in body.messages]
    passed_through = body.model_dump(mode="json", exclude_unset=True, exclude=_OWN_FIELDS)
    turn = ChatTurn(
        conversation_id=header.conversation_id if header.conversation_id is not None else body.user_id,
        leading=[m for m in messages if m["role"] in _LEADING_ROLES],
        messages=[m for m in messages if m["role"] not in _LEADING_ROLES],
        model=body.model,
        options={"extra_body": passed_through} if passed_through else {},
        stream=body.stream,
        client_key=current_client_key(),
    )
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return respond(
        turn,
        lambda answer: answer.completion.as_chat_completion(),
        lambda answer: openai_events(answer, include_usage),
        conversation_header=True,
    )
