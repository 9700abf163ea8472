"""A streamed chat completion's body read as OpenAI's chunks: Server-Sent Events, one JSON
chunk each, until `data: [DONE]`.

Each chunk is parsed once into a dict, with no SDK object built and dumped again per
chunk: under load that was most of a stream's CPU. This reader is what a `ChatStream`
iterates; it calls nothing above it (the client that opened the call, the stream's owner).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx2

from logformat import redact
from services.llm.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from services.llm.http_pool import WatchedStream

log = logging.getLogger(__name__)


@dataclass
class StreamWatch:
    """How long a stream may take: until its first token, between two chunks (the stall
    detector), and in all (time.monotonic() deadlines); `stream` is the connection whose
    read deadline is moved as chunks arrive (None: the request's own read timeout alone).
    `on_malformed` is told of each event skipped for not being JSON."""

    first_token_by: float
    silence: float
    ends_at: float
    stream: WatchedStream | None = None
    on_malformed: Callable[[], None] = lambda: None

    def until(self, seconds: float) -> None:
        """Reads must come within `seconds` from now (and before `ends_at`)."""
        self.by(time.monotonic() + seconds)

    def by(self, deadline: float) -> None:
        if self.stream is not None:
            self.stream.read_deadline = min(deadline, self.ends_at)


def upstream_chunks(
    response: Any, close: Callable[[], None], secrets: Sequence[str], watch: StreamWatch
) -> Iterator[dict[str, Any]]:
    """The chunks of a streamed chat completion's body (an httpx2 response) as dicts, until
    `data: [DONE]`, or until the answer is finished and its usage came (an upstream that
    never sends `[DONE]` is not waited for). An event that is not JSON is skipped (logged,
    counted by `watch.on_malformed`) and the rest relayed. An UpstreamError (its message
    without `secrets`) when the stream breaks, goes silent past `watch`, or ends before the
    answer does; once the answer is finished, what follows cannot break it. `close` is
    called when the chunks end, however they end."""
    progress = _Progress()
    try:
        yield from _chunks(response, secrets, watch, progress)
    except UpstreamError:
        raise
    except httpx2.TimeoutException:
        if not progress.finished:
            what = "went silent mid-answer" if progress.started else "sent no first token in time"
            raise UpstreamTimeout(f"The language model's stream {what}") from None
    except Exception:
        # The connection dropped or sent a malformed chunked body.
        if not progress.finished:
            raise UpstreamUnavailable("The language model's stream broke off") from None
    finally:
        close()
    if not progress.finished:
        raise UpstreamUnavailable("The language model's stream ended before its answer did")


@dataclass
class _Progress:
    started: bool = False  # the answer's first token came
    finished: bool = False  # its finish_reason came
    usage: bool = False  # its usage came


def _chunks(response: Any, secrets: Sequence[str], watch: StreamWatch, progress: _Progress) -> Iterator[dict[str, Any]]:
    """upstream_chunks' reading: each event's chunk, the deadline moved as they come."""
    watch.by(watch.first_token_by)
    events = _sse_data(response.iter_lines())
    for data in events:
        if data == "[DONE]":
            _read_to_end(events)
            return
        chunk = _parsed(data, watch)
        if chunk is None:
            continue
        if chunk.get("error"):  # an error event inside the stream, as OpenAI sends one
            message = redact(str(_upstream_error_text(chunk)), secrets)
            if progress.finished:  # the answer is whole already: nothing to break
                log.warning("ignored an error event after the answer finished: %s", message)
                return
            raise UpstreamUnavailable(f"The language model reported an error: {message}")
        choices = chunk.get("choices") or ()
        progress.finished = progress.finished or any(c.get("finish_reason") for c in choices)
        progress.usage = progress.usage or bool(chunk.get("usage"))
        if not progress.started:
            progress.started = progress.finished or any(says_something(c) for c in choices)
        if progress.started:
            watch.until(watch.silence)
        yield chunk
        if progress.finished and progress.usage:
            watch.until(_TAIL_SECONDS)
            _read_to_end(events)
            return


# How long the end of a finished stream (its `[DONE]`) is waited for, to keep the connection.
_TAIL_SECONDS = 0.25


def says_something(choice: Mapping[str, Any]) -> bool:
    """True for a delta with anything but its role: text, tool calls, a refusal, or the
    reasoning some servers stream first (vLLM's and Ollama's `reasoning_content`)."""
    delta = choice.get("delta") or {}
    return any(value not in (None, "", [], {}) for key, value in delta.items() if key != "role")


def _parsed(data: str, watch: StreamWatch) -> dict[str, Any] | None:
    """The event's chunk, or None (logged and counted) for an event that is no JSON object."""
    try:
        chunk = json.loads(data)
    except ValueError:
        chunk = None
    if isinstance(chunk, dict):
        return chunk
    log.warning("skipped a malformed stream event from the language model (%d bytes)", len(data))
    watch.on_malformed()
    return None


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The data of each Server-Sent Event of a stream of lines (multi-line data joined)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


def _read_to_end(events: Iterator[str]) -> None:
    """Read what follows `data: [DONE]` to the body's end: OpenAI, vLLM and Ollama end it
    there, and a body read to its end hands its kept-alive connection back to the pool for
    the next call (closed early, the connection is thrown away and the next stream pays a
    new TCP and TLS handshake). A few events at most; nothing that goes wrong here matters."""
    with suppress(Exception):
        for _ in itertools.islice(events, 4):
            pass


def _upstream_error_text(chunk: Mapping[str, Any]) -> Any:
    error = chunk.get("error")
    return error.get("message", error) if isinstance(error, Mapping) else error
