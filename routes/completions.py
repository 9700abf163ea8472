"""POST /openai-completion and POST /process-payload: chat with server-side memory."""

from __future__ import annotations

from flask_openapi3 import APIBlueprint, Tag

from auth import current_client_key
from extensions import completion_limit, limiter
from routes.api_docs import KEY_REQUIRED, responses
from routes.chat_response import respond, simple_events
from schemas import CompletionRequest, CompletionResponse, ProcessPayloadRequest, ProcessPayloadResponse
from services.chat import ChatAnswer, ChatTurn

bp = APIBlueprint("completions", __name__, abp_tags=[Tag(name="chat")], abp_security=KEY_REQUIRED)


def _reply(answer: ChatAnswer, text_field: str) -> dict:
    completion = answer.completion
    return {
        "user_id": answer.conversation_id,
        text_field: completion.text,
        "model": completion.model,
        "usage": completion.usage(),
    }


@bp.post("/openai-completion", strict_slashes=False, responses=responses({200: CompletionResponse}))
@limiter.limit(completion_limit)
def openai_completion(body: CompletionRequest):
    """Continue the caller's conversation with one prompt."""
    turn = ChatTurn(
        conversation_id=body.user_id,
        messages=[{"role": "user", "content": body.prompt}],
        stream=body.stream,
        client_key=current_client_key(),
    )
    return respond(turn, lambda answer: _reply(answer, "completion"), simple_events)


@bp.post("/process-payload/", strict_slashes=False, responses=responses({200: ProcessPayloadResponse}))
@limiter.limit(completion_limit)
def process_payload(body: ProcessPayloadRequest):
    """Answer an OpenAI-style message list, adding the stored history of `user_id`."""
    messages = [m.as_openai() for m in body.messages]
    options = {"temperature": body.temperature, "top_p": body.top_p, "max_tokens": body.max_tokens}
    turn = ChatTurn(
        conversation_id=body.user_id,
        # The payload's own system messages lead; without them, the configured one does.
        leading=[m for m in messages if m["role"] == "system"] or None,
        messages=[m for m in messages if m["role"] != "system"],
        model=body.model,
        options={name: value for name, value in options.items() if value is not None},
        stream=body.stream,
        client_key=current_client_key(),
    )
    return respond(turn, lambda answer: _reply(answer, "content"), simple_events)
