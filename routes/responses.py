"""OpenAI's Responses API (/v1/responses) over any chat-completions upstream, with the state
kept in this service's store: a thin route like every chat route's.

One response is one exchange of the chat pipeline: its input items become the turn's
messages, the `instructions` its leading system message, and the history is either the
chain behind `previous_response_id` (every earlier input and output, oldest first; the
earlier responses' instructions are not carried over) or the `conversation`'s stored
messages. The response row is written before the answer leaves, so a follow-up sent the
moment it arrives finds it.

Everything belongs to the client key that made it; another key gets the same 404 as for an
unknown id. The translation lives in services/responses/: the route validates a
`ResponseRequest` (schemas), `input_items` turns its input into items,
`items_to_chat_messages` rebuilds the chat messages, `chat_params` the upstream call's
options, and the answer is `response_from_completion` or, streamed, the events of a
`ResponseStreamTranslator`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, jsonify, stream_with_context
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy.exc import SQLAlchemyError

from auth import current_client_key, current_client_key_id
from database import unit_of_work
from errors import ApiError
from extensions import completion_limit, limiter
from routes.api_docs import KEY_REQUIRED, responses
from schemas import ItemListQuery, ResponsePath, ResponseRequest
from services.chat import ChatAnswer, ChatPipeline, ChatTurn, ResponseRecord
from services.client_keys import ClientKey
from services.llm import UpstreamError
from services.responses.items import input_items, items_to_chat_messages, new_id
from services.responses.objects import chat_params, instructions_message, item_list, response_from_completion
from services.responses.store import (
    conversation_exchanges,
    conversation_object,
    delete_response,
    response_chain,
    response_input_items,
    stored_response,
)
from services.responses.stream import ResponseStreamTranslator, sse
from telemetry import ExchangeReport, exchange_report

# -- the flow: state, the pipeline, the response's row -----------------------------------------


log = logging.getLogger(__name__)


def _state_not_found(param: str, message: str, code: str) -> ApiError:
    """OpenAI's 400 for a previous response or conversation that is not this key's to continue."""
    return ApiError(400, message, details=[{"field": param, "message": "not found"}], code=code)


@dataclass(frozen=True)
class _State:
    """Where a new response's rows go and what history it is sent."""

    user_id: str
    history_exchanges: tuple[str, ...] | None


def _state(request: ResponseRequest, client_key_id: int | None, response_id: str) -> _State:
    """The conversation and history of a new response; a 400 for an unknown one."""
    with unit_of_work(write=False) as session:
        if request.previous_response_id is not None:
            chain = response_chain(session, request.previous_response_id, client_key_id)
            if chain is None:
                raise _state_not_found(
                    "previous_response_id",
                    f"Previous response with id '{request.previous_response_id}' not found.",
                    "previous_response_not_found",
                )
            user_id, exchanges = chain
            return _State(user_id if request.store else response_id, exchanges)
        conversation = request.conversation_id
        if conversation is None:
            return _State(response_id, ())
        if conversation_object(session, conversation, client_key_id) is None:
            raise _state_not_found("conversation", f"Conversation with id '{conversation}' not found.", "not_found")
        if request.store:
            return _State(conversation, None)
        # store: false keeps nothing of what was said: its rows join no conversation, but
        # the conversation's items still go first.
        return _State(response_id, conversation_exchanges(session, conversation, client_key_id))


def _turn(request: ResponseRequest, state: _State, client_key: ClientKey | None) -> ChatTurn:
    instructions = instructions_message(request.instructions)
    return ChatTurn(
        conversation_id=state.user_id,
        messages=items_to_chat_messages(input_items(request)),
        leading=[instructions] if instructions else [],
        model=request.model,
        options=chat_params(request),
        stream=request.stream,
        client_key=client_key,
        history_exchanges=state.history_exchanges,
        trim_history=request.truncation == "auto",
        store_content=request.store,
    )


@dataclass
class ResponseAnswer:
    """A response: the whole object (`body`), or its stream of SSE `events`."""

    response_id: str
    body: dict[str, Any] | None = None
    events: Iterator[str] | None = None


def create_response(
    pipeline: ChatPipeline, request: ResponseRequest, client_key: ClientKey | None, report: ExchangeReport
) -> ResponseAnswer:
    """Answer POST /v1/responses. Raises a 400 ApiError for unknown state, and whatever the
    pipeline raises before its first byte (TurnRejected, BudgetSpent, UpstreamError)."""
    response_id, created_at = new_id("resp"), int(time.time())
    key_id = client_key.id if client_key else None
    state = _state(request, key_id, response_id)
    answer = pipeline.answer(_turn(request, state, client_key), report)
    if request.stream:
        translator = ResponseStreamTranslator(request, response_id=response_id, created_at=created_at)
        return ResponseAnswer(response_id, events=_events(pipeline, answer, translator, request, key_id))
    body = response_from_completion(
        request, answer.completion.as_chat_completion(), response_id=response_id, created_at=created_at
    )
    _record(pipeline, request, key_id, answer, body)
    return ResponseAnswer(response_id, body=body)


def _record(
    pipeline: ChatPipeline, request: ResponseRequest, key_id: int | None, answer: ChatAnswer, body: dict
) -> None:
    """The response's own row, written before the answer leaves (read-after-write).

    The exchange itself is recorded by the pipeline; the row goes the same way (retried,
    else journaled behind the exchange's ending, and recorded once the database is back).
    Only if the journal cannot take it either is it lost: the client still gets the answer
    the upstream made, which then cannot be retrieved or continued by its id.
    """
    columns = {
        "id": body["id"],
        "api_key_id": key_id,
        "exchange_id": answer.exchange_id,
        "user_id": answer.conversation_id,
        "previous_response_id": request.previous_response_id,
        "store": request.store,
        "status": body["status"],
        "body": body if request.store else None,
    }
    # A stored response's conversation lists its output under the ids the response gave it.
    item_ids = [item["id"] for item in body["output"]] if request.store else None
    try:
        pipeline.recorder.record(ResponseRecord(columns, item_ids))
    except SQLAlchemyError as exc:
        log.error("response %s answered but not stored (%s): it cannot be continued", body["id"], type(exc).__name__)


def _events(
    pipeline: ChatPipeline,
    answer: ChatAnswer,
    translator: ResponseStreamTranslator,
    request: ResponseRequest,
    key_id: int | None,
) -> Iterator[str]:
    """The Responses API event stream of a streamed answer; the response is recorded before
    response.completed (or response.failed) is sent, or, when the client leaves mid-stream,
    as "cancelled" with what had arrived."""
    chunks = iter(answer.chunks)
    ending: list[dict[str, Any]] = []
    try:
        # response.created goes with the first chunk's events (feed starts the stream), so
        # the relay is under way before the first byte: a client gone at once is seen by it
        # too, and what the translator holds is all that was sent.
        for item in chunks:
            if isinstance(item, UpstreamError):
                ending = translator.fail(item.message)
                break
            for event in translator.feed(item):
                yield sse(event)
    except GeneratorExit:
        chunks.close()  # the pipeline's relay records the partial reply, DISCONNECTED
        _record(pipeline, request, key_id, answer, translator.cancel())
        raise
    ending = ending or translator.finish()  # the pipeline has recorded the reply by now
    _record(pipeline, request, key_id, answer, ending[-1]["response"])
    yield from (sse(event) for event in ending)


# -- the routes ---------------------------------------------------------------------------------

bp = APIBlueprint(
    "responses_api", __name__, url_prefix="/v1", abp_tags=[Tag(name="responses")], abp_security=KEY_REQUIRED
)

# The document's answer for OpenAI's objects, as the SDK's types define them.
_OBJECT = {"application/json": {"schema": {"type": "object"}}}
_STREAM = {"text/event-stream": {"schema": {}}}  # each event's data: one of OpenAI's stream events


def openai_object(read_only: bool = False, streams: bool = False) -> dict:
    """The documented answers of a route that answers one of OpenAI's objects (or its events)."""
    content = {**_OBJECT, **_STREAM} if streams else _OBJECT
    return responses({200: {"description": "OpenAI's object", "content": content}}, openai=True, read_only=read_only)


def not_found(kind: str, identifier: str) -> ApiError:
    """OpenAI's 404 for an unknown (or another key's) response, conversation or item."""
    return ApiError(404, f"{kind} with id '{identifier}' not found.", code="not_found")


def item_page(items: list[dict], query: ItemListQuery) -> dict:
    """The page `query` asks for of `items` (all of them, oldest first), in OpenAI's list shape."""
    ordered = items if query.order == "asc" else list(reversed(items))
    if query.after is not None:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(query.after) + 1 :] if query.after in ids else []
    return item_list(ordered[: query.limit], len(ordered) > query.limit)


@bp.post("/responses", responses=openai_object(streams=True))
@limiter.limit(completion_limit)
def create(body: ResponseRequest):
    """Create a model response (OpenAI's `responses.create`), plain or streamed."""
    answer = create_response(current_app.extensions["chat"], body, current_client_key(), exchange_report())
    if answer.events is None:
        return jsonify(answer.body)
    return Response(stream_with_context(answer.events), mimetype="text/event-stream")


@bp.get("/responses/<response_id>", responses=openai_object(read_only=True))
def retrieve(path: ResponsePath):
    """A stored response, as it was answered."""
    with unit_of_work(write=False) as session:
        row = stored_response(session, path.response_id, current_client_key_id())
    if row is None or row.body is None:
        raise not_found("Response", path.response_id)
    return jsonify(row.body)


@bp.delete("/responses/<response_id>", responses=openai_object(read_only=True))
def delete(path: ResponsePath):
    """Erase a stored response and its input and output, for good."""
    with unit_of_work() as session:
        deleted = delete_response(session, path.response_id, current_client_key_id())
    if not deleted:
        raise not_found("Response", path.response_id)
    return jsonify({"id": path.response_id, "object": "response", "deleted": True})


@bp.get("/responses/<response_id>/input_items", responses=openai_object(read_only=True))
def list_input_items(path: ResponsePath, query: ItemListQuery):
    """The input items a stored response was given."""
    with unit_of_work(write=False) as session:
        row = stored_response(session, path.response_id, current_client_key_id())
        items = response_input_items(session, row) if row is not None else None
    if items is None:
        raise not_found("Response", path.response_id)
    return jsonify(item_page(items, query))
