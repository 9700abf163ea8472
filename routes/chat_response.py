"""The one place a chat route's turn is answered: the pipeline called, the answer shaped
as JSON or as Server-Sent Events.

/openai-completion and /process-payload stream a simple format:

    event: delta
    data: {"text": "Hel"}

    event: done
    data: {"user_id": "...", "model": "...", "usage": {...}}

or, when the upstream breaks off, `event: error` with `{"error": "..."}` as the last event.
/v1/chat/completions streams OpenAI's own: `data: <chat.completion.chunk>` lines and
`data: [DONE]`. The reply is recorded when the stream ends, however it ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app, g, jsonify, stream_with_context

from schemas import CONVERSATION_HEADER
from services.chat import ChatAnswer, ChatTurn, ExchangeReport
from services.llm import UpstreamError


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
    response = event_stream(events(answer)) if turn.stream else jsonify(shape(answer))
    if conversation_header:
        response.headers[CONVERSATION_HEADER] = answer.conversation_id
    return response


def exchange_report() -> ExchangeReport:
    """A new report of this request's exchange, which its log line reads when it closes."""
    g.exchange = ExchangeReport()
    return g.exchange


def event_stream(events: Iterator[str]) -> Response:
    """A text/event-stream response relaying `events`, the request context kept for recording."""
    response = Response(stream_with_context(events), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events through unbuffered
    return response


def _event(name: str | None, payload: Any) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return (f"event: {name}\n" if name else "") + f"data: {data}\n\n"


def simple_events(answer: ChatAnswer) -> Iterator[str]:
    """The documented simple event stream: deltas, then done (or error)."""
    for item in answer.chunks:
        if isinstance(item, UpstreamError):
            yield _event("error", {"error": item.message})
            return
        for choice in item.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield _event("delta", {"text": text})
    completion = answer.sofar()
    yield _event("done", {"user_id": answer.conversation_id, "model": completion.model, "usage": completion.usage()})


def openai_events(answer: ChatAnswer, include_usage: bool = False) -> Iterator[str]:
    """OpenAI's chunk stream, ending with [DONE] (or an error object).

    Usage is always asked of the upstream (it is recorded), but, as OpenAI does, the
    client gets the final usage chunk (`choices: []`) and the `usage` field only when its
    `stream_options.include_usage` asked for them: the SDK's own streaming loop reads
    `chunk.choices[0]` and would fail on a chunk it did not ask for.
    """
    for item in answer.chunks:
        if isinstance(item, UpstreamError):
            yield _event(None, {"error": {"message": item.message, "type": "api_error", "param": None, "code": None}})
            return
        if not include_usage:
            if not item.get("choices") and "usage" in item:
                continue
            item = {name: value for name, value in item.items() if name != "usage"}
        yield _event(None, item)
    yield _event(None, "[DONE]")
