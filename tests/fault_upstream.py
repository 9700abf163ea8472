"""Fake upstreams that fail on purpose, on the wire, as dying providers do.

A FaultUpstream is a FakeUpstream (tests/fake_upstream.py: a real HTTP server on
127.0.0.1, scripted answers served in order, then `default`, then the echo) that can also
serve these answers, each a real thing on the socket:

- `Reset()`: the connection is reset before any byte of an answer (SO_LINGER 0, close: RST);
- `Silent(seconds, release, then)`: the request is read and nothing is sent until `release`
  is set or `seconds` pass; then `then` is answered, or the connection closed without a byte;
- `Failure(...)` (and `rate_limited`, `server_error`, `overloaded`, `forbidden`,
  `context_too_long`, `content_policy`): an error in OpenAI's own shape and headers;
- `Flapping(until, ...)`: a failure until time.monotonic() reaches `until`, healthy after;
- `FaultStream(pieces, ...)`: a streamed answer that waits before its first token, is cut
  (FIN or RST), stalls (then resumes or closes), carries one malformed event, or ends
  without `[DONE]` and then hangs or closes. A non-streamed request gets the same answer
  as one JSON body, delayed, cut or stalled half-way through its bytes.

Per server: `key` (the only credential it accepts; any other is OpenAI's 401, which names the
key presented, as OpenAI's does), `prefill` (a request ending in an assistant message is
continued from where that text stops: the scripted answer minus the prefix it was given),
`rejects_prefill` (such a request is a 400), `continuation_instruction` (a request ending in
an assistant message then this user message is continued the same way). Its answers name
the model the request asked for, as OpenAI's do, unless the test scripted another.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from fake_upstream import FakeUpstream, Reply, StreamReply

PREFILL_REJECTED = "Final assistant message prefill is not supported by this model"


@dataclass
class Reset:
    """Read the request, then reset the connection before any byte of an answer."""


@dataclass
class Silent:
    """Read the request and send nothing for `seconds` (or until `release` is set or the
    server stops); then answer `then`, or close the connection without a byte (None)."""

    seconds: float = 30.0
    release: threading.Event | None = None
    then: object = None


@dataclass
class Failure:
    """An HTTP error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    status: int
    message: str
    code: str | None = None
    type: str = "invalid_request_error"
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _retry_after(seconds: str | None) -> dict[str, str]:
    return {"Retry-After": seconds} if seconds is not None else {}


def rate_limited(retry_after: str | None = None) -> Failure:
    """OpenAI's 429 for a rate limit, with `Retry-After` when given."""
    message = (
        "Rate limit reached for gpt-4o in organization org-fake on tokens per min (TPM): "
        "Limit 30000, Used 30000, Requested 120. Please try again later."
    )
    return Failure(429, message, code="rate_limit_exceeded", type="tokens", headers=_retry_after(retry_after))


def server_error() -> Failure:
    """OpenAI's 500."""
    return Failure(500, "The server had an error while processing your request. Sorry about that!", type="server_error")


def overloaded(retry_after: str | None = None) -> Failure:
    """OpenAI's 503 (overloaded), with `Retry-After` when given."""
    return Failure(
        503, "The server is overloaded or not ready yet.", type="server_error", headers=_retry_after(retry_after)
    )


def forbidden() -> Failure:
    """A 403: the project may not use this model."""
    return Failure(403, "Project does not have access to model gpt-4o", code="model_not_found")


def context_too_long(limit: int = 8192) -> Failure:
    """OpenAI's 400 for a prompt the model's window cannot hold."""
    message = (
        f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
        f"{limit + 808} tokens. Please reduce the length of the messages."
    )
    return Failure(400, message, code="context_length_exceeded", param="messages")


def content_policy() -> Failure:
    """OpenAI's 400 for a request its safety system refused."""
    message = (
        "Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed."
    )
    return Failure(400, message, code="content_policy_violation")


@dataclass
class Flapping:
    """`failure` until time.monotonic() reaches `until`, then `healthy` (None: the echo)."""

    until: float
    failure: object = field(default_factory=overloaded)
    healthy: object = None


@dataclass
class FaultStream:
    """A streamed answer of `pieces` that misbehaves where asked. Every "after" counts the
    pieces sent before the fault (0: before the first).

    `first_token_after`: headers at once, then nothing for that long (or until `release`).
    `cut_after`: the connection drops (FIN; RST with `cut_with_reset`).
    `stall_after`: silence for `stall_seconds` (or until `release`), then `after_stall`:
    "resume" (the rest follows) or "close".
    `malformed_after`: one broken event (`malformed_event`) is sent there, and the rest follows.
    `done` False: the stream ends after finish_reason and usage with no `[DONE]`; then
    `after_end` "close" ends the body, "hang" keeps the connection open `hang_seconds`.
    `reasoning`: pieces of `reasoning_content` (as vLLM and Ollama stream a model's thinking)
    sent first, one every `reasoning_every` seconds.
    `error_after_finish`: an error event follows the finish_reason (the answer is whole).
    """

    pieces: list[str]
    model: str = "fake-model"
    prompt_tokens: int = 11
    completion_tokens: int = 7
    first_token_after: float = 0.0
    release: threading.Event | None = None
    cut_after: int | None = None
    cut_with_reset: bool = False
    stall_after: int | None = None
    stall_seconds: float = 30.0
    after_stall: str = "resume"
    malformed_after: int | None = None
    malformed_event: str = '{"choices": ['
    done: bool = True
    after_end: str = "close"
    hang_seconds: float = 30.0
    finish_reason: str = "stop"
    reasoning: list[str] = field(default_factory=list)
    reasoning_every: float = 0.0
    error_after_finish: bool = False

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def text_of(content: Any) -> str:
    """The text of a message's content (a string, or a list of text parts)."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def _rest_of(pieces: list[str], prefix: str) -> list[str]:
    """`pieces` without the text `prefix` they begin with (a piece cut where it ends)."""
    rest, skipped = [], 0
    for piece in pieces:
        if skipped >= len(prefix):
            rest.append(piece)
        elif skipped + len(piece) > len(prefix):
            rest.append(piece[len(prefix) - skipped :])
        skipped += len(piece)
    return rest


def continued(answer: object, partial: str) -> object:
    """`answer` continued after `partial`: its text minus that prefix, when it begins with it
    (otherwise unchanged: the model starts over, as a real one ignoring the prefill would)."""
    if isinstance(answer, Reply) and answer.text is not None and answer.text.startswith(partial):
        return replace(answer, text=answer.text[len(partial) :])
    if isinstance(answer, StreamReply | FaultStream) and "".join(answer.pieces).startswith(partial):
        return replace(answer, pieces=_rest_of(answer.pieces, partial))
    return answer


def _as_model(answer: object, model: str | None) -> object:
    """`answer` naming the model it was asked for, as OpenAI's answers do, unless the test
    scripted a model of its own (anything but the fake's default)."""
    if model is None or isinstance(answer, Failure | Reset | Silent):
        return answer
    if answer is None:
        return Reply(model=model)
    if isinstance(answer, Reply | StreamReply | FaultStream) and answer.model == "fake-model":
        return replace(answer, model=model)
    return answer


def completion_body(text: str, model: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A whole chat.completion whose assistant text is `text`."""
    return {
        "id": f"chatcmpl-fault-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class _FaultServer(FakeUpstream.server_class):
    """The fake's server, which knows its open connections so that `stop` can end them at
    once (handler threads waiting on a silent fault or an idle keep-alive would hold it)."""

    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class FaultUpstream(FakeUpstream):
    """A fake OpenAI-compatible upstream that also serves the faults above."""

    server_class = _FaultServer

    def __init__(
        self,
        *,
        key: str | None = None,
        prefill: bool = False,
        rejects_prefill: bool = False,
        continuation_instruction: str | None = None,
    ) -> None:
        super().__init__()
        self.key = key
        self.prefill = prefill
        self.rejects_prefill = rejects_prefill
        self.continuation_instruction = continuation_instruction
        self.closing = threading.Event()

    def stop(self) -> None:
        """Release every held answer, drop every connection, stop serving."""
        self.closing.set()
        if self._server is not None:
            self._server.drop_connections()
        super().stop()

    @property
    def endpoint(self) -> str:
        """The server's root URL (an Azure OpenAI resource's endpoint)."""
        return f"http://127.0.0.1:{self.port}"

    def arrivals(self) -> list[float]:
        """When each chat completion request arrived (time.monotonic()), in order."""
        return [r.arrived for r in self.received if urlsplit(r.path).path.endswith("/chat/completions")]

    def hold(self, seconds: float, release: threading.Event | None = None) -> bool:
        """Wait `seconds`, or until `release` is set or the server stops; True if released."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self.closing.is_set():
            if release is not None and release.wait(min(left, 0.05)):
                return True
            if release is None:
                self.closing.wait(min(left, 0.05))
        return False

    def partial_answer(self, messages: list[dict[str, Any]]) -> str | None:
        """The partial answer a request asks to continue (a trailing assistant message, or
        one followed by this server's continuation instruction), or None."""
        if not messages:
            return None
        last = messages[-1]
        if last.get("role") == "assistant":
            return text_of(last.get("content"))
        instruction = self.continuation_instruction
        asked = instruction and last.get("role") == "user" and text_of(last.get("content")) == instruction
        if asked and len(messages) >= 2 and messages[-2].get("role") == "assistant":
            return text_of(messages[-2].get("content"))
        return None

    def refusal(self, headers: Any, body: dict[str, Any]) -> Failure | None:
        """The error this server answers before looking at its script: a key it does not
        accept, or a prefill it does not support."""
        if self.key is not None:
            authorization = headers.get("Authorization") or ""
            presented = authorization.removeprefix("Bearer ") if authorization else headers.get("api-key") or ""
            if presented != self.key:
                message = (
                    f"Incorrect API key provided: {presented}. "
                    "You can find your API key at https://platform.openai.com/account/api-keys."
                )
                return Failure(401, message, code="invalid_api_key")
        messages = body.get("messages") or []
        if self.rejects_prefill and messages and messages[-1].get("role") == "assistant":
            return Failure(400, PREFILL_REJECTED, param="messages")
        return None

    def _handler_class(self):
        upstream = self
        base = super()._handler_class()

        class FaultHandler(base):
            def _answer(self, answer, body):
                refusal = upstream.refusal(self.headers, body)
                if refusal is not None:
                    self._serve(refusal, body)
                    return
                if isinstance(answer, Flapping):
                    answer = answer.failure if time.monotonic() < answer.until else answer.healthy
                answer = _as_model(answer, body.get("model"))
                partial = upstream.partial_answer(body.get("messages") or [])
                if partial is not None and (upstream.prefill or upstream.continuation_instruction):
                    answer = continued(answer, partial)
                self._serve(answer, body)

            def _serve(self, answer, body):
                if isinstance(answer, Reset):
                    self._drop(reset=True)
                elif isinstance(answer, Silent):
                    upstream.hold(answer.seconds, answer.release)
                    if answer.then is None or upstream.closing.is_set():
                        self._drop(reset=False)
                    else:
                        self._serve(_as_model(answer.then, body.get("model")), body)
                elif isinstance(answer, Failure):
                    self._send_json(answer.status, answer.body(), answer.headers)
                elif isinstance(answer, FaultStream) and body.get("stream"):
                    self._send_fault_stream(answer, body)
                elif isinstance(answer, FaultStream):
                    self._send_fault_completion(answer)
                else:
                    super()._answer(answer, body)

            def _drop(self, *, reset: bool) -> None:
                """End the connection now: RST (SO_LINGER 0, then close) or FIN."""
                self.close_connection = True
                with contextlib.suppress(OSError):
                    if reset:
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        # The socket is really closed once the request's reader lets go of it too.
                        self.connection.close()
                        self.rfile.close()
                    else:
                        self.connection.shutdown(socket.SHUT_RDWR)

            def _chunk(self, raw: bytes) -> None:
                self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
                self.wfile.flush()

            def _event(self, payload) -> None:
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self._chunk(f"data: {data}\n\n".encode())

            def _send_fault_stream(self, reply: FaultStream, body: dict) -> None:
                base_chunk = {
                    "id": f"chatcmpl-fault-{time.monotonic_ns()}",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": reply.model,
                }
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    if reply.first_token_after:
                        upstream.hold(reply.first_token_after, reply.release)
                    opening = {"index": 0, "delta": {"role": "assistant", "content": ""}}
                    self._event({**base_chunk, "choices": [opening]})
                    for thought in reply.reasoning:
                        time.sleep(reply.reasoning_every)
                        thinking = {"index": 0, "delta": {"reasoning_content": thought}}
                        self._event({**base_chunk, "choices": [thinking]})
                    for index in range(len(reply.pieces) + 1):
                        if not self._fault_at(reply, index):
                            return
                        if index < len(reply.pieces):
                            delta = {"content": reply.pieces[index]}
                            self._event({**base_chunk, "choices": [{"index": 0, "delta": delta}]})
                    finish = {"index": 0, "delta": {}, "finish_reason": reply.finish_reason}
                    self._event({**base_chunk, "choices": [finish]})
                    if reply.error_after_finish:
                        self._event({"error": {"message": "late trouble", "type": "server_error"}})
                    if (body.get("stream_options") or {}).get("include_usage"):
                        usage = {
                            "prompt_tokens": reply.prompt_tokens,
                            "completion_tokens": reply.completion_tokens,
                            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                        }
                        self._event({**base_chunk, "choices": [], "usage": usage})
                    if reply.done:
                        self._event("[DONE]")
                    elif reply.after_end == "hang":
                        upstream.hold(reply.hang_seconds)
                        self._drop(reset=False)
                        return
                    self._chunk(b"")  # the body's last chunk
                    self.close_connection = not reply.done
                except (BrokenPipeError, ConnectionResetError):
                    upstream.stream_closed_by_client.set()
                    self.close_connection = True

            def _fault_at(self, reply: FaultStream, index: int) -> bool:
                """Serve the faults due after `index` pieces; False when the stream is over."""
                if reply.cut_after == index:
                    self._drop(reset=reply.cut_with_reset)
                    return False
                if reply.stall_after == index:
                    upstream.hold(reply.stall_seconds, reply.release)
                    if reply.after_stall == "close" or upstream.closing.is_set():
                        self._drop(reset=False)
                        return False
                if reply.malformed_after == index:
                    self._chunk(f"data: {reply.malformed_event}\n\n".encode())
                return True

            def _send_fault_completion(self, reply: FaultStream) -> None:
                """The stream's answer as one JSON body: headers at once; the body after
                `first_token_after`; cut or stalled half-way through its bytes."""
                payload = json.dumps(
                    completion_body(reply.text, reply.model, reply.prompt_tokens, reply.completion_tokens)
                ).encode()
                half = len(payload) // 2
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.flush()
                    if reply.first_token_after:
                        upstream.hold(reply.first_token_after, reply.release)
                    if reply.cut_after is None and reply.stall_after is None:
                        self.wfile.write(payload)
                        return
                    self.wfile.write(payload[:half])
                    self.wfile.flush()
                    if reply.cut_after is not None:
                        self._drop(reset=reply.cut_with_reset)
                        return
                    upstream.hold(reply.stall_seconds, reply.release)
                    if reply.after_stall == "close" or upstream.closing.is_set():
                        self._drop(reset=False)
                        return
                    self.wfile.write(payload[half:])
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return FaultHandler
