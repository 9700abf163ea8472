"""Chat completions through the official `openai` SDK: OpenAI, Azure OpenAI, or any
OpenAI-compatible server (Ollama, vLLM). Calls and streams, the SDK's errors mapped.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx2
import openai
from openai.resources.chat.completions import Completions

from services.llm.errors import UpstreamUnavailable, mapped_errors
from services.llm.http_pool import PoolBalancer, watched_stream
from services.llm.sse_reader import StreamWatch, upstream_chunks
from services.llm.types import Attempt, Completion, cached_tokens

# What `chat.completions.create` accepts, and which of those are request options rather
# than fields of the body (with the name `client.post`'s options give them).
_REQUEST_OPTIONS = {
    "extra_body": "extra_json",
    "extra_headers": "headers",
    "extra_query": "params",
    "timeout": "timeout",
}
_CREATE_PARAMS = frozenset(inspect.signature(Completions.create).parameters) - {"self", "messages", "model"}


class OpenAIChat:
    """One deployment's chat completions through the official SDK (OpenAI, Azure or
    OpenAI-compatible): one call, no retries of its own (the router's loop is the one)."""

    def __init__(
        self,
        client: openai.OpenAI,
        secrets: Sequence[str | None],
        *,
        pools: Sequence[openai.OpenAI] = (),
    ) -> None:
        """`client` makes the calls; with `pools`, copies of it (each with its own HTTP
        client) share them: each call goes to the one with the fewest calls in flight,
        the first on a tie (`PoolBalancer`), so light traffic keeps reusing one pool's
        connections and a burst spreads over all of them."""
        self.client = client
        self._secrets = tuple(s for s in secrets if s)
        self._clients = (client, *pools)
        self._balancer = PoolBalancer(len(self._clients))

    def describe(self) -> str:
        """The upstream in a few words, for the start-up log line."""
        return f"{type(self.client).__name__} at {self.client.base_url}"

    def close(self) -> None:
        """Close the clients' pooled upstream connections."""
        for client in self._clients:
            client.close()

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str,
        deployment: str | None = None,
        attempts: Sequence[Attempt] = (),
        **params: Any,
    ) -> Completion:
        """Send the conversation upstream; return the reply or raise an UpstreamError.

        The SDK sends the call (its error types; `timeout` among `params` bounds it); its
        body, OpenAI's chat.completion, is parsed once into the dict `Completion.raw`
        holds, with no SDK object built and dumped back (see `_post`). The Completion names
        `deployment` and carries `attempts` (the router's list, complete once it returns).
        """
        pool = self._balancer.take()
        try:
            with mapped_errors(self._secrets):
                response = self._post(pool, messages, model, params, stream=False)
                body = json.loads(response.content)  # ValueError when it is not JSON: mapped above
        finally:
            self._balancer.give_back(pool)
        return self._completion_from(body, model, deployment, attempts)

    def stream(
        self, messages: list[dict[str, Any]], *, model: str, watch: StreamWatch, **params: Any
    ) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]:
        """Open a streamed completion (usage always requested): its chunks and the function
        that closes it early. Errors opening it raise here; later ones from the chunks.

        The SDK opens the call (its error types); the body is then read as Server-Sent
        Events by `upstream_chunks` (sse_reader.py), each chunk parsed once into a dict,
        with no SDK object built and dumped again per chunk, under `watch`'s deadlines.
        """
        params = {**params, "stream": True, "stream_options": {"include_usage": True}}
        pool = self._balancer.take()
        try:
            with mapped_errors(self._secrets):
                response = self._post(pool, messages, model, params, stream=True)
        except BaseException:
            self._balancer.give_back(pool)
            raise
        close = self._balancer.closer(pool, response)
        watch.stream = watched_stream(response)
        return upstream_chunks(response, close, self._secrets, watch), close

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

    @staticmethod
    def _completion_from(
        body: Any, requested_model: str, deployment: str | None = None, attempts: Sequence[Attempt] = ()
    ) -> Completion:
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
            deployment=deployment,
            attempts=attempts,
            cached_tokens=cached_tokens(usage),
        )
