"""The Responses API's WebSocket mode (Open Responses' `x-openresponses-websocket`, spec
version 2026-04-24): a WebSocket opened on /v1/responses (a GET with Upgrade, beside POST
/v1/responses), served by gunicorn's own (gevent) worker through flask-sock.

Each text message is a `response.create` event: the body of POST /v1/responses with
`"type": "response.create"`, and without the HTTP-only `stream`, `stream_options` and
`background` (every response is streamed). It is answered with the events the SSE stream
sends, each one JSON text message, in order; the next message is answered once that
response has ended (services/responses/websocket_mode.py keeps what continues it). A message
that cannot be answered gets one `error` event in the spec's WebSocketErrorEvent shape,
`{"type": "error", "status": <the HTTP status of the same failure>, "error": {"type",
"code", "message", "param"}}`, and the connection stays open.

The client key is checked on the upgrade request (no or a bad key: 401, no upgrade) and again
for each message, as each POST's is: a key revoked since gets a 401 error event and the
connection is closed (1008); the completion rate limit and the key's budget are spent by
each message, as by each POST.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from flask import Blueprint, current_app
from flask_limiter import RateLimitExceeded
from pydantic import ValidationError

from auth import client_key_for, current_client_key, presented_key
from errors import ApiError, reject_invalid
from extensions import limiter, sock
from ratelimit import completion_limit
from request_body import nesting_deeper_than
from routes.sse import COMPACT
from schemas import ResponseRequest
from services.responses.compaction import app_sealer
from services.responses.websocket_mode import WebSocketSession
from telemetry import ExchangeReport, finish_message, route_rule

responses_ws_bp = Blueprint("responses_ws", __name__, url_prefix="/v1")

# Fields of POST /v1/responses that a `response.create` message must not carry (the spec's
# WebSocketResponseCreateEvent), and OpenAI's WebSocket-only ones this service does not do.
_HTTP_ONLY = ("stream", "stream_options", "background")
_NO_STREAM_ID = "Multiplexed streams (stream_id) are not supported: a connection answers one response at a time"
_NO_WARM_UP = "Warm-up requests (generate: false) are not supported"
# The spec's error `code` is required; an answer whose HTTP error has none gets its status's kind.
# The WebSocket close code of a connection ended for what its client may no longer do (RFC 6455).
_POLICY_VIOLATION = 1008
_KIND_OF_STATUS = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}


@sock.route("/responses", bp=responses_ws_bp)
def responses_socket(ws: Any) -> None:
    """Answer a WebSocket connection's `response.create` messages, one after another, until
    it closes (flask-sock ends the route when the client has gone)."""
    ws.sock = _WholeFrames(ws.sock)
    session = WebSocketSession(current_app.extensions["chat"], current_client_key(), app_sealer(current_app))
    while True:
        if _answer(ws, session, ws.receive()) == 401:  # the key was revoked: the connection ends
            ws.close(reason=_POLICY_VIOLATION, message="API key revoked")
            return


def _answer(ws: Any, session: WebSocketSession, message: str | bytes) -> int:
    """Send the events that answer one message; count and log it as a request of its own.
    Its status (200, or the error event's) is returned."""
    started, status = time.perf_counter(), 200
    report = ExchangeReport(route=route_rule(), started=started)
    try:
        with closing(_events(session, message, report)) as events:
            for event in events:
                if event["type"] == "error":
                    status = event["status"]
                ws.send(json.dumps(event, ensure_ascii=False, separators=COMPACT))
    finally:
        finish_message(status, report if report.streamed else None, started)
    return status


def _key_still_live(session: WebSocketSession) -> None:
    """Read the connection's key again, as every POST reads its own (auth.py's check, its 401
    for a key revoked since the upgrade); changed limits hold from this message."""
    if session.client_key is not None:
        session.client_key = client_key_for(presented_key() or "")


def _events(session: WebSocketSession, message: str | bytes, report: ExchangeReport) -> Iterator[dict[str, Any]]:
    """The events that answer one message: a response's, or one error event."""
    try:
        _key_still_live(session)
        request = _parsed(message)
        with limiter.limit(completion_limit):  # this message spends the limit a POST would (429 past it)
            pass
        events = session.create(request, report)
    except Exception as exc:
        yield _error_event(exc)
        return
    with closing(events):
        try:
            yield from events
        except Exception as exc:  # a fault the stream did not end itself: an event, not a broken connection
            yield _error_event(exc)


def _parsed(message: str | bytes) -> ResponseRequest:
    """The streamed POST /v1/responses request a `response.create` message makes; a 400 else."""
    raw = message.encode() if isinstance(message, str) else message
    depth = current_app.config["MAX_JSON_DEPTH"]
    if nesting_deeper_than(raw, depth):
        raise ApiError(400, f"The message nests deeper than {depth} levels", code="invalid_json")
    try:
        event = json.loads(raw)
    except ValueError:
        raise ApiError(400, "The message is not valid JSON", code="invalid_json") from None
    if not isinstance(event, dict) or event.get("type") != "response.create":
        raise _refusal(
            "type", 'Each message must be a JSON object with "type": "response.create"', "unknown_event_type"
        )
    for name in _HTTP_ONLY:
        if event.get(name) is not None:
            raise _refusal(name, f"'{name}' is not sent over a WebSocket, where every response streams")
    if event.get("stream_id") is not None:
        raise _refusal("stream_id", _NO_STREAM_ID)
    if event.get("generate", True) is not True:
        raise _refusal("generate", _NO_WARM_UP)
    body = {name: value for name, value in event.items() if name not in ("type", "generate", "stream_id")}
    try:
        return ResponseRequest.model_validate({**body, "stream": True})
    except ValidationError as exc:
        reject_invalid(exc)
        raise  # reject_invalid always raises


def _refusal(field: str, message: str, code: str = "unsupported_parameter") -> ApiError:
    return ApiError(400, message, details=[{"field": field, "message": message}], code=code)


def _error_event(exc: Exception) -> dict[str, Any]:
    """The spec's error event for `exc`: the status and error POST /v1/responses answers it with."""
    answer = current_app.handle_user_exception(exc)
    error = dict(answer.get_json()["error"])
    error["code"] = error.get("code") or _KIND_OF_STATUS.get(answer.status_code, "server_error")
    retry_after = answer.headers.get("Retry-After")
    if isinstance(exc, RateLimitExceeded) and limiter.current_limit is not None:
        retry_after = str(max(1, math.ceil(limiter.current_limit.reset_at - time.time())))
    if retry_after:
        error["headers"] = {"retry-after": retry_after}
    return {"type": "error", "status": answer.status_code, "error": error}


class _WholeFrames:
    """A connection's socket whose every send is written whole, one at a time. simple-websocket
    (1.1.0) writes a frame with one socket.send(), which may take only part of a large one,
    and its reader writes pongs from another greenlet (its issue 45); this wrapper is its fix."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
