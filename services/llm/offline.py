"""A deterministic stand-in model, for running the service with no upstream configured."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

from services.llm.types import ChatStream, Completion
from services.prices import OFFLINE_MODEL  # the name the price book knows as free
from services.tokens import estimate_message_tokens, text_of


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
        """The model in a few words, for the start-up log line."""
        return "the built-in offline model (no upstream configured)"

    def serves(self, model: str) -> bool:
        """Any model name: the offline model answers them all."""
        return True

    def model_names(self) -> None:
        """None: any model name is served."""
        return None

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
