"""The LLM behind the service: OpenAI, Azure OpenAI, any OpenAI-compatible server, or offline.

One client per process, built by create_app and kept in app.extensions["llm"]. Every
upstream failure is turned into an UpstreamError subclass carrying the HTTP status the
service answers with and a message that never contains a credential.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import logging
import select
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httpcore2
import httpx2
import openai
from openai.resources.chat.completions import Completions

from config import uses_offline_model
from logformat import redact
from services.tokens import estimate_message_tokens, text_of

log = logging.getLogger(__name__)

OFFLINE_MODEL = "offline"


@dataclass(frozen=True)
class Completion:
    """What the model answered, with the identifiers and usage we record."""

    text: str
    model: str
    completion_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    # The upstream's whole chat.completion object, for the OpenAI-compatible route.
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    # The model's tool calls (OpenAI's shape) and refusal, when it made any.
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None
    finish_reason: str | None = None

    def message(self) -> dict[str, Any]:
        """The assistant message as OpenAI's chat API writes it: what is stored and replayed."""
        content = self.text if self.text or not self.tool_calls else None
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.refusal:
            message["refusal"] = self.refusal
        return message

    def as_chat_completion(self) -> dict[str, Any]:
        """The answer in OpenAI's chat.completion shape (the upstream's own, when there is one)."""
        if self.raw is not None:
            return self.raw
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "message": self.message(), "finish_reason": self.finish_reason or "stop"}],
            "usage": self.usage(),
        }

    def usage(self) -> dict[str, int | None]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


class ChatStream:
    """A streamed completion: iterate for OpenAI chunk dicts; then `completion()` sums them up.

    `close()` ends the upstream stream early (the client went away).
    """

    def __init__(self, chunks: Iterator[dict[str, Any]], model: str, close: Callable[[], None]) -> None:
        self._chunks = chunks
        self._close = close
        self.model = model
        self.completion_id: str | None = None
        self.parts: list[str] = []
        self.refusal_parts: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for chunk in self._chunks:
            self.completion_id = chunk.get("id") or self.completion_id
            self.model = chunk.get("model") or self.model
            for choice in chunk.get("choices") or []:
                self._take(choice)
            if chunk.get("usage"):
                self.usage = chunk["usage"]
            yield chunk

    def _take(self, choice: dict[str, Any]) -> None:
        """Add one choice's delta to the reply: text, refusal, tool call fragments."""
        delta = choice.get("delta") or {}
        if delta.get("content"):
            self.parts.append(delta["content"])
        if delta.get("refusal"):
            self.refusal_parts.append(delta["refusal"])
        for fragment in delta.get("tool_calls") or []:
            call = self.tool_calls.setdefault(
                fragment.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = fragment.get("id") or call["id"]
            function = fragment.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        self.finish_reason = choice.get("finish_reason") or self.finish_reason

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def completion(self) -> Completion:
        """What has been received so far, as a Completion."""
        return Completion(
            text=self.text,
            model=self.model,
            completion_id=self.completion_id,
            prompt_tokens=self.usage.get("prompt_tokens"),
            completion_tokens=self.usage.get("completion_tokens"),
            total_tokens=self.usage.get("total_tokens"),
            tool_calls=[self.tool_calls[i] for i in sorted(self.tool_calls)] or None,
            refusal="".join(self.refusal_parts) or None,
            finish_reason=self.finish_reason,
        )

    def close(self) -> None:
        self._close()


class UpstreamError(Exception):
    """The upstream call failed; `status_code` is what our client receives."""

    status_code = 502

    def __init__(
        self, message: str, *, retry_after: int | None = None, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        # The upstream's own `param` and `code` of a rejected request, passed on to the client.
        self.param = param
        self.code = code


class UpstreamTimeout(UpstreamError):
    status_code = 504


class UpstreamUnavailable(UpstreamError):
    """Unreachable, a 5xx, or a reply we cannot use."""

    status_code = 502


class UpstreamAuthFailed(UpstreamError):
    status_code = 502


class UpstreamRateLimited(UpstreamError):
    status_code = 503


class UpstreamRejected(UpstreamError):
    """The upstream refused the request itself (for example: context too long)."""

    status_code = 400


def _upstream_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
    return f"upstream answered HTTP {exc.status_code}"


def _upstream_error_field(exc: openai.APIStatusError, name: str) -> str | None:
    """A string field (`param`, `code`) of the upstream's error body, if it has one."""
    body = exc.body if isinstance(exc.body, Mapping) else {}
    error = body.get("error", body)
    value = error.get(name) if isinstance(error, Mapping) else None
    return value if isinstance(value, str) and len(value) <= 200 else None


# What `chat.completions.create` accepts, and which of those are request options rather
# than fields of the body (with the name `client.post`'s options give them).
_REQUEST_OPTIONS = {
    "extra_body": "extra_json",
    "extra_headers": "headers",
    "extra_query": "params",
    "timeout": "timeout",
}
_CREATE_PARAMS = frozenset(inspect.signature(Completions.create).parameters) - {"self", "messages", "model"}


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


def _retry_after_seconds(exc: openai.APIStatusError, default: int = 10) -> int:
    raw = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return max(1, int(float(raw))) if raw else default
    except ValueError:
        return default


class OpenAIChat:
    """Chat completions through the official SDK (OpenAI, Azure or OpenAI-compatible)."""

    def __init__(
        self,
        client: openai.OpenAI,
        default_model: str,
        secrets: Sequence[str | None],
        *,
        pools: Sequence[openai.OpenAI] = (),
    ) -> None:
        """`client` makes the calls; with `pools`, copies of it (each with its own HTTP
        client) share them: each call goes to the one with the fewest calls in flight,
        the first on a tie, so light traffic keeps reusing one pool's connections and a
        burst spreads over all of them."""
        self.client = client
        self.default_model = default_model
        self.offline = False
        self._secrets = tuple(s for s in secrets if s)
        self._clients = (client, *pools)
        self._in_flight = [0] * len(self._clients)
        self._in_flight_lock = threading.Lock()

    def describe(self) -> str:
        return f"{type(self.client).__name__} at {self.client.base_url}"

    def close(self) -> None:
        """Close the clients' pooled upstream connections."""
        for client in self._clients:
            client.close()

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Turn the SDK's exceptions into UpstreamError subclasses, without credentials."""
        try:
            yield
        except openai.APITimeoutError:
            raise UpstreamTimeout("The language model did not answer in time") from None
        except openai.APIConnectionError:
            raise UpstreamUnavailable("The language model could not be reached") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            raise UpstreamAuthFailed(
                "The language model rejected this service's credentials; the operator must fix the API key"
            ) from None
        except openai.RateLimitError as exc:
            raise UpstreamRateLimited(
                "The language model is over its rate limit or quota; retry later",
                retry_after=_retry_after_seconds(exc),
            ) from None
        except openai.APIStatusError as exc:
            if 400 <= exc.status_code < 500:
                message = redact(_upstream_message(exc), self._secrets)
                param, code = _upstream_error_field(exc, "param"), _upstream_error_field(exc, "code")
                raise UpstreamRejected(
                    f"The language model rejected the request: {message}", param=param, code=code
                ) from None
            raise UpstreamUnavailable(f"The language model failed (HTTP {exc.status_code})") from None
        except ValueError:
            # The SDK raises ValueError (JSONDecodeError) for a body that is not JSON.
            raise UpstreamUnavailable("The language model sent a reply that is not valid JSON") from None
        except openai.APIError as exc:
            # An error event inside a stream, or a reply the SDK could not use.
            raise UpstreamUnavailable(
                f"The language model reported an error: {redact(str(exc), self._secrets)}"
            ) from None

    def complete(self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any) -> Completion:
        """Send the conversation upstream; return the reply or raise an UpstreamError.

        The SDK sends the call (its retries, its error types); its body, OpenAI's
        chat.completion, is parsed once into the dict `Completion.raw` holds, with no SDK
        object built and dumped back (see `_post`).
        """
        pool = self._take_pool()
        try:
            with self._mapped_errors():
                response = self._post(pool, messages, model or self.default_model, params, stream=False)
                body = json.loads(response.content)  # ValueError when it is not JSON: mapped above
        finally:
            self._give_back(pool)
        return self._completion_from(body, model or self.default_model)

    def stream(self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any) -> ChatStream:
        """Open a streamed completion (usage always requested); errors opening it raise here.

        The SDK opens the call (its retries, its error types); the body is then read as
        Server-Sent Events lines here, each chunk parsed once into a dict, with no SDK
        object built and dumped again per chunk: under load that was most of a stream's CPU.
        """
        params = {**params, "stream": True, "stream_options": {"include_usage": True}}
        pool = self._take_pool()
        try:
            with self._mapped_errors():
                response = self._post(pool, messages, model or self.default_model, params, stream=True)
        except BaseException:
            self._give_back(pool)
            raise
        released = []

        def close() -> None:  # the stream's end, however it ends: once
            response.close()
            if not released:
                released.append(True)
                self._give_back(pool)

        return ChatStream(self._chunks(response, close), model or self.default_model, close=close)

    def _take_pool(self) -> int:
        """The pool with the fewest calls in flight (the first on a tie), counted as busier."""
        with self._in_flight_lock:
            pool = min(range(len(self._in_flight)), key=self._in_flight.__getitem__)
            self._in_flight[pool] += 1
        return pool

    def _give_back(self, pool: int) -> None:
        with self._in_flight_lock:
            self._in_flight[pool] -= 1

    def _post(
        self, pool: int, messages: list[dict[str, Any]], model: str, params: dict[str, Any], *, stream: bool
    ) -> Any:
        """POST /chat/completions through the SDK's `client.post`; the httpx2 response.

        `client.post(..., cast_to=httpx2.Response)` is the SDK's documented way to make a
        request itself ("Making custom/undocumented requests"): the client's retries,
        timeout, headers, credentials (Azure's deployment URL too) and status errors
        (openai.APIStatusError and friends) are those of `chat.completions.create`. It
        skips two things `create` does per call: walking the messages through the SDK's
        recursive TypedDict transform (which, for the chat parameters, renames and
        reformats nothing: there are no aliases or formats in them, and plain dicts are
        what we send) and, for a non-streamed call, building a pydantic ChatCompletion only
        for us to dump it back to a dict. Together about a third of the call's CPU.
        """
        unknown = params.keys() - _CREATE_PARAMS
        if unknown:  # as `create` would: a misspelt parameter is a bug, not a field to send
            raise TypeError(f"unexpected chat completion parameters: {', '.join(sorted(unknown))}")
        body: dict[str, Any] = {"model": model, "messages": messages}
        options: dict[str, Any] = {"security": {"bearer_auth": True}}
        for name, value in params.items():
            if value is None:
                continue
            if name in _REQUEST_OPTIONS:
                options[_REQUEST_OPTIONS[name]] = value
            else:
                body[name] = value
        return self._clients[pool].post(
            "/chat/completions", body=body, options=options, cast_to=httpx2.Response, stream=stream
        )

    def _chunks(self, response: Any, close: Callable[[], None]) -> Iterator[dict[str, Any]]:
        """The upstream's chunks as dicts, until `data: [DONE]`; UpstreamError when it breaks."""
        finished = False
        try:
            events = _sse_data(response.iter_lines())
            for data in events:
                if data == "[DONE]":
                    _read_to_end(events)
                    break
                chunk = json.loads(data)
                if chunk.get("error"):  # an error event inside the stream, as OpenAI sends one
                    message = redact(str(_upstream_error_text(chunk)), self._secrets)
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

    @staticmethod
    def _completion_from(body: Any, requested_model: str) -> Completion:
        """The Completion of an upstream's chat.completion body (a dict, as parsed)."""
        choices = body.get("choices") if isinstance(body, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            raise UpstreamUnavailable("The language model sent a reply with no choices")
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        text = message.get("content")
        calls = message.get("tool_calls")
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Completion(
            tool_calls=list(calls) if isinstance(calls, list) and calls else None,
            refusal=message.get("refusal") or None,
            finish_reason=choice.get("finish_reason"),
            text=text if isinstance(text, str) else "",
            model=body.get("model") or requested_model,
            completion_id=body.get("id"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            total_tokens=usage.get("total_tokens"),
            raw=body,
        )


class OfflineChat:
    """A deterministic stand-in model: answers without any network, showing its context."""

    offline = True
    default_model = OFFLINE_MODEL

    def stream(self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any) -> ChatStream:
        """The same answer as complete(), a word per chunk, usage last (as OpenAI streams)."""
        answer = self.complete(messages)

        def chunks() -> Iterator[dict[str, Any]]:
            created = int(time.time())
            base = {"id": answer.completion_id, "object": "chat.completion.chunk", "created": created}
            words = answer.text.split(" ")
            # OpenAI's first chunk names the role (the SDKs' stream helpers need it).
            yield {
                **base,
                "model": OFFLINE_MODEL,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
            }
            for i, word in enumerate(words):
                delta = {"content": word + (" " if i < len(words) - 1 else "")}
                yield {**base, "model": OFFLINE_MODEL, "choices": [{"index": 0, "delta": delta}]}
            yield {**base, "model": OFFLINE_MODEL, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield {**base, "model": OFFLINE_MODEL, "choices": [], "usage": answer.usage()}

        return ChatStream(chunks(), OFFLINE_MODEL, close=lambda: None)

    def describe(self) -> str:
        return "the built-in offline model (no upstream configured)"

    def close(self) -> None:
        """Nothing to close: the offline model holds no connections."""

    def complete(self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any) -> Completion:
        """Answer from the messages alone: same input, same reply."""
        last_user = next((m for m in reversed(messages) if m["role"] == "user"), None)
        prompt = text_of(last_user.get("content")) if last_user else ""
        earlier = sum(1 for m in messages if m["role"] in ("user", "assistant")) - (1 if last_user else 0)
        text = (
            f"[offline model] You said: {prompt!r}. "
            f"I received {earlier} earlier message{'s' if earlier != 1 else ''} of this conversation."
        )
        prompt_tokens = sum(estimate_message_tokens(m) for m in messages)
        completion_tokens = estimate_message_tokens({"role": "assistant", "content": text})
        digest = hashlib.sha256(repr(messages).encode()).hexdigest()[:24]
        return Completion(
            text=text,
            model=OFFLINE_MODEL,
            completion_id=f"offline-{digest}",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class _ProbedStream(httpcore2.NetworkStream):
    """A pooled connection's stream whose readability probe never yields to gevent's hub.

    Each time a request starts or ends, httpcore2's pool walks its connections and asks
    every idle one whether its socket is readable (a server that closed it), with a
    zero-timeout `select.poll`. Under gevent that poll is gevent's cooperative one: it arms
    hub watchers for the socket and switches greenlets, inside the pool's lock, once per
    idle connection per request (at 32 clients, 7% of the worker's CPU). The operating
    system's poll with a zero timeout answers the same question without blocking.
    Everything else is the wrapped stream's.
    """

    def __init__(self, stream: httpcore2.NetworkStream, os_poll: Callable[[], Any]) -> None:
        self._stream = stream
        self._os_poll = os_poll

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        return _ProbedStream(self._stream.start_tls(ssl_context, server_hostname, timeout), self._os_poll)

    def get_extra_info(self, info: str) -> Any:
        if info != "is_readable":
            return self._stream.get_extra_info(info)
        sock = self._stream.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return True  # as httpcore2's own probe: no socket reads as closed by the server
        poll = self._os_poll()
        poll.register(fd, select.POLLIN)
        return bool(poll.poll(0))


class _ProbedBackend(httpcore2.SyncBackend):
    """httpcore2's own network backend, its streams wrapped in `_ProbedStream`."""

    def __init__(self, os_poll: Callable[[], Any]) -> None:
        self._os_poll = os_poll

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
        return _ProbedStream(super().connect_tcp(*args, **kwargs), self._os_poll)

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore2.NetworkStream:
        return _ProbedStream(super().connect_unix_socket(*args, **kwargs), self._os_poll)


# Upstream connection pools per process (see build_llm). Each is the SDK's default: at
# most 1,000 connections and 100 kept idle (each closed after 5 s idle).
UPSTREAM_POOLS = 32


def _gevent_os_poll() -> Callable[[], Any] | None:
    """The operating system's `select.poll` when gevent has patched `select` (its gunicorn
    worker), else None."""
    monkey = sys.modules.get("gevent.monkey")  # never import gevent where it is not in use
    if monkey is None or not monkey.is_module_patched("select"):
        return None
    return monkey.get_original("select", "poll")


def _http_client(os_poll: Callable[[], Any] | None, ssl_context: ssl.SSLContext) -> httpx2.Client:
    """The SDK's default HTTP client (its limits, redirects, proxies from the environment),
    verifying the upstream's certificate with `ssl_context`.

    With `os_poll` (under gevent), its connection pool probes idle connections with the
    operating system's poll (`_ProbedStream`). httpx2 builds the pool itself and takes no
    network backend, so it is set on the pool it built; if a later httpx2 names those
    attributes differently, the pool keeps its own backend (build_llm says so).
    """
    client = openai.DefaultHttpxClient(verify=ssl_context)
    pool = _pool_of(client)
    if os_poll is not None and type(getattr(pool, "_network_backend", None)) is httpcore2.SyncBackend:
        pool._network_backend = _ProbedBackend(os_poll)
    return client


def _pool_of(client: httpx2.Client) -> Any:
    """The httpcore2 connection pool httpx2 built for `client` (None if it is named otherwise)."""
    return getattr(getattr(client, "_transport", None), "_pool", None)


def _probed(client: httpx2.Client) -> bool:
    return isinstance(getattr(_pool_of(client), "_network_backend", None), _ProbedBackend)


def build_llm(config: Mapping[str, Any]) -> OpenAIChat | OfflineChat:
    """The process's one LLM client, chosen by the configuration."""
    if uses_offline_model(config):
        return OfflineChat()
    timeout = config["OPENAI_TIMEOUT"]
    retries = config["OPENAI_MAX_RETRIES"]
    # Several HTTP connection pools, each its own client's: httpcore2's pool walks all its
    # connections whenever a request starts or ends, so with N streams open one pool costs
    # O(N) per stream and O(N^2) in all (18% of the worker with 1,000 streams); N / 32 each.
    # They share one TLS context, the one httpx2 would make for each (the system's CAs, or
    # SSL_CERT_FILE / SSL_CERT_DIR): a context of its own costs each client 0.8 MiB and 20 ms.
    os_poll, ssl_context = _gevent_os_poll(), httpx2.create_ssl_context()
    http_clients = [_http_client(os_poll, ssl_context) for _ in range(UPSTREAM_POOLS)]
    if os_poll is not None and not _probed(http_clients[0]):
        log.warning(
            "httpx2 %s builds its connection pool differently: idle upstream connections are probed "
            "through gevent (slower under load, as correct)",
            httpx2.__version__,
        )
    if config.get("AZURE_OPENAI_ENDPOINT"):
        client: openai.OpenAI = openai.AzureOpenAI(
            azure_endpoint=config["AZURE_OPENAI_ENDPOINT"],
            api_key=config["AZURE_OPENAI_API_KEY"],
            api_version=config["OPENAI_API_VERSION"],
            timeout=timeout,
            max_retries=retries,
            http_client=http_clients[0],
        )
        secrets = (config["AZURE_OPENAI_API_KEY"],)
    else:
        # Local OpenAI-compatible servers (Ollama, vLLM) accept any key but the SDK needs one.
        client = openai.OpenAI(
            api_key=config.get("OPENAI_API_KEY") or "no-key-configured",
            base_url=config.get("OPENAI_BASE_URL") or None,
            timeout=timeout,
            max_retries=retries,
            http_client=http_clients[0],
        )
        secrets = (config.get("OPENAI_API_KEY"),)
    pools = [client.copy(http_client=http_client) for http_client in http_clients[1:]]
    return OpenAIChat(client, config["OPENAI_MODEL"], secrets, pools=pools)
