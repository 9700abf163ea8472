"""The checks of a JSON request body before its model reads it: within MAX_CONTENT_LENGTH
(chunked too), declared JSON, shallow enough to parse, valid JSON, and an object. They run
as a before-request hook, ahead of flask-openapi3's validation with the view's model. And
the rest of a body the app refused unread is read after the answer (LingeringClose), so
that the client reads that answer rather than a connection reset."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any, get_type_hints

from flask import Flask, current_app, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import ClosingIterator

from schemas import rejection_of


class BodyRejected(Exception):
    """A request body refused before its model reads it: `status` (400, 415) with the
    envelope's message and details (errors.py answers it)."""

    def __init__(self, status: int, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


_BODY_METHODS = {"POST", "PUT", "PATCH"}


def nesting_deeper_than(raw: bytes, limit: int) -> bool:
    """True when the JSON text `raw` nests arrays/objects more than `limit` levels deep."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # cannot be deeper than the number of brackets it has
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def _body_model(endpoint: str | None) -> type[BaseModel] | None:
    """The pydantic model the view of `endpoint` takes as its `body`, if any."""
    view = current_app.view_functions.get(endpoint or "")
    if view is None:
        return None
    cache = current_app.extensions.setdefault("body_models", {})
    if endpoint not in cache:
        cache[endpoint] = get_type_hints(view).get("body")
    return cache[endpoint]


def read_body() -> bytes:
    """The whole request body (cached for the schema), or 413 when it is over MAX_CONTENT_LENGTH.

    A body with Content-Length over the limit is refused by Werkzeug before it is read. A
    chunked body has no length: gunicorn marks its input as terminated, so Werkzeug reads it
    through `LimitedStream(stream, max_content_length, is_max=True)`, whose read() stops at
    the limit and returns what it has, without a word. One more byte from the server's own
    stream tells a body that ends at the limit from one that goes on.
    """
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(raw) >= limit and request.input_stream.read(1):
        raise RequestEntityTooLarge()
    return raw


def check_json_body() -> Any:
    """Before a view that takes a JSON body: 413 when it is over MAX_CONTENT_LENGTH (chunked
    bodies included), 415 when it is not declared JSON, 400 when it
    nests deeper than MAX_JSON_DEPTH (the parser would recurse out of stack first) or does
    not parse, and the model's own 400 when it is not an object."""
    if request.method not in _BODY_METHODS:
        return None
    model = _body_model(request.endpoint)
    if model is None:
        return None
    if not request.is_json:
        raise BodyRejected(415, "Content-Type must be application/json")
    raw = read_body()
    limit = current_app.config["MAX_JSON_DEPTH"]
    if nesting_deeper_than(raw, limit):
        raise BodyRejected(400, f"Request body nests deeper than {limit} levels")
    data = request.get_json(silent=True)
    if data is None:
        raise BodyRejected(400, "Request body is not valid JSON")
    if not isinstance(data, dict):
        try:
            model.model_validate(data)
        except ValidationError as exc:
            message, details = rejection_of(exc)
            raise BodyRejected(400, message, details) from None
    return None


# Lingering close: how much of a body the app left unread is read (and dropped) after the
# answer, and for how long at most (nginx's lingering_close does the same, 30 s by default).
LINGER_BYTES = 16 * 1024 * 1024
LINGER_SECONDS = 5.0


def drain_unread_body(environ: dict[str, Any]) -> int:
    """Read and drop what is left of the request body, up to LINGER_BYTES and LINGER_SECONDS;
    the bytes read. Under gunicorn only, whose wsgi.input ends where the body ends (another
    server's may be the raw socket, where a read past the body would wait for the next request).

    Why: a client that writes its whole body before reading the answer (Python's urllib,
    most plain HTTP clients) is still writing when a 413 refuses the body unread. If the
    connection then closes (the client asked for Connection: close, or the server closes
    it), the kernel answers the unread bytes with a reset, and the reset discards the 413
    the client has not read yet: the client sees "connection reset" instead. Reading the
    rest first lets the close be a clean one, so the client reads the answer.
    """
    sock, body = environ.get("gunicorn.socket"), environ.get("wsgi.input")
    if sock is None or body is None:
        return 0
    deadline, drained = time.monotonic() + LINGER_SECONDS, 0
    prior = sock.gettimeout()
    try:
        while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data = body.read(min(65536, LINGER_BYTES - drained))
            if not data:
                break
            drained += len(data)
    except Exception:  # noqa: BLE001 - gone, silent or malformed: the close goes ahead either way
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(prior)
    return drained


class LingeringClose:
    """WSGI middleware: once the answer is written (the server closes the response
    iterable after its last byte), drain_unread_body."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        result = self.app(environ, start_response)
        has_body = environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ
        if "gunicorn.socket" not in environ or not has_body:
            return result  # (a file answer, then, keeps gunicorn's sendfile)
        return ClosingIterator(result, [lambda: drain_unread_body(environ)])


def register_body_checks(app: Flask) -> None:
    """Check JSON bodies before flask-openapi3 validates them with the view's model, and read
    what is left of any body after the answer (LingeringClose)."""
    app.before_request(check_json_body)
    app.wsgi_app = LingeringClose(app.wsgi_app)  # type: ignore[method-assign]
