"""A real HTTP server on 127.0.0.1 that speaks OpenAI's chat completions API.

Tests point the real `openai` SDK at it with `base_url`, so every byte the service sends
and receives crosses a socket exactly as it would in production. By default it answers
with a deterministic echo of the last user message; a test can queue scripted replies
(errors, hangs, malformed bodies, SSE streams) that are served in order, and set `default`,
served once the queue is empty. tests/fault_upstream.py adds the faults of a dying provider.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Reply:
    """A successful chat completion whose assistant text is `text`."""

    text: str | None = None
    model: str = "fake-model"
    prompt_tokens: int = 11
    completion_tokens: int = 7
    # The model calls these tools instead of answering: content null, finish "tool_calls".
    tool_calls: list[dict] | None = None
    # Prompt tokens served from the upstream's cache: usage.prompt_tokens_details.cached_tokens.
    cached_tokens: int | None = None


def usage_of(reply) -> dict:
    """A reply's `usage` as OpenAI writes it (with prompt_tokens_details when it has cached tokens)."""
    usage = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }
    if reply.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
    return usage


def tool_call(call_id: str, name: str, arguments: dict) -> dict:
    """One function tool call as OpenAI's chat API writes it in an assistant message."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def tool_history_error(messages: list) -> str | None:
    """What OpenAI answers (400) for a message list whose tool messages and tool calls do
    not pair up, or None when they do: every `tool` message must follow (among the tool
    messages right after it) an assistant message whose tool_calls carry its tool_call_id,
    and every such call must be answered before the next other message."""
    open_calls: set[str] | None = None
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            if open_calls is None or message.get("tool_call_id") not in open_calls:
                return (
                    f"Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    f"with 'tool_calls'. (messages[{index}])"
                )
            open_calls.discard(message["tool_call_id"])
            continue
        if open_calls:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {sorted(open_calls)}"
            )
        calls = message.get("tool_calls") if role == "assistant" else None
        open_calls = {c["id"] for c in calls} if calls else None
    return None


@dataclass
class StreamReply:
    """A streamed answer (when the request asks for one): `pieces` as SSE chunks.

    `hold_after`: after that many pieces, wait for `resume` (at most `hold_max_seconds`) before the rest.
    `break_after`: after that many pieces, drop the connection mid-body.
    `error_after`: after that many pieces, send an error event and end.
    `endless`: after the pieces, keep sending the last one until the reader hangs up
    (at most 30 s), so a test can see that the service closes the upstream stream.
    """

    pieces: list[str]
    model: str = "fake-model"
    prompt_tokens: int = 11
    completion_tokens: int = 7
    cached_tokens: int | None = None
    hold_after: int | None = None
    resume: threading.Event | None = None
    hold_max_seconds: float = 10
    break_after: int | None = None
    error_after: int | None = None
    endless: bool = False


@dataclass
class Status:
    """An HTTP error answer with a JSON (or raw) body and optional headers."""

    code: int
    message: str = "upstream error"
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None


@dataclass
class RawBody:
    """A 200 answer whose body is exactly these bytes (to send malformed replies)."""

    body: bytes
    content_type: str = "application/json"


@dataclass
class Hang:
    """Hold the request until `release` is set (or `max_seconds` pass), then answer."""

    release: threading.Event
    then: object = None
    max_seconds: float = 10.0


@dataclass
class Received:
    """One request the fake upstream received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict
    # The client's address: the same (host, port) is the same TCP connection, reused.
    peer: tuple = ()
    # When it arrived (time.monotonic()): tests count attempts and measure their spacing.
    arrived: float = field(default_factory=time.monotonic)


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if p.get("type") == "text")


class _Server(ThreadingHTTPServer):
    # The stdlib's listen backlog of 5 drops connections when many clients open theirs
    # at once (the concurrency tests do); a real upstream would not.
    request_queue_size = 512
    daemon_threads = True


class FakeUpstream:
    """An OpenAI-compatible HTTP server in a background thread of this process."""

    server_class = _Server

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls  # a server-side context: serve HTTPS instead of HTTP
        self.received: list[Received] = []
        self.script: deque = deque()
        # Served when the script is empty (None: the echo), e.g. an upstream that keeps failing.
        self.default = None
        self.on_request = None  # optional callable(Received) run inside the handler
        self.stream_closed_by_client = threading.Event()  # a streamed answer's reader went away
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        self._server = self.server_class(("127.0.0.1", 0), self._handler_class())
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    # -- scripting -------------------------------------------------------------------
    def enqueue(self, *answers) -> None:
        """Serve these answers to the next requests, in order, then fall back to echo."""
        with self._lock:
            self.script.extend(answers)

    def reset(self) -> None:
        with self._lock:
            self.script.clear()
            self.received.clear()
        self.default = None
        self.on_request = None
        self.stream_closed_by_client = threading.Event()

    def chat_requests(self) -> list[dict]:
        """The JSON bodies of the chat completion requests received so far."""
        return [r.body for r in self.received if urlsplit(r.path).path.endswith("/chat/completions")]

    def _next_answer(self):
        with self._lock:
            return self.script.popleft() if self.script else self.default

    # -- HTTP ------------------------------------------------------------------------
    def _handler_class(self):
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                if urlsplit(self.path).path.rstrip("/").endswith("/models"):
                    self._send_json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
                else:
                    self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode("latin-1")}
                received = Received(
                    "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, self.client_address
                )
                with upstream._lock:
                    upstream.received.append(received)
                if upstream.on_request:
                    upstream.on_request(received)
                if not urlsplit(self.path).path.rstrip("/").endswith("/chat/completions"):
                    self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                    return
                invalid = tool_history_error(body.get("messages") or [])
                if invalid:  # OpenAI checks the history before anything else
                    error = {"message": invalid, "type": "invalid_request_error", "param": "messages", "code": None}
                    self._send_json(400, {"error": error})
                    return
                self._answer(upstream._next_answer(), body)

            def _answer(self, answer, body):
                if isinstance(answer, Hang):
                    answer.release.wait(answer.max_seconds)
                    answer = answer.then
                if answer is None:
                    answer = Reply()
                if isinstance(answer, Status):
                    if answer.raw_body is not None:
                        self._send_raw(answer.code, answer.raw_body, "text/html", answer.headers)
                    else:
                        error = {"message": answer.message, "type": "invalid_request_error", "code": None}
                        self._send_json(answer.code, {"error": error}, answer.headers)
                elif isinstance(answer, RawBody):
                    self._send_raw(200, answer.body, answer.content_type)
                elif isinstance(answer, Reply) and answer.tool_calls and body.get("stream"):
                    self._send_tool_call_stream(answer, body)
                elif isinstance(answer, StreamReply) or (isinstance(answer, Reply) and body.get("stream")):
                    if isinstance(answer, Reply):
                        text = answer.text if answer.text is not None else self._echo(body)
                        words = text.split(" ")
                        pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
                        answer = StreamReply(pieces, model=answer.model)
                    self._send_stream(answer, body)
                elif isinstance(answer, Reply):
                    self._send_completion(answer, body)
                else:  # pragma: no cover - a test wrote an unknown answer
                    raise TypeError(answer)

            @staticmethod
            def _echo(body: dict) -> str:
                messages = body.get("messages") or []
                last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
                return f"echo: {_text_of(last_user.get('content'))}"

            def _send_stream(self, reply: StreamReply, body: dict):
                completion_id = f"chatcmpl-fake-{time.monotonic_ns()}"
                base = {"id": completion_id, "object": "chat.completion.chunk", "created": 0, "model": reply.model}
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def event(payload) -> None:
                    data = payload if isinstance(payload, str) else json.dumps(payload)
                    raw = f"data: {data}\n\n".encode()
                    self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                    self.wfile.flush()

                try:
                    event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
                    for index, piece in enumerate(reply.pieces):
                        if reply.break_after is not None and index == reply.break_after:
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        if reply.error_after is not None and index == reply.error_after:
                            event({"error": {"message": "upstream overloaded mid-stream", "type": "server_error"}})
                            self.wfile.write(b"0\r\n\r\n")
                            return
                        if reply.hold_after is not None and index == reply.hold_after and reply.resume:
                            reply.resume.wait(reply.hold_max_seconds)
                        event({**base, "choices": [{"index": 0, "delta": {"content": piece}}]})
                    deadline = time.monotonic() + 30
                    while reply.endless and time.monotonic() < deadline:
                        event({**base, "choices": [{"index": 0, "delta": {"content": reply.pieces[-1]}}]})
                    event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                    if (body.get("stream_options") or {}).get("include_usage"):
                        event({**base, "choices": [], "usage": usage_of(reply)})
                    event("[DONE]")
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    upstream.stream_closed_by_client.set()
                    self.close_connection = True

            def _send_tool_call_stream(self, reply: Reply, body: dict):
                """Tool calls streamed as OpenAI does: id and name first, arguments in pieces."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                base = {"id": f"chatcmpl-fake-{time.monotonic_ns()}", "object": "chat.completion.chunk", "created": 0}
                base["model"] = reply.model
                deltas = [{"role": "assistant", "content": None}]
                if reply.text:  # some models say a word before they call
                    deltas.append({"content": reply.text})
                for index, call in enumerate(reply.tool_calls):
                    head = {"index": index, "id": call["id"], "type": "function"}
                    deltas.append({"tool_calls": [{**head, "function": {"name": call["function"]["name"]}}]})
                    arguments = call["function"]["arguments"]
                    for start in range(0, len(arguments), 8):
                        piece = {"index": index, "function": {"arguments": arguments[start : start + 8]}}
                        deltas.append({"tool_calls": [piece]})
                events = [{**base, "choices": [{"index": 0, "delta": d}]} for d in deltas]
                events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    events.append({**base, "choices": [], "usage": usage_of(reply)})
                for payload in [*events, "[DONE]"]:
                    data = payload if isinstance(payload, str) else json.dumps(payload)
                    raw = f"data: {data}\n\n".encode()
                    self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

            def _send_completion(self, reply: Reply, body: dict):
                text = reply.text if reply.text is not None else self._echo(body)
                message = {"role": "assistant", "content": text}
                if reply.tool_calls:
                    message = {"role": "assistant", "content": reply.text, "tool_calls": reply.tool_calls}
                completion = {
                    "id": f"chatcmpl-fake-{time.monotonic_ns()}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": reply.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                        }
                    ],
                    "usage": usage_of(reply),
                }
                self._send_json(200, completion)

            def _send_json(self, code, payload, headers=None):
                self._send_raw(code, json.dumps(payload).encode(), "application/json", headers)

            def _send_raw(self, code, data: bytes, content_type: str, headers=None):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout test)

        return Handler
