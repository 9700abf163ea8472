"""Server-Sent Events for streamed replies.

/openai-completion and /process-payload send a simple format:

    event: delta
    data: {"text": "Hel"}

    event: done
    data: {"user_id": "...", "model": "...", "usage": {...}}

or, when the upstream breaks off, `event: error` with `{"error": "..."}` as the last event.
/v1/chat/completions sends OpenAI's own: `data: <chat.completion.chunk>` lines and
`data: [DONE]`. Either way the reply is recorded when the stream ends, however it ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Response, stream_with_context

from services.chat import StreamedExchange, relay_stream
from services.llm import UpstreamError


def _event(name: str | None, payload: Any) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return (f"event: {name}\n" if name else "") + f"data: {data}\n\n"


def simple_events(streamed: StreamedExchange, user_id: str) -> Iterator[str]:
    """The documented simple event stream: deltas, then done (or error)."""
    for item in relay_stream(streamed):
        if isinstance(item, UpstreamError):
            yield _event("error", {"error": item.message})
            return
        for choice in item.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield _event("delta", {"text": text})
    completion = streamed.stream.completion()
    yield _event("done", {"user_id": user_id, "model": completion.model, "usage": completion.usage()})


def openai_events(streamed: StreamedExchange) -> Iterator[str]:
    """OpenAI's chunk stream, ending with [DONE] (or an error object)."""
    for item in relay_stream(streamed):
        if isinstance(item, UpstreamError):
            yield _event(None, {"error": {"message": item.message, "type": "api_error", "param": None, "code": None}})
            return
        yield _event(None, item)
    yield _event(None, "[DONE]")


def sse_response(events: Iterator[str], headers: dict[str, str] | None = None) -> Response:
    """A text/event-stream response that keeps the request context for recording."""
    response = Response(stream_with_context(events), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events through unbuffered
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
