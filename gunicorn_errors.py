"""gunicorn's own error answers in the app's JSON envelope.

gunicorn answers some requests itself, before the app sees them: a request line over
`limit_request_line` (414), a header over `limit_request_field_size` or more headers than
`limit_request_fields` (431), a request that is not valid HTTP (400), an unknown
Transfer-Encoding (501), an app that failed before answering (500). Worker.handle_error
decides the status, logs it and writes an HTML page. The workers made here let it decide
and log as before, then write `{"error": "<sentence>"}` with the same status line and
`Connection: close` instead of the page. The request is not routed, so under /v1/ too the
answer is this plain envelope, not OpenAI's shape.
"""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine

# The request's own text (its line, a header) is never echoed: it may hold a key.
_SENTENCES = {
    400: "Bad request: the request is not valid HTTP/1.1",
    403: "Forbidden",
    417: "Expectation failed",
    500: "Internal server error",
    501: "Transfer-Encoding not supported",
}


class _StatusLine:
    """The client socket as gunicorn's HTML error page sees it: every call goes through to
    the socket but sendall, which keeps the page's status line and sends nothing."""

    def __init__(self, sock) -> None:
        self._sock = sock
        self.line: bytes | None = None

    def __getattr__(self, name: str):
        return getattr(self._sock, name)

    def sendall(self, data: bytes) -> None:
        self.line = bytes(data).split(b"\r\n", 1)[0]  # b"HTTP/1.1 414 URI Too Long"


def error_sentence(status: int, reason: str, exc: BaseException, cfg) -> str:
    """The sentence for gunicorn's `status` answer to `exc`, naming the limit that was passed."""
    if isinstance(exc, LimitRequestLine):
        return f"Request line is too long (limit {cfg.limit_request_line} bytes)"
    if isinstance(exc, LimitRequestHeaders):
        return (
            f"Request headers are too large (limit {cfg.limit_request_fields} headers "
            f"of {cfg.limit_request_field_size} bytes each)"
        )
    return _SENTENCES.get(status, reason)


def json_error_answer(line: bytes, message: str) -> bytes:
    """A whole HTTP response: the status `line`, then `{"error": message}`; the connection closes."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    head = b"Connection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    return line + b"\r\n" + head + body


class JsonErrors:
    """Mixed in before a gunicorn worker class: its own error answers become JSON."""

    def handle_error(self, req, client, addr, exc):
        status_line = _StatusLine(client)
        super().handle_error(req, status_line, addr, exc)
        if status_line.line is None:
            return
        _, status, reason = status_line.line.decode("latin-1").split(" ", 2)
        message = error_sentence(int(status), reason, exc, self.cfg)
        try:
            util.write_nonblock(client, json_error_answer(status_line.line, message))
        except Exception:
            self.log.debug("Failed to send error message.")


def json_error_worker(name: str) -> type:
    """gunicorn's `name` worker class ("gevent" or "gthread"), answering its own errors as JSON.
    Only the chosen worker's module is imported: the master stays as gunicorn leaves it."""
    if name == "gevent":
        from gunicorn.workers.ggevent import GeventWorker as base
    elif name == "gthread":
        from gunicorn.workers.gthread import ThreadWorker as base
    else:
        raise ValueError(f"no JSON-error worker for {name!r}")
    return type(f"JsonErrors{base.__name__}", (JsonErrors, base), {"__module__": __name__})
