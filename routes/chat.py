"""The chat routes, each a thin adapter: its input turned into one ChatTurn, the pipeline's
answer (services/chat.py) turned back into its own shape, plain JSON or Server-Sent Events.

POST /openai-completion and POST /process-payload: chat with server-side memory; the
conversation id is `user_id` on the wire. They stream a simple format:

    event: delta
    data: {"text": "Hel"}

    event: done
    data: {"user_id": "...", "model": "...", "usage": {...}}

or, when the upstream breaks off, `event: error` with `{"error": "..."}` as the last event.

The OpenAI-compatible API under /v1 (clients of the official SDKs change only `base_url`):
POST /v1/chat/completions answers in OpenAI's shape (errors included). Memory is opt-in:
with an `X-Conversation-Id` header (or a `user_id` body field) the stored conversation is
added as /openai-completion does; without, the call is stateless. Every call is recorded
either way, and the conversation id is returned in the `X-Conversation-Id` header.
`"stream": true` streams OpenAI's own: `data: <chat.completion.chunk>` lines and
`data: [DONE]`. GET /v1/models names the models served. A streamed reply is recorded when
its stream ends, however it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app, jsonify, stream_with_context
from flask_openapi3 import APIBlueprint, Tag

from auth import current_client_key
from errors import ApiError
from extensions import limiter
from ratelimit import completion_limit
from routes.openapi import KEY_REQUIRED, responses
from routes.sse import sse_event
from schemas import (
    CONVERSATION_HEADER,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ConversationHeader,
    ModelInfo,
    ModelList,
    ModelPath,
    OpenAIChatRequest,
    ProcessPayloadRequest,
    ProcessPayloadResponse,
)
from services.chat import ChatAnswer, ChatTurn
from services.llm import UpstreamError
from telemetry import exchange_report

# The seed's chat routes, and the OpenAI-compatible API under /v1 (models, chat completions).
# The name strings ("completions", "openai_compat") make the operationIds: they stay.
completions_bp = APIBlueprint("completions", __name__, abp_tags=[Tag(name="chat")], abp_security=KEY_REQUIRED)
openai_compat_bp = APIBlueprint(
    "openai_compat", __name__, url_prefix="/v1", abp_tags=[Tag(name="openai-compatible")], abp_security=KEY_REQUIRED
)

_LEADING_ROLES = {"system", "developer"}
# Fields this route handles itself; every other one is passed to the upstream as sent.
_OWN_FIELDS = {"model", "messages", "stream", "stream_options", "user_id"}


# Answering a turn ----------------------------------------------------------------------------


def respond(
    turn: ChatTurn,
    shape: Callable[[ChatAnswer], dict[str, Any]],
    events: Callable[[ChatAnswer], Iterator[str]],
    *,
    conversation_header: bool = False,
) -> Response:
    """Answer `turn`: `shape` makes a plain answer's JSON, `events` a streamed one's SSE.

    With `conversation_header`, the conversation id is returned in X-Conversation-Id.
    """
    answer = current_app.extensions["chat"].answer(turn, exchange_report())
    if turn.stream:
        response = Response(stream_with_context(events(answer)), mimetype="text/event-stream")
    else:
        response = jsonify(shape(answer))
    if conversation_header:
        response.headers[CONVERSATION_HEADER] = answer.conversation_id
    return response


def simple_events(answer: ChatAnswer) -> Iterator[str]:
    """The documented simple event stream: deltas, then done (or error)."""
    for item in answer.chunks:
        if isinstance(item, UpstreamError):
            yield sse_event("error", {"error": item.message})
            return
        for choice in item.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield sse_event("delta", {"text": text})
    completion = answer.sofar()
    yield sse_event("done", {"user_id": answer.conversation_id, "model": completion.model, "usage": completion.usage()})


def openai_events(answer: ChatAnswer, include_usage: bool = False) -> Iterator[str]:
    """OpenAI's chunk stream, ending with [DONE] (or an error object).

    Usage is always asked of the upstream (it is recorded), but, as OpenAI does, the
    client gets the final usage chunk (`choices: []`) and the `usage` field only when its
    `stream_options.include_usage` asked for them: the SDK's own streaming loop reads
    `chunk.choices[0]` and would fail on a chunk it did not ask for.
    """
    for item in answer.chunks:
        if isinstance(item, UpstreamError):
            error = {"message": item.message, "type": "api_error", "param": None, "code": None}
            yield sse_event(None, {"error": error})
            return
        if not include_usage:
            if not item.get("choices") and "usage" in item:
                continue
            item = {name: value for name, value in item.items() if name != "usage"}
        yield sse_event(None, item)
    yield sse_event(None, "[DONE]")


# /openai-completion and /process-payload -------------------------------------------------


def _reply(answer: ChatAnswer, text_field: str) -> dict:
    completion = answer.completion
    return {
        "user_id": answer.conversation_id,
        text_field: completion.text,
        "model": completion.model,
        "usage": completion.usage(),
    }


@completions_bp.post("/openai-completion", strict_slashes=False, responses=responses({200: CompletionResponse}))
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


@completions_bp.post("/process-payload/", strict_slashes=False, responses=responses({200: ProcessPayloadResponse}))
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


# /v1 --------------------------------------------------------------------------------------


def _served_models() -> list[dict]:
    """The routing file's groups and aliases (those ALLOWED_MODELS allows), or, when any
    name is served, ALLOWED_MODELS or the default model."""
    llm, allowed = current_app.extensions["llm"], current_app.config.get("ALLOWED_MODELS")
    names = llm.model_names()
    if names is None:
        models = allowed or [llm.default_model]
    else:
        models = [name for name in names if not allowed or name in allowed]
    return [{"id": model, "object": "model", "created": 0, "owned_by": "gateway"} for model in models]


@openai_compat_bp.get("/models", responses=responses({200: ModelList}, openai=True, read_only=True))
def list_models():
    """The models this service serves."""
    return jsonify({"object": "list", "data": _served_models()})


@openai_compat_bp.get("/models/<path:model>", responses=responses({200: ModelInfo}, openai=True, read_only=True))
def retrieve_model(path: ModelPath):
    """One model this service serves (`client.models.retrieve`); 404 for any other."""
    for model in _served_models():
        if model["id"] == path.model:
            return jsonify(model)
    raise ApiError(404, f"The model '{path.model}' does not exist", code="model_not_found")


@openai_compat_bp.post("/chat/completions", responses=responses({200: ChatCompletionResponse}, openai=True))
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
