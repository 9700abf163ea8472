"""What a chat completion call gives back: a whole reply (`Completion`) or a stream of
chunks (`ChatStream`) that sums itself up into one. The same for every client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Attempt:
    """One call the router made to one deployment for an exchange, as the attempts table
    records it. `outcome` is "ok" (it answered), "cut" (a stream that broke off after some
    of the answer; the answer was continued elsewhere), or the failure's kind: the
    UpstreamError class name ("UpstreamRateLimited", "UpstreamTimeout", ...)."""

    deployment: str
    model: str
    outcome: str
    latency_ms: int
    status_code: int | None = None
    error: str | None = None

    def as_row(self) -> dict[str, Any]:
        """The attempt as JSON-ready columns (the journal keeps it so)."""
        return {
            "deployment": self.deployment,
            "model": self.model,
            "outcome": self.outcome,
            "latency_ms": self.latency_ms,
            "status_code": self.status_code,
            "error": self.error,
        }


def cached_tokens(usage: dict[str, Any]) -> int | None:
    """The cached prompt tokens an OpenAI `usage` object reports, or None."""
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and not isinstance(cached, bool) else None


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
    # The deployment that answered and every attempt the router made (see Attempt).
    deployment: str | None = None
    attempts: Sequence[Attempt] = field(default=(), compare=False)
    # Prompt tokens the upstream served from its cache (usage.prompt_tokens_details), when it says.
    cached_tokens: int | None = None
    # When it was made (Unix seconds), as chat.completion's `created` says.
    created: int = field(default_factory=lambda: int(time.time()), compare=False)

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
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": self.message(), "finish_reason": self.finish_reason or "stop"}],
            "usage": self.usage(),
        }

    def usage(self) -> dict[str, int | None]:
        """The token counts in OpenAI's `usage` shape (None where the upstream gave none)."""
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
        # Filled in by the router as it goes: the deployment now answering, every attempt.
        self.deployment: str | None = None
        self.attempts: list[Attempt] = []

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
        """The reply's text received so far."""
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
            deployment=self.deployment,
            attempts=tuple(self.attempts),
            cached_tokens=cached_tokens(self.usage),
        )

    def close(self) -> None:
        """End the upstream stream early (the client went away)."""
        self._close()
