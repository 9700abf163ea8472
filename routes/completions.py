"""POST /openai-completion and POST /process-payload: chat with server-side memory."""

from __future__ import annotations

from flask import current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import ValidationError

from errors import ApiError
from extensions import completion_limit, limiter
from routes.api_docs import KEY_REQUIRED, delay_validation, responses
from routes.request_body import check_model_allowed, json_body, validated_body
from routes.streaming import simple_events, sse_response
from schemas import (
    CompletionRequest,
    CompletionResponse,
    ProcessPayloadRequest,
    ProcessPayloadResponse,
    Usage,
    error_details,
)
from services.chat import complete_exchange, configured_system_messages, start_streamed_exchange
from services.conversation import new_user_id
from services.tokens import text_of
from telemetry import note_conversation

bp = APIBlueprint("completions", __name__, abp_tags=[Tag(name="chat")], abp_security=KEY_REQUIRED)


def _check_length(characters: int) -> None:
    limit = current_app.config["MAX_PROMPT_CHARS"]
    if characters > limit:
        raise ApiError(400, f"Prompt is too long: {characters} characters, the limit is {limit}")


@bp.post("/openai-completion", strict_slashes=False, responses=responses({200: CompletionResponse}))
@limiter.limit(completion_limit)
@delay_validation
def openai_completion(body: CompletionRequest = None):
    """Continue the caller's conversation with one prompt."""
    data = json_body()
    try:
        body = CompletionRequest.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as exc:
        details = error_details(exc)
        if any(d["field"] in ("prompt", "body") for d in details):
            raise ApiError(400, "Prompt is required") from None
        raise ApiError(400, "Invalid request", details=details) from None
    _check_length(len(body.prompt))

    user_id = body.user_id or new_user_id()
    note_conversation(user_id, body.prompt)
    turn = [{"role": "user", "content": body.prompt}]
    if body.stream:
        streamed = start_streamed_exchange(
            user_id, configured_system_messages(), turn, new_conversation=body.user_id is None
        )
        return sse_response(simple_events(streamed, user_id))
    result = complete_exchange(user_id, configured_system_messages(), turn, new_conversation=body.user_id is None)
    completion = result.completion
    response = CompletionResponse(
        user_id=user_id,
        completion=completion.text,
        model=completion.model,
        usage=Usage(**completion.usage()),
    )
    return jsonify(response.model_dump())


@bp.post("/process-payload/", strict_slashes=False, responses=responses({200: ProcessPayloadResponse}))
@limiter.limit(completion_limit)
@delay_validation
def process_payload(body: ProcessPayloadRequest = None):
    """Answer an OpenAI-style message list, adding the stored history of `user_id`."""
    body, _ = validated_body(ProcessPayloadRequest, "Invalid payload")
    check_model_allowed(body.model)

    messages = [m.as_openai() for m in body.messages]
    _check_length(sum(len(text_of(m["content"])) for m in messages))
    # The payload's own system messages lead; the configured one is used only without them.
    leading = [m for m in messages if m["role"] == "system"] or configured_system_messages()
    new_messages = [m for m in messages if m["role"] != "system"]

    user_id = body.user_id or new_user_id()
    note_conversation(user_id, "\n".join(text_of(m["content"]) for m in new_messages))
    options = {"temperature": body.temperature, "top_p": body.top_p, "max_tokens": body.max_tokens}
    if body.stream:
        streamed = start_streamed_exchange(
            user_id, leading, new_messages, model=body.model, new_conversation=body.user_id is None, **options
        )
        return sse_response(simple_events(streamed, user_id))
    result = complete_exchange(
        user_id, leading, new_messages, new_conversation=body.user_id is None, model=body.model, **options
    )
    completion = result.completion
    response = ProcessPayloadResponse(
        content=completion.text,
        user_id=user_id,
        model=completion.model,
        usage=Usage(**completion.usage()),
    )
    return jsonify(response.model_dump())
