"""The Responses API's operations: what each of its routes does, with
its units of work, so the routes only parse and shape.

One response is one exchange of the chat pipeline: its input items become the turn's
messages, the `instructions` its leading system message, and the history is either the
chain behind `previous_response_id` (every earlier input and output, oldest first; the
earlier responses' instructions are not carried over) or the `conversation`'s stored
messages. The response row is written before the answer leaves, so a follow-up sent the
moment it arrives finds it.

Everything belongs to the client key that made it; another key gets the same 404 as for an
unknown id (or, to continue, the same 400).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from database import unit_of_work
from errors import ApiError
from schemas import ItemListQuery, ResponseRequest
from services.chat import ChatAnswer, ChatPipeline, ChatTurn
from services.client_keys import ClientKey
from services.llm import UpstreamError
from services.pages import PageFill
from services.recorder import ResponseRecord
from services.responses import compaction, store
from services.responses.items import (
    Item,
    input_items,
    items_to_chat_messages,
    new_id,
    open_calls,
    tool_pairing_error,
)
from services.responses.objects import (
    chat_params,
    instructions_message,
    item_list,
    response_from_completion,
)
from services.responses.references import resolve_references
from services.responses.stream import ResponseStreamTranslator

if TYPE_CHECKING:
    from telemetry import ExchangeReport

log = logging.getLogger(__name__)


def not_found(kind: str, identifier: str) -> ApiError:
    """OpenAI's 404 for an unknown (or another key's) response, conversation or item."""
    return ApiError(404, f"{kind} with id '{identifier}' not found.", code="not_found")


# -- POST /v1/responses: state, the pipeline, the response's row ----------------------------------


def _state_not_found(param: str, message: str, code: str) -> ApiError:
    """OpenAI's 400 for a previous response or conversation that is not this key's to continue."""
    return ApiError(400, message, details=[{"field": param, "message": "not found"}], code=code)


@dataclass(frozen=True)
class _State:
    """Where a new response's rows go, what history it is sent, and the function calls that
    history leaves for its input to answer."""

    user_id: str
    history_exchanges: tuple[str, ...] | None
    open_calls: list[Mapping[str, Any]]
    # History held in memory after history_exchanges (see HeldResponse), each a list of chat messages.
    held_exchanges: tuple[list[dict[str, Any]], ...] = ()


@dataclass(frozen=True)
class HeldResponse:
    """A response its caller keeps in memory to be continued from (a WebSocket connection keeps
    its last one, stored or not): what a response continuing it by its id is sent as history."""

    response_id: str
    user_id: str  # the conversation its rows are in
    stored_exchanges: tuple[str, ...]  # the stored chain its history begins with, oldest first
    held_exchanges: tuple[list[dict[str, Any]], ...]  # then these, each a list of chat messages, its own last
    open_calls: list[Mapping[str, Any]]  # the function calls it leaves for the next input to answer


def _state(
    request: ResponseRequest, client_key_id: int | None, response_id: str, held: HeldResponse | None = None
) -> _State:
    """The conversation and history of a new response (from `held` when it continues that
    one); a 400 for an unknown one."""
    if held is not None and request.previous_response_id == held.response_id:
        user_id = held.user_id if request.store else response_id
        return _State(user_id, held.stored_exchanges, held.open_calls, held.held_exchanges)
    with unit_of_work(write=False) as session:
        user_id, exchanges = _history(session, request, client_key_id, response_id)
        ends_with = store.history_end(session, client_key_id, exchanges, user_id)
    return _State(user_id, exchanges, open_calls(ends_with))


def _history(
    session: Session, request: ResponseRequest, client_key_id: int | None, response_id: str
) -> tuple[str, tuple[str, ...] | None]:
    """The conversation a new response's rows join, and its history as a chain of exchanges
    (None: the conversation's own, which the pipeline reads and trims)."""
    if request.previous_response_id is not None:
        chain = store.response_chain(session, request.previous_response_id, client_key_id)
        if chain is None:
            raise _state_not_found(
                "previous_response_id",
                f"Previous response with id '{request.previous_response_id}' not found.",
                "previous_response_not_found",
            )
        user_id, exchanges = chain
        return user_id if request.store else response_id, exchanges
    conversation = request.conversation_id
    if conversation is None:
        return response_id, ()
    if store.conversation_object(session, conversation, client_key_id) is None:
        raise _state_not_found("conversation", f"Conversation with id '{conversation}' not found.", "not_found")
    if request.store:
        return conversation, None
    # store: false keeps nothing of what was said: its rows join no conversation, but
    # the conversation's items still go first.
    return response_id, store.conversation_exchanges(session, conversation, client_key_id)


def _check_tool_pairing(state: _State, items: list[Item]) -> None:
    """OpenAI's 400 when the input's function calls and outputs do not pair up, with each other
    and with the calls the history leaves open; raised before anything is stored or sent."""
    made_here = {item["call_id"] for item in items if item["type"] == "function_call"}
    # A client that resends the calls it answers (its whole history) makes them in its input.
    left_open = [call for call in state.open_calls if call["call_id"] not in made_here]
    error = tool_pairing_error([*left_open, *items])
    if error is not None:
        raise ApiError(400, error, details=[{"field": "input", "message": "function calls and outputs must pair up"}])


def prepared(
    request: ResponseRequest,
    key_id: int | None,
    response_id: str,
    sealer: compaction.Sealer | None,
    held: HeldResponse | None = None,
) -> tuple[_State, list[Item]]:
    """A new response's state and input items: references resolved, compaction items opened (the
    newest stands for everything before it, the state's history too), calls and outputs paired."""
    state = _state(request, key_id, response_id, held)
    if request.input is None:  # the state alone (input_tokens, compact)
        return state, []
    expanded, items = compaction.expand(resolve_references(input_items(request), key_id), sealer, key_id)
    if expanded is not None:
        state = replace(state, history_exchanges=(), held_exchanges=(expanded,), open_calls=[])
    _check_tool_pairing(state, items)
    return state, items


def chat_turn(request: ResponseRequest, state: _State, items: list[Item], client_key: ClientKey | None) -> ChatTurn:
    """The pipeline's turn. History held in memory (a WebSocket's last response, or what a
    compaction stands for) is sent before the input; stored (store: true), it is recorded as
    the turn's own messages, so that a continuation of this response replays it."""
    instructions = instructions_message(request.instructions)
    held: tuple[list[dict[str, Any]], ...] = state.held_exchanges
    recorded = [message for exchange in held for message in exchange] if request.store else []
    return ChatTurn(
        conversation_id=state.user_id,
        messages=[*recorded, *items_to_chat_messages(items)],
        leading=[instructions] if instructions else [],
        model=request.model,
        options=chat_params(request),
        stream=request.stream,
        client_key=client_key,
        history_exchanges=state.history_exchanges,
        held_history=() if request.store else held,
        trim_history=request.truncation == "auto",
        store_content=request.store,
        max_tool_calls=request.max_tool_calls,
        replayed=len(recorded),
    )


@dataclass
class ResponseAnswer:
    """A response: the whole object (`body`), or its stream of `events` (the route writes them
    as SSE); and what it was made of: its `state`, input `items` and the pipeline's answer."""

    response_id: str
    body: dict[str, Any] | None = None
    events: Iterator[dict[str, Any]] | None = None
    state: _State | None = None
    items: list[Item] | None = None
    chat: ChatAnswer | None = None


def create_response(
    pipeline: ChatPipeline,
    request: ResponseRequest,
    client_key: ClientKey | None,
    report: ExchangeReport,
    held: HeldResponse | None = None,
    sealer: compaction.Sealer | None = None,
) -> ResponseAnswer:
    """Answer POST /v1/responses (continuing `held` from memory when it continues that one).
    Raises a 400 ApiError for unknown state or function calls and outputs that do not pair up,
    a 404 for an item reference to no item of this key, and whatever the pipeline raises before
    its first byte (TurnRejected, BudgetSpent, UpstreamError)."""
    response_id, created_at = new_id("resp"), int(time.time())
    # A request naming no model is answered by the default one, as the chat routes' are.
    model = request.model or getattr(pipeline.llm, "default_model", None)
    key_id = client_key.id if client_key else None
    state, items = prepared(request, key_id, response_id, sealer, held)
    turn = chat_turn(request, state, items, client_key)
    state, items, turn, compacted = _compacted(pipeline, sealer, request, report, state, items, turn)
    answer = pipeline.answer(turn, report)
    made = {"state": state, "items": items, "chat": answer}
    if request.stream:
        translator = ResponseStreamTranslator(request, response_id=response_id, created_at=created_at, model=model)
        events = _events(pipeline, answer, translator, request, key_id, compacted)
        return ResponseAnswer(response_id, events=events, **made)
    body = response_from_completion(
        request, answer.completion.as_chat_completion(), response_id=response_id, created_at=created_at, model=model
    )
    if compacted is not None:
        body["output"].insert(0, compacted)
    _record(pipeline, request, key_id, answer, body)
    return ResponseAnswer(response_id, body=body, **made)


def _compacted(
    pipeline: ChatPipeline,
    sealer: compaction.Sealer | None,
    request: ResponseRequest,
    report: ExchangeReport,
    state: _State,
    items: list[Item],
    turn: ChatTurn,
) -> tuple[_State, list[Item], ChatTurn, Item | None]:
    """The state, input and turn `context_management` leaves (compacted past its threshold,
    with the compaction item for the output), or those given with no item."""
    if compaction.threshold(request) is None:
        return state, items, turn, None
    if sealer is not None and not sealer.enabled:  # refused whatever the input's size
        sealer.require()
    made = compaction.over_threshold(pipeline, sealer, request, turn, items, report)
    if made is None:
        return state, items, turn, None
    state = replace(state, history_exchanges=(), held_exchanges=(made[0].compaction.messages(),), open_calls=[])
    return state, made[1], chat_turn(request, state, made[1], turn.client_key), made[0].item


def count_input_tokens(
    pipeline: ChatPipeline,
    request: ResponseRequest,
    client_key: ClientKey | None,
    sealer: compaction.Sealer | None = None,
) -> int:
    """POST /v1/responses/input_tokens: the estimated input tokens of the response `request`
    would make, with its state loaded as create_response loads it (and its 400s), by the
    estimate budgets reserve; nothing is stored or sent."""
    key_id = client_key.id if client_key else None
    state, items = prepared(request, key_id, new_id("resp"), sealer)
    return pipeline.prompt_tokens(chat_turn(request, state, items, client_key))


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
    reply = [item for item in body["output"] if item["type"] != "compaction"]  # a compaction is no row's
    item_ids = [item["id"] for item in reply] if request.store else None
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
    compacted: Item | None = None,
) -> Iterator[dict[str, Any]]:
    """The Responses API event stream of a streamed answer (its compaction item first); the
    response is recorded before response.completed (or response.failed) is sent, or, when the
    client leaves mid-stream, as "cancelled" with what had arrived."""
    relay = iter(answer.chunks)
    chunks: Iterator[Any] = relay
    ending: list[dict[str, Any]] = []
    try:
        # response.created goes with the first chunk's events (feed starts the stream), so
        # the relay is under way before the first byte: a client gone at once is seen by it
        # too (a relay closed before it started would record nothing and leave the upstream's
        # stream open), and what the translator holds is all that was sent.
        if compacted is not None:
            first = next(relay, None)
            yield from translator.compaction(compacted)
            chunks = itertools.chain(() if first is None else (first,), relay)
        for item in chunks:
            if isinstance(item, UpstreamError):
                ending = translator.fail(item.message)
                break
            yield from translator.feed(item)
    except GeneratorExit:
        relay.close()  # the pipeline's relay records the partial reply, DISCONNECTED
        _record(pipeline, request, key_id, answer, translator.cancel())
        raise
    ending = ending or translator.finish()  # the pipeline has recorded the reply by now
    _record(pipeline, request, key_id, answer, ending[-1]["response"])
    yield from ending


# -- the other Responses routes -----------------------------------------------------------------


def retrieve_response(response_id: str, client_key_id: int | None) -> dict[str, Any]:
    """A stored response of this key, as it was answered; the 404 for any other id."""
    with unit_of_work(write=False) as session:
        row = store.stored_response(session, response_id, client_key_id)
    if row is None or row.body is None:
        raise not_found("Response", response_id)
    return row.body


def erase_response(response_id: str, client_key_id: int | None) -> dict[str, Any]:
    """Erase a stored response and its input and output, for good; OpenAI's answer to it."""
    with unit_of_work() as session:
        deleted = store.delete_response(session, response_id, client_key_id)
    if not deleted:
        raise not_found("Response", response_id)
    return {"id": response_id, "object": "response", "deleted": True}


def input_item_page(
    response_id: str, client_key_id: int | None, query: ItemListQuery, page_bytes: int
) -> dict[str, Any]:
    """The page `query` asks for of the input items a stored response was given, at most `page_bytes` of JSON."""
    with unit_of_work(write=False) as session:
        row = store.stored_response(session, response_id, client_key_id)
        items = store.response_input_items(session, row) if row is not None else None
    if items is None:
        raise not_found("Response", response_id)
    return item_page(items, query, page_bytes)


def item_page(items: list[dict], query: ItemListQuery, page_bytes: int) -> dict:
    """The page `query` asks for of `items` (all of them, oldest first), in OpenAI's list
    shape: fewer than its limit when they pass `page_bytes` of JSON (has_more then says so)."""
    ordered = items if query.order == "asc" else list(reversed(items))
    if query.after is not None:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(query.after) + 1 :] if query.after in ids else []
    page = PageFill(query.limit, page_bytes)
    page.add_all(ordered)
    return item_list(page.entries, page.more)
