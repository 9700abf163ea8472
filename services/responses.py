"""OpenAI's Responses API over any chat-completions upstream, with the state kept here.

One response is one exchange of the chat pipeline: its input items become the turn's
messages, the `instructions` its leading system message, and the history is either the
chain behind `previous_response_id` (every earlier input and output, oldest first; the
earlier responses' instructions are not carried over) or the `conversation`'s stored
messages. The response row is written before the answer leaves, so a follow-up sent the
moment it arrives finds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from database import unit_of_work
from schemas.responses import ResponseRequest
from services.chat import ChatAnswer, ChatPipeline, ChatTurn, ExchangeReport, ResponseRecord
from services.client_keys import ClientKey
from services.llm import UpstreamError
from services.responses_format import (
    ResponseStreamTranslator,
    chat_params,
    input_items,
    instructions_message,
    items_to_chat_messages,
    new_id,
    response_from_completion,
    sse,
)
from services.responses_store import (
    conversation_exchanges,
    conversation_object,
    response_chain,
)

log = logging.getLogger(__name__)


class StateNotFound(Exception):
    """The previous response or the conversation named is not this key's to continue (400)."""

    def __init__(self, param: str, message: str, code: str) -> None:
        super().__init__(message)
        self.param, self.message, self.code = param, message, code


@dataclass(frozen=True)
class _State:
    """Where a new response's rows go and what history it is sent."""

    user_id: str
    history_exchanges: tuple[str, ...] | None


def _state(request: ResponseRequest, client_key_id: int | None, response_id: str) -> _State:
    """The conversation and history of a new response; StateNotFound for an unknown one."""
    with unit_of_work(write=False) as session:
        if request.previous_response_id is not None:
            chain = response_chain(session, request.previous_response_id, client_key_id)
            if chain is None:
                raise StateNotFound(
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
            raise StateNotFound("conversation", f"Conversation with id '{conversation}' not found.", "not_found")
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
    """Answer POST /v1/responses. Raises StateNotFound, and whatever the pipeline raises
    before its first byte (TurnRejected, BudgetSpent, UpstreamError)."""
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
    response.completed (or response.failed) is sent."""
    for event in translator.start():
        yield sse(event)
    for item in answer.chunks:
        if isinstance(item, UpstreamError):
            events = translator.fail(item.message)
            _record(pipeline, request, key_id, answer, events[-1]["response"])
            yield from (sse(event) for event in events)
            return
        for event in translator.feed(item):
            yield sse(event)
    events = translator.finish()  # the pipeline has recorded the reply by now
    _record(pipeline, request, key_id, answer, events[-1]["response"])
    yield from (sse(event) for event in events)
