"""A streamed chat completion's body read as OpenAI's chunks: Server-Sent Events, one JSON
chunk each, until `data: [DONE]`.

Each chunk is parsed once into a dict, with no SDK object built and dumped again per
chunk: under load that was most of a stream's CPU. This reader is what a `ChatStream`
iterates; it calls nothing above it (the client that opened the call, the stream's owner).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any

from logformat import redact
from services.llm.errors import UpstreamError, UpstreamUnavailable


def upstream_chunks(response: Any, close: Callable[[], None], secrets: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The chunks of a streamed chat completion's body (an httpx2 response) as dicts, until
    `data: [DONE]`; an UpstreamError (its message without `secrets`) when the stream breaks
    or ends before the answer does. `close` is called when the chunks end, however they end."""
    finished = False
    try:
        events = _sse_data(response.iter_lines())
        for data in events:
            if data == "[DONE]":
                _read_to_end(events)
                break
            chunk = json.loads(data)
            if chunk.get("error"):  # an error event inside the stream, as OpenAI sends one
                message = redact(str(_upstream_error_text(chunk)), secrets)
                raise UpstreamUnavailable(f"The language model reported an error: {message}")
            finished = finished or any(c.get("finish_reason") for c in chunk.get("choices") or [])
            yield chunk
    except UpstreamError:
        raise
    except ValueError:
        raise UpstreamUnavailable("The language model sent a stream event that is not valid JSON") from None
    except Exception:
        # The connection dropped, stalled past the timeout, or sent a malformed chunked body.
        raise UpstreamUnavailable("The language model's stream broke off") from None
    finally:
        close()
    if not finished:
        raise UpstreamUnavailable("The language model's stream ended before its answer did")


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
