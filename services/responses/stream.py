"""The Responses API's stream: chat completion chunks in, Responses stream events out, in
OpenAI's order, each rendered as Server-Sent Events by routes/sse.py's `typed_event`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

from schemas import ResponseRequest
from services.responses.items import Item, function_call_item, new_id, output_item_id, output_text_part
from services.responses.objects import (
    finish_status,
    output_logprobs,
    response_object,
    usage_object,
    wants_logprobs,
)


class ResponseStreamTranslator:
    """Chat completion chunks in, Responses API stream events out, in OpenAI's order.

    `start()` gives response.created and response.in_progress; `feed(chunk)` the events one chunk
    makes (output_item.added, content_part.added, output_text.delta, function_call_arguments.delta,
    and the .done events of an item when the next one begins); `finish()` closes what is open and
    ends with response.completed (or response.incomplete when the reply hit max_output_tokens);
    `fail(message)` ends with response.failed instead. Each event is a dict with "type" and a
    "sequence_number" counting from 0; the route renders it (routes/sse.py). feed/finish/fail start the stream
    themselves when start() was not called. `output` holds the items as they stand.

    `model` names the model until a chunk names the one answering (the default model, for a
    request that named none). Function calls beyond the request's max_tool_calls are left out
    (the first ones to arrive are kept), and text deltas carry their logprobs when the request
    includes them.
    """

    def __init__(
        self,
        request: ResponseRequest,
        *,
        response_id: str | None = None,
        created_at: int | None = None,
        model: str | None = None,
    ):
        self.request = request
        self.response_id = response_id or new_id("resp")
        self.created_at = created_at if created_at is not None else int(time.time())
        self.model = request.model or model
        self.output: list[Item] = []
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.service_tier: str | None = None  # the one the upstream says it used
        self._logprobs = wants_logprobs(request)
        self._sequence = 0
        self._started = False
        self._ended = False
        self._open: Item | None = None  # the output item now streaming
        self._part: dict[str, Any] | None = None  # the open item's content part now streaming
        self._calls: dict[int, Item] = {}  # chat tool_call index -> its function_call item

    def response(self, status: str = "in_progress", **details: Any) -> dict[str, Any]:
        """The response as it stands (output and usage only once it has ended)."""
        ended = status != "in_progress"
        return response_object(
            self.request,
            response_id=self.response_id,
            created_at=self.created_at,
            model=self.model,
            output=self.output if ended else [],
            usage=self.usage if ended else None,
            status=status,
            service_tier=self.service_tier,
            **details,
        )

    def start(self) -> list[dict[str, Any]]:
        """response.created and response.in_progress, the first time only."""
        if self._started:
            return []
        self._started = True
        return [
            self._event("response.created", response=self.response()),
            self._event("response.in_progress", response=self.response()),
        ]

    def compaction(self, item: Item) -> list[dict[str, Any]]:
        """A compaction made before the model was called, as the output's first item:
        output_item.added, response.compaction.compacting, output_item.done."""
        events = self.start()
        self.output.append(item)
        where = {"item_id": item["id"], "output_index": len(self.output) - 1}
        return events + [
            self._event("response.output_item.added", output_index=where["output_index"], item=item),
            self._event("response.compaction.compacting", **where),
            self._event("response.output_item.done", output_index=where["output_index"], item=item),
        ]

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The events one chat.completion.chunk makes (text, refusal and tool-call deltas; usage kept)."""
        self.model = chunk.get("model") or self.model
        self.service_tier = chunk.get("service_tier") or self.service_tier
        events = self.start()
        if chunk.get("usage"):
            self.usage = usage_object(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # one choice is all a response has
            delta = choice.get("delta") or {}
            if delta.get("content"):
                logprobs = output_logprobs(choice.get("logprobs")) if self._logprobs else []
                events += self._text("output_text", delta["content"], logprobs)
            if delta.get("refusal"):
                events += self._text("refusal", delta["refusal"])
            for fragment in delta.get("tool_calls") or []:
                events += self._tool_call(fragment)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return events

    def finish(self) -> list[dict[str, Any]]:
        """Close the open item and end with response.completed (or response.incomplete), usage included.

        Nothing once the stream has ended (finish or fail already called).
        """
        if self._ended:
            return []
        events, self._ended = self.start(), True
        # An empty reply is still one (empty) message, as when not streamed.
        if all(item["type"] == "compaction" for item in self.output):
            events += self._open_message() + self._open_part("output_text")
        events += self._close_item()
        status, reason = finish_status(self.finish_reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return events + [self._event(kind, response=self.response(status, incomplete_reason=reason))]

    def fail(self, message: str, code: str = "server_error") -> list[dict[str, Any]]:
        """End with response.failed: error {"code", "message"}, the partial items marked incomplete.

        Nothing once the stream has ended (finish or fail already called).
        """
        if self._ended:
            return []
        events = self.start()
        self._cut_short()
        error = {"code": code, "message": message}
        return events + [self._event("response.failed", response=self.response("failed", error=error))]

    def cancel(self) -> dict[str, Any]:
        """The response as it stood when its client left mid-stream: "cancelled", its partial
        items marked incomplete. No event: nobody is listening."""
        self._started = True
        self._cut_short()
        return self.response("cancelled")

    def _cut_short(self) -> None:
        self._ended = True
        for item in self.output:
            if item.get("status") == "in_progress":
                item["status"] = "incomplete"
        self._open = self._part = None

    # -- the events -------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        # Deep copies: the items keep changing after the event is made, the event must not.
        event = {"type": kind, "sequence_number": self._sequence, **copy.deepcopy(fields)}
        self._sequence += 1
        return event

    def _where(self, item: Item) -> dict[str, Any]:
        index = next(i for i, candidate in enumerate(self.output) if candidate is item)
        return {"item_id": item["id"], "output_index": index}

    def _add_item(self, item: Item) -> list[dict[str, Any]]:
        events = self._close_item()
        item["id"] = output_item_id(self.response_id, item["type"], len(self.output))  # findable by its id
        self.output.append(item)
        self._open = item
        return events + [self._event("response.output_item.added", output_index=len(self.output) - 1, item=item)]

    def _close_item(self) -> list[dict[str, Any]]:
        item, events = self._open, self._close_part()
        if item is None:
            return events
        if item["type"] == "function_call":
            args = item["arguments"]
            events.append(self._event("response.function_call_arguments.done", **self._where(item), arguments=args))
        item["status"] = "completed" if finish_status(self.finish_reason)[0] == "completed" else "incomplete"
        self._open = None
        where = self._where(item)
        return events + [self._event("response.output_item.done", output_index=where["output_index"], item=item)]

    def _open_message(self) -> list[dict[str, Any]]:
        return self._add_item(
            {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        )

    def _open_part(self, kind: str) -> list[dict[str, Any]]:
        events = self._close_part()
        if kind == "refusal":
            part: dict[str, Any] = {"type": "refusal", "refusal": ""}
        else:
            part = output_text_part("")
        assert self._open is not None
        self._open["content"].append(part)
        self._part = part
        where = {**self._where(self._open), "content_index": len(self._open["content"]) - 1}
        return events + [self._event("response.content_part.added", **where, part=part)]

    def _close_part(self) -> list[dict[str, Any]]:
        part, item = self._part, self._open
        if part is None or item is None:
            return []
        self._part = None
        where = {**self._where(item), "content_index": len(item["content"]) - 1}
        if part["type"] == "refusal":
            done = self._event("response.refusal.done", **where, refusal=part["refusal"])
        else:
            done = self._event("response.output_text.done", **where, text=part["text"], logprobs=part["logprobs"])
        return [done, self._event("response.content_part.done", **where, part=part)]

    def _text(self, kind: str, delta: str, logprobs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        events = [] if self._open is not None and self._open["type"] == "message" else self._open_message()
        if self._part is None or self._part["type"] != kind:
            events += self._open_part(kind)
        assert self._open is not None and self._part is not None
        where = {**self._where(self._open), "content_index": len(self._open["content"]) - 1}
        if kind == "refusal":
            self._part["refusal"] += delta
            return events + [self._event("response.refusal.delta", **where, delta=delta)]
        self._part["text"] += delta
        self._part["logprobs"] += logprobs or []
        return events + [self._event("response.output_text.delta", **where, delta=delta, logprobs=logprobs or [])]

    def _tool_call(self, fragment: Mapping[str, Any]) -> list[dict[str, Any]]:
        function = fragment.get("function") or {}
        index = fragment.get("index", 0)
        item, events = self._calls.get(index), []
        if item is None:
            if len(self._calls) == self.request.max_tool_calls:
                return []  # beyond max_tool_calls: ignored, as OpenAI ignores further calls
            call_id = fragment.get("id") or new_id("call")
            item = function_call_item(call_id, function.get("name") or "", "", status="in_progress")
            self._calls[index] = item
            events = self._add_item(item)
        elif not item["name"] and function.get("name"):
            item["name"] = function["name"]
        arguments = function.get("arguments")
        if arguments:
            item["arguments"] += arguments
            # A fragment for a call already closed (an upstream interleaving its calls) still
            # reaches the final response; it cannot be streamed after that call's .done events.
            if item is self._open:
                events.append(
                    self._event("response.function_call_arguments.delta", **self._where(item), delta=arguments)
                )
        return events
