"""OpenAI's Responses API (/v1/responses) over any chat-completions upstream, with the state
kept in this service's store: thin routes like every chat route's. Each parses its request
(schemas), calls one function of services/responses/service.py, and shapes the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any

from flask import Response, current_app, jsonify, stream_with_context
from flask_openapi3 import APIBlueprint, Tag
from werkzeug.routing import BaseConverter

from auth import current_client_key, current_client_key_id
from errors import ApiError
from extensions import limiter
from ratelimit import completion_limit
from routes.openapi import KEY_REQUIRED, openai_object, responses
from routes.sse import typed_event
from schemas import (
    CompactRequest,
    InputTokensRequest,
    ItemListQuery,
    OpenAIErrorResponse,
    ResponsePath,
    ResponseRequest,
)
from services.responses import service
from services.responses.compact import compact_response
from services.responses.compaction import app_sealer
from telemetry import exchange_report


class ResponseIdConverter(BaseConverter):
    """A response id in a path (`<response_id:...>`, registered as "response_id"): any one
    segment but the names of the operations beside the responses (input_tokens, compact), so that
    an OPTIONS there lists only their own methods."""

    regex = r"(?!(?:input_tokens|compact)$)[^/]+"


responses_bp = APIBlueprint(
    "responses_api", __name__, url_prefix="/v1", abp_tags=[Tag(name="responses")], abp_security=KEY_REQUIRED
)


@responses_bp.post("/responses", responses=openai_object(streams=True))
@limiter.limit(completion_limit)
def create(body: ResponseRequest):
    """Create a model response (OpenAI's `responses.create`), plain or streamed."""
    answer = service.create_response(
        current_app.extensions["chat"], body, current_client_key(), exchange_report(), sealer=app_sealer(current_app)
    )
    if answer.events is None:
        return jsonify(answer.body)
    # Relayed from here: the server resumes this route's stream, which resumes the service's.
    return Response(stream_with_context(_relay(answer.events)), mimetype="text/event-stream")


def _relay(events: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The service's events as Server-Sent Events; a client that leaves closes the service's
    stream at once (so it records what was sent)."""
    with closing(events):
        for event in events:
            yield typed_event(event)


@responses_bp.get(
    "/responses",
    responses=responses({101: {"description": "The WebSocket is open"}, 426: OpenAIErrorResponse}, openai=True),
)
def open_websocket():
    """WebSocket mode: open a WebSocket here (`Upgrade: websocket`) and send `response.create`
    messages (the README's "WebSocket mode"). Without the upgrade the answer is 426."""
    message = "Open a WebSocket on /v1/responses (Upgrade: websocket) to send response.create messages"
    raise ApiError(426, message, headers={"Upgrade": "websocket"}, code="upgrade_required")


@responses_bp.post("/responses/input_tokens", responses=openai_object())
def count_input_tokens(body: InputTokensRequest):
    """Count a response's input tokens (OpenAI's `responses.input_tokens.count`): its input with
    the state a create would load (chain, conversation, instructions, tools), by the estimate
    budgets reserve. Nothing is stored or sent upstream."""
    pipeline, sealer = current_app.extensions["chat"], app_sealer(current_app)
    tokens = service.count_input_tokens(pipeline, body, current_client_key(), sealer)
    return jsonify({"object": "response.input_tokens", "input_tokens": tokens})


@responses_bp.post("/responses/compact", responses=openai_object())
@limiter.limit(completion_limit)
def compact(body: CompactRequest):
    """Compact a conversation (OpenAI's `responses.compact`): its user messages, then one
    `compaction` item standing for the rest, summarised by the model and sealed with the
    server's COMPACTION_KEY; send the output back as input to go on from it."""
    pipeline, sealer = current_app.extensions["chat"], app_sealer(current_app)
    return jsonify(compact_response(pipeline, sealer, body, current_client_key(), exchange_report()))


# The operation ids are those the plain `<response_id>` rules made (the converter would rename them).
@responses_bp.get(
    "/responses/<response_id:response_id>",
    responses=openai_object(read_only=True),
    operation_id="responses_api_retrieve_responses__response_id__get",
)
def retrieve(path: ResponsePath):
    """A stored response, as it was answered."""
    return jsonify(service.retrieve_response(path.response_id, current_client_key_id()))


@responses_bp.delete(
    "/responses/<response_id:response_id>",
    responses=openai_object(read_only=True),
    operation_id="responses_api_delete_responses__response_id__delete",
)
def delete(path: ResponsePath):
    """Erase a stored response and its input and output, for good."""
    return jsonify(service.erase_response(path.response_id, current_client_key_id()))


@responses_bp.get("/responses/<response_id>/input_items", responses=openai_object(read_only=True))
def list_input_items(path: ResponsePath, query: ItemListQuery):
    """The input items a stored response was given."""
    page_bytes = current_app.config["PAGE_MAX_BYTES"]
    return jsonify(service.input_item_page(path.response_id, current_client_key_id(), query, page_bytes))
