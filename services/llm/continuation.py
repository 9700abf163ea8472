"""A routed stream: relayed from the deployment that opened it, and continued elsewhere
when that deployment fails mid-answer, so the client sees one whole answer or an honest
error, never a cut answer passed off as complete.

When the stream breaks (reset, cut, silent past the stall detector) before any of the
answer arrived, the call starts over on the next deployment (RoutedCall's rules). When
part of the answer was relayed, a deployment that accepts a continuation gets the
conversation with the partial answer as the assistant's last message (`prefill`, with
its `prefill_extra_body`), or followed by its `continuation_instruction`, and only its
new text is relayed, under the first chunk's id. A deployment that accepts neither is
never sent one. Tool calls and refusals are not continued. With nowhere to continue,
the stream ends with the failure (the pipeline sends the in-band error event: no
`[DONE]`, no `finish_reason: stop`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from services.llm.errors import UpstreamError
from services.llm.sse_reader import StreamWatch, says_something
from services.llm.types import ChatStream

if TYPE_CHECKING:
    from services.llm.call import RoutedCall
    from services.llm.targets import Target


class RoutedStream:
    """One client stream over one or more upstream streams (see the module's docstring)."""

    def __init__(self, call: RoutedCall) -> None:
        self.call = call
        self.chat: ChatStream | None = None
        self.target: Target | None = None
        self.chunks: Iterator[dict[str, Any]] = iter(())
        self.started = 0.0
        self._close: Callable[[], None] = lambda: None
        self._first_id: str | None = None
        self._continuing = False  # chunks now relayed continue a stream the client has
        self._reasoned = False  # reasoning (no answer text) reached the client
        self._ended = False

    def open(self) -> Iterator[dict[str, Any]]:
        """Open the first upstream stream (raising when none opens); the chunks to relay.
        The caller wraps them in the client's ChatStream and sets `chat` to it."""
        self._start(self.call.messages, self.call.params, continuing=False)
        return self._relay()

    def close(self) -> None:
        """End the upstream stream now relayed (the client went away); its attempt is kept
        as `disconnected`, so the exchange still says which deployment served it."""
        if not self._ended and self.target is not None:
            self._ended = True
            self.call.ended(self.target, self.started, "disconnected")
        self._close()

    def _start(self, messages: list[dict[str, Any]], params: dict[str, Any], *, continuing: bool) -> None:
        """Open a stream on the first deployment that opens one (RoutedCall's order)."""
        call = self.call
        for target, left in call.tries(continuing=continuing):
            t, started = target.spec.timeouts, time.monotonic()
            watch = StreamWatch(
                # The first token within the deployment's wait and the call's deadline.
                first_token_by=started + min(t.first_token, left),
                silence=t.silence,
                ends_at=started + t.total,
                on_malformed=target.count_malformed,
            )
            sent, options = self._continuation(target, messages, params) if continuing else (messages, params)
            release = call.pool.take(target)  # in flight until this stream ends
            try:
                self.chunks, close = target.chat.stream(
                    sent,
                    model=target.upstream_model(call.requested),
                    watch=watch,
                    timeout=target.timeout(left, stream=True),
                    **options,
                )
            except UpstreamError as exc:
                release()
                call.attempt_failed(target, exc, started, continuing=continuing)
                continue
            except BaseException:
                release()
                raise
            self._close = _both(close, release)
            # A stream after the first (a restart or a continuation) joins the one relayed.
            self.target, self.started = target, started
            self._continuing = continuing or self._first_id is not None
            if self.chat is not None:
                self.chat.deployment = target.name
            return

    def _continuation(
        self, target: Target, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The request that continues the partial answer on `target`."""
        partial = {"role": "assistant", "content": "".join(self.chat.parts)}
        if target.spec.capabilities.prefill:
            extra = {**(params.get("extra_body") or {}), **target.spec.prefill_extra_body}
            return [*messages, partial], {**params, "extra_body": extra} if extra else params
        instruction = {"role": "user", "content": target.spec.continuation_instruction}
        return [*messages, partial, instruction], params

    def _relay(self) -> Iterator[dict[str, Any]]:
        try:
            while True:
                try:
                    for chunk in self.chunks:
                        if self._continuing:
                            chunk = self._as_continued(chunk)
                            if chunk is None:
                                continue
                        elif self._first_id is None:
                            self._first_id = chunk.get("id")
                        if not self._reasoned:
                            self._reasoned = _reasons(chunk)
                        yield chunk
                except UpstreamError as exc:
                    self._close()  # the broken stream: no longer in flight
                    self._reopen(exc)
                    continue
                self._ended = True
                self._close()
                self.call.succeeded(self.target, self.started)
                return
        finally:
            self._close()  # however the relay ends: nothing left open or counted in flight

    def _reopen(self, exc: UpstreamError) -> None:
        """After a mid-stream failure: start over (nothing of the answer yet), continue the
        answer on a deployment that can, or raise the failure (see the module's docstring)."""
        chat, call = self.chat, self.call
        said = any(chat.parts)
        call.failed(self.target, exc, self.started, outcome="cut" if said or self._reasoned else None)
        several = (call.params.get("n") or 1) > 1  # their texts are mixed in chat.parts
        if chat.tool_calls or chat.refusal_parts or several or (self._reasoned and not said):
            # Not continued: the client has what no other deployment can carry on.
            self._ended = True
            raise call.final_error(exc)
        if not said:
            call.after_failure(self.target, exc)
            self._start(call.messages, call.params, continuing=False)
            return
        call.spent.add(self.target.name)
        call.deadline = time.monotonic() + call.settings.deadline_seconds  # the continuation's own
        try:
            self._start(call.messages, call.params, continuing=True)
        except UpstreamError:
            # Nowhere to continue: the client is told of the cut, not of the continuations.
            raise call.final_error(exc) from None

    def _as_continued(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """A continuation's chunk as part of the first stream: its id, no second `role`;
        None for one that then says nothing."""
        if self._first_id is not None:
            chunk["id"] = self._first_id
        choices = chunk.get("choices") or ()
        for choice in choices:
            (choice.get("delta") or {}).pop("role", None)
        says = chunk.get("usage") or any(says_something(c) or c.get("finish_reason") for c in choices)
        return chunk if says else None


def _reasons(chunk: dict[str, Any]) -> bool:
    """True for a chunk with reasoning in it (vLLM's and Ollama's `reasoning_content`)."""
    return any((c.get("delta") or {}).get("reasoning_content") for c in chunk.get("choices") or ())


def _both(close: Callable[[], None], release: Callable[[], None]) -> Callable[[], None]:
    """Close the upstream stream and stop counting it in flight, however often called."""

    def both() -> None:
        try:
            close()
        finally:
            release()

    return both
