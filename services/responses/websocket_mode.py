"""The Responses API's WebSocket mode (Open Responses' `x-openresponses-websocket`): one
connection's `response.create` messages, answered one after another with the events of the
SSE stream, by the same service as POST /v1/responses.

A connection keeps one response in memory, as OpenAI's does: the last one it made, when the
store cannot continue it (it was `store: false`, or its own history was held here). A
`response.create` continuing that one by `previous_response_id` is sent that history; any
other id goes to the store, as over HTTP, and a `store: false` one is not there: a new
connection (or a turn after a failed one) gets `previous_response_not_found` for it, and the
client starts a new chain with the whole context as input. A turn that fails forgets the
response it continued; a turn that completes replaces the one kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import closing
from typing import TYPE_CHECKING, Any

from schemas import ResponseRequest
from services.chat import ChatPipeline
from services.client_keys import ClientKey
from services.responses.items import open_calls
from services.responses.service import HeldResponse, ResponseAnswer, create_response

if TYPE_CHECKING:
    from telemetry import ExchangeReport

# How a response that a connection may keep in memory ended: a failed or cancelled one never is.
_CONTINUABLE = frozenset({"completed", "incomplete"})


class WebSocketSession:
    """The responses of one WebSocket connection, made in turn by one client key."""

    def __init__(self, pipeline: ChatPipeline, client_key: ClientKey | None, sealer: Any = None) -> None:
        self.pipeline = pipeline
        self.sealer = sealer  # compaction items' (services/responses/compaction.py)
        self.client_key = client_key
        self.held: HeldResponse | None = None

    def create(self, request: ResponseRequest, report: ExchangeReport) -> Iterator[dict[str, Any]]:
        """The events of one `response.create` (`request` is streamed). Raises what
        create_response raises before the first event, having forgotten the response it
        continued; closing the events early records the response cancelled, as over SSE."""
        try:
            answer = create_response(self.pipeline, request, self.client_key, report, self.held, self.sealer)
        except Exception:
            self.forget(request)
            raise
        return self._relay(request, answer)

    def forget(self, request: ResponseRequest | None) -> None:
        """A turn failed: the response it continued is no longer kept (OpenAI evicts it too)."""
        if request is not None and self.held is not None and request.previous_response_id == self.held.response_id:
            self.held = None

    def _relay(self, request: ResponseRequest, answer: ResponseAnswer) -> Iterator[dict[str, Any]]:
        last: Mapping[str, Any] = {}
        with closing(answer.events):  # a connection gone mid-stream closes the service's stream at once
            try:
                for event in answer.events:
                    last = event
                    yield event
            except Exception:
                self.forget(request)
                raise
        response = last.get("response") or {}
        if response.get("status") not in _CONTINUABLE:
            self.forget(request)
        elif not request.store or answer.state.held_exchanges:
            self.held = _held(answer, response)
        else:
            self.held = None  # the store continues it, as over HTTP


def _held(answer: ResponseAnswer, response: Mapping[str, Any]) -> HeldResponse:
    """What a response continuing `response` is sent as history: the history `answer` was
    sent, then its own exchange (its new input and the reply, as the pipeline recorded them)."""
    state, chat = answer.state, answer.chat
    exchange = [*chat.new_messages, _as_shown(chat.sofar().message(), response)]
    return HeldResponse(
        response_id=response["id"],
        user_id=chat.conversation_id,
        stored_exchanges=state.history_exchanges or (),
        held_exchanges=(*state.held_exchanges, exchange),
        open_calls=open_calls([*(answer.items or ()), *response["output"]]),
    )


def _as_shown(reply: dict[str, Any], response: Mapping[str, Any]) -> dict[str, Any]:
    """The reply as the client was shown it: only the tool calls `response` output (those
    max_tool_calls kept), as services/chat.py records them."""
    shown = {item["call_id"] for item in response["output"] if item.get("type") == "function_call"}
    calls = [call for call in reply.get("tool_calls") or () if call.get("id") in shown]
    kept = {key: value for key, value in reply.items() if key != "tool_calls"}
    return {**kept, "tool_calls": calls} if calls else kept
