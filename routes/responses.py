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

from auth import current_client_key, current_client_key_id
from extensions import limiter
from ratelimit import completion_limit
from routes.openapi import KEY_REQUIRED, openai_object
from routes.sse import typed_event
from schemas import ItemListQuery, ResponsePath, ResponseRequest
from services.responses import service
from telemetry import exchange_report

responses_bp = APIBlueprint(
    "responses_api", __name__, url_prefix="/v1", abp_tags=[Tag(name="responses")], abp_security=KEY_REQUIRED
)


@responses_bp.post("/responses", responses=openai_object(streams=True))
@limiter.limit(completion_limit)
def create(body: ResponseRequest):
    """Create a model response (OpenAI's `responses.create`), plain or streamed."""
    answer = service.create_response(current_app.extensions["chat"], body, current_client_key(), exchange_report())
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


@responses_bp.get("/responses/<response_id>", responses=openai_object(read_only=True))
def retrieve(path: ResponsePath):
    """A stored response, as it was answered."""
    return jsonify(service.retrieve_response(path.response_id, current_client_key_id()))


@responses_bp.delete("/responses/<response_id>", responses=openai_object(read_only=True))
def delete(path: ResponsePath):
    """Erase a stored response and its input and output, for good."""
    return jsonify(service.erase_response(path.response_id, current_client_key_id()))


@responses_bp.get("/responses/<response_id>/input_items", responses=openai_object(read_only=True))
def list_input_items(path: ResponsePath, query: ItemListQuery):
    """The input items a stored response was given."""
    page_bytes = current_app.config["PAGE_MAX_BYTES"]
    return jsonify(service.input_item_page(path.response_id, current_client_key_id(), query, page_bytes))
