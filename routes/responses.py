"""OpenAI's Responses API (/v1/responses) over any chat-completions upstream, with the state
kept in this service's store: a thin route like every chat route's, and the translation
its input and answer need.

One response is one exchange of the chat pipeline: its input items become the turn's
messages, the `instructions` its leading system message, and the history is either the
chain behind `previous_response_id` (every earlier input and output, oldest first; the
earlier responses' instructions are not carried over) or the `conversation`'s stored
messages. The response row is written before the answer leaves, so a follow-up sent the
moment it arrives finds it.

Everything belongs to the client key that made it; another key gets the same 404 as for an
unknown id. The translation is pure functions: the route validates a `ResponseRequest` (schemas),
`input_items` turns its input into items (what is stored and what input_items.list
returns), `items_to_chat_messages` rebuilds the chat messages, `chat_params` the upstream
call's options, and the answer is `response_from_completion` or, streamed, the events of a
`ResponseStreamTranslator`. Items and responses are plain dicts in OpenAI's JSON shape; the
tests validate each against the openai SDK's own types.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, jsonify, stream_with_context
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy.exc import SQLAlchemyError

from auth import current_client_key, current_client_key_id
from database import unit_of_work
from errors import ApiError
from extensions import completion_limit, limiter
from routes.api_docs import KEY_REQUIRED, responses
from schemas import (
    FunctionCallItem,
    FunctionToolChoice,
    ItemListQuery,
    MessageItem,
    ResponsePath,
    ResponseRequest,
    TextFormatJSONObject,
    TextFormatJSONSchema,
)
from services.chat import ChatAnswer, ChatPipeline, ChatTurn, ResponseRecord
from services.client_keys import ClientKey
from services.llm import UpstreamError
from services.responses.items import Item, function_call_item, function_call_output_item, message_item, new_id
from services.responses.store import (
    conversation_exchanges,
    conversation_object,
    delete_response,
    response_chain,
    response_input_items,
    stored_response,
)
from telemetry import ExchangeReport, exchange_report

# Where max_output_tokens goes. OpenAI's chat API deprecated `max_tokens` and its reasoning models
# refuse it; `max_completion_tokens` also counts reasoning tokens, exactly as max_output_tokens does.
# An upstream that only knows `max_tokens` (older OpenAI-compatible servers) can be given that name.
MAX_TOKENS_PARAM = "max_completion_tokens"
# Chat image detail levels; the Responses API's "original" is nearest to "high".
_CHAT_IMAGE_DETAIL = {"auto": "auto", "low": "low", "high": "high", "original": "high"}


# -- input: request -> items ----------------------------------------------------------------


def input_items(request: ResponseRequest) -> list[Item]:
    """The request's input as stored items, each with an id (one user message for a string input).

    Message items come out as OpenAI lists them: user/system/developer content as input_text and
    input_image parts, assistant content as output_text/refusal parts; every item has "status":
    "completed". Ids the client sent are kept; the others are generated (msg_, fc_, fco_).
    """
    if isinstance(request.input, str):
        return [message_item("user", request.input)]
    items: list[Item] = []
    for item in request.input:
        if isinstance(item, MessageItem):
            parts = item.content if isinstance(item.content, str) else [p.model_dump() for p in item.content]
            items.append(message_item(item.role, parts, item_id=item.id))
        elif isinstance(item, FunctionCallItem):
            items.append(function_call_item(item.call_id, item.name, item.arguments, item_id=item.id))
        else:
            output = item.output if isinstance(item.output, str) else [p.model_dump() for p in item.output]
            items.append(function_call_output_item(item.call_id, output, item_id=item.id))
    return items


# -- items -> chat messages -----------------------------------------------------------------


def instructions_message(instructions: str | None, role: str = "system") -> dict[str, Any] | None:
    """The request's `instructions` as the leading chat message (None when there are none).

    "system" by default: every chat upstream knows it, and OpenAI treats it as "developer" for the
    models that have that role.
    """
    if instructions is None:
        return None
    return {"role": role, "content": instructions}


def chat_messages_for(
    request: ResponseRequest, items: Iterable[Mapping[str, Any]], *, developer_role: str = "system"
) -> list[dict[str, Any]]:
    """The chat messages for one call: the request's instructions, then the items (history, then input)."""
    leading = instructions_message(request.instructions, role=developer_role)
    return ([leading] if leading else []) + items_to_chat_messages(items, developer_role=developer_role)


def items_to_chat_messages(
    items: Iterable[Mapping[str, Any]], *, developer_role: str = "system"
) -> list[dict[str, Any]]:
    """Items (input items, earlier output items) as chat-completions messages, in order.

    One assistant turn is one chat message: an assistant text and the function calls next to it
    become {"role": "assistant", "content", "tool_calls": [...]}; a function_call_output becomes a
    "tool" message. "developer" messages are sent as `developer_role` (default "system", which
    every upstream knows). Raises ValueError for an item type that has no chat form.
    """
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type") or "message"
        if kind == "message" and item["role"] == "assistant":
            _add_assistant(messages, text=_assistant_text(item["content"]))
        elif kind == "message":
            role = developer_role if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _chat_content(item["content"])})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function", "function": {"name": item["name"]}}
            call["function"]["arguments"] = item["arguments"]
            _add_assistant(messages, tool_call=call)
        elif kind == "function_call_output":
            content = _tool_output_text(item["output"])
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
        else:
            raise ValueError(f"Item type '{kind}' has no chat-completions form")
    return messages


def _add_assistant(messages: list[dict[str, Any]], *, text: str | None = None, tool_call: Any = None) -> None:
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and (tool_call is not None or "tool_calls" in last):
        if text:
            last["content"] = (last.get("content") or "") + text
        if tool_call is not None:
            last.setdefault("tool_calls", []).append(tool_call)
        return
    if tool_call is not None:
        messages.append({"role": "assistant", "content": text or None, "tool_calls": [tool_call]})
    else:
        messages.append({"role": "assistant", "content": text or ""})


def _assistant_text(content: str | Sequence[Mapping[str, Any]]) -> str:
    # A refusal is what the model said: it stays in the history as text, which every upstream takes.
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or part.get("refusal") or "" for part in content)


def _chat_content(content: str | Sequence[Mapping[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts = [_chat_part(part) for part in content]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]  # a plain string: what every upstream takes, system messages included
    return parts


def _chat_part(part: Mapping[str, Any]) -> dict[str, Any]:
    if part["type"] == "input_image":
        detail = _CHAT_IMAGE_DETAIL.get(part.get("detail") or "auto", "auto")
        return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": detail}}
    return {"type": "text", "text": part.get("text") or ""}


def _tool_output_text(output: str | Sequence[Mapping[str, Any]]) -> str:
    if isinstance(output, str):
        return output
    return "".join(part.get("text") or "" for part in output)


def tool_pairing_error(items: Iterable[Mapping[str, Any]]) -> str | None:
    """OpenAI's 400 message when function calls and outputs do not pair up, else None.

    Every function_call_output needs an earlier function_call with its call_id, and every call
    needs its output before the next user, system or developer message (or the end): a chat
    upstream rejects anything else. Check the whole history plus the new input.
    """
    pending: dict[str, None] = {}
    for item in items:
        kind = item.get("type") or "message"
        if kind == "function_call":
            pending[item["call_id"]] = None
        elif kind == "function_call_output":
            if item["call_id"] not in pending:
                return f"No tool call found for function call output with call_id {item['call_id']}."
            del pending[item["call_id"]]
        elif kind == "message" and item.get("role") != "assistant" and pending:
            return f"No tool output found for function call {next(iter(pending))}."
    return f"No tool output found for function call {next(iter(pending))}." if pending else None


# -- request -> chat parameters -------------------------------------------------------------


def chat_params(request: ResponseRequest, *, max_tokens_param: str = MAX_TOKENS_PARAM) -> dict[str, Any]:
    """The chat-completions parameters for the request (no model, messages or stream; None left out).

    metadata and store are not sent: they are ours to keep, and on OpenAI they would store the
    chat completion there too. Tool settings go only with tools (OpenAI refuses them alone).
    """
    params: dict[str, Any] = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        max_tokens_param: request.max_output_tokens,
        "response_format": _response_format(request.text.format),
        "verbosity": request.text.verbosity,
        "reasoning_effort": request.reasoning.effort if request.reasoning else None,
        "user": request.user,
        "safety_identifier": request.safety_identifier,
    }
    if request.tools:
        params["tools"] = [
            {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
            for tool in request.tools
        ]
        params["tool_choice"] = _chat_tool_choice(request.tool_choice)
        params["parallel_tool_calls"] = request.parallel_tool_calls
    return {name: value for name, value in params.items() if value is not None}


def _response_format(text_format: Any) -> dict[str, Any] | None:
    if isinstance(text_format, TextFormatJSONSchema):
        schema = text_format.model_dump(by_alias=True, exclude={"type"}, exclude_none=True)
        return {"type": "json_schema", "json_schema": schema}
    if isinstance(text_format, TextFormatJSONObject):
        return {"type": "json_object"}
    return None  # plain text is the chat default


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, FunctionToolChoice):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


# -- chat completion -> response --------------------------------------------------------------


def usage_object(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage in the Responses shape (input/output tokens and their details); None when unknown."""
    if not usage or usage.get("prompt_tokens") is None or usage.get("completion_tokens") is None:
        return None
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": prompt_details.get("cached_tokens") or 0,
            "cache_write_tokens": prompt_details.get("cache_write_tokens") or 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


def finish_status(finish_reason: str | None) -> tuple[str, str | None]:
    """(response status, incomplete reason) for a chat finish_reason: "length" is max_output_tokens."""
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def output_items(
    text: str | None,
    refusal: str | None = None,
    tool_calls: Sequence[Mapping[str, Any]] = (),
    status: str = "completed",
) -> list[Item]:
    """A chat assistant message as output items: a message (output_text and/or refusal part), then function calls.

    A reply with neither text nor calls still gets its (empty) message, so a turn is never lost.
    """
    items: list[Item] = []
    if text or refusal or not tool_calls:
        content: list[dict[str, Any]] = []
        if text or not refusal:
            content.append({"type": "output_text", "text": text or "", "annotations": [], "logprobs": []})
        if refusal:
            content.append({"type": "refusal", "refusal": refusal})
        items.append(
            {"id": new_id("msg"), "type": "message", "role": "assistant", "status": status, "content": content}
        )
    for call in tool_calls:
        function = call.get("function") or {}
        call_id = call.get("id") or new_id("call")
        items.append(
            function_call_item(call_id, function.get("name") or "", function.get("arguments") or "", status=status)
        )
    return items


def output_items_to_chat_message(output: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A response's output items as the one assistant chat message to store (content and tool_calls)."""
    messages = items_to_chat_messages(output)
    if not messages:
        return {"role": "assistant", "content": ""}
    if len(messages) != 1:
        raise ValueError("A response's output must make one assistant message")
    return messages[0]


def request_echo(request: ResponseRequest) -> dict[str, Any]:
    """The request's settings as a response repeats them (instructions, tools, text, sampling, ...)."""
    reasoning = request.reasoning
    conversation_id = request.conversation_id
    return {
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "metadata": dict(request.metadata),
        "parallel_tool_calls": request.parallel_tool_calls,
        "previous_response_id": request.previous_response_id,
        "conversation": {"id": conversation_id} if conversation_id else None,
        "reasoning": {
            "effort": reasoning.effort if reasoning else None,
            "summary": reasoning.summary if reasoning else None,
        },
        "safety_identifier": request.safety_identifier,
        "store": request.store,
        "temperature": request.temperature,
        "text": request.text.model_dump(by_alias=True, exclude_none=True),
        "tool_choice": request.tool_choice
        if isinstance(request.tool_choice, str)
        else request.tool_choice.model_dump(),
        "tools": [tool.model_dump() for tool in request.tools],
        "top_p": request.top_p,
        "truncation": request.truncation,
        "user": request.user,
    }


def response_object(
    request: ResponseRequest,
    *,
    response_id: str,
    created_at: int,
    model: str,
    output: Sequence[Mapping[str, Any]],
    usage: Mapping[str, Any] | None = None,
    status: str = "completed",
    incomplete_reason: str | None = None,
    error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A `response` object (every field the SDK's Response requires), echoing the request's settings.

    status is "completed", "incomplete" (with incomplete_reason), "failed" (with error:
    {"code", "message"}) or "in_progress" (a stream's first events).
    """
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "background": False,
        "error": dict(error) if error else None,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "model": model,
        "output": copy.deepcopy(list(output)),
        "usage": dict(usage) if usage else None,
        **request_echo(request),
    }


def response_from_completion(
    request: ResponseRequest,
    completion: Mapping[str, Any],
    *,
    response_id: str | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """The response for a chat.completion dict (the upstream's, or `Completion.as_chat_completion()`).

    finish_reason "length" makes it "incomplete" (max_output_tokens) and "content_filter" too;
    anything else is "completed". The model is the one the upstream says answered.
    """
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    status, reason = finish_status(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    output = output_items(message.get("content"), message.get("refusal"), message.get("tool_calls") or (), item_status)
    return response_object(
        request,
        response_id=response_id or new_id("resp"),
        created_at=created_at if created_at is not None else int(time.time()),
        model=completion.get("model") or request.model,
        output=output,
        usage=usage_object(completion.get("usage")),
        status=status,
        incomplete_reason=reason,
    )


def failed_response(
    request: ResponseRequest,
    message: str,
    *,
    code: str = "server_error",
    response_id: str | None = None,
    created_at: int | None = None,
    output: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A "failed" response carrying {"code", "message"} (code one of the SDK's ResponseError codes)."""
    return response_object(
        request,
        response_id=response_id or new_id("resp"),
        created_at=created_at if created_at is not None else int(time.time()),
        model=request.model,
        output=output,
        status="failed",
        error={"code": code, "message": message},
    )


# -- streaming ------------------------------------------------------------------------------


def sse(event: Mapping[str, Any]) -> str:
    """One event as Server-Sent Events text, as OpenAI sends it: `event: <type>` then `data: <json>`."""
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n"


class ResponseStreamTranslator:
    """Chat completion chunks in, Responses API stream events out, in OpenAI's order.

    `start()` gives response.created and response.in_progress; `feed(chunk)` the events one chunk
    makes (output_item.added, content_part.added, output_text.delta, function_call_arguments.delta,
    and the .done events of an item when the next one begins); `finish()` closes what is open and
    ends with response.completed (or response.incomplete when the reply hit max_output_tokens);
    `fail(message)` ends with response.failed instead. Each event is a dict with "type" and a
    "sequence_number" counting from 0; render it with `sse()`. feed/finish/fail start the stream
    themselves when start() was not called. `output` holds the items as they stand.
    """

    def __init__(self, request: ResponseRequest, *, response_id: str | None = None, created_at: int | None = None):
        self.request = request
        self.response_id = response_id or new_id("resp")
        self.created_at = created_at if created_at is not None else int(time.time())
        self.model = request.model
        self.output: list[Item] = []
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
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

    def translate(self, chunks: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
        """Every event for a whole upstream stream; an exception from `chunks` passes through (then call fail)."""
        yield from self.start()
        for chunk in chunks:
            yield from self.feed(chunk)
        yield from self.finish()

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The events one chat.completion.chunk makes (text, refusal and tool-call deltas; usage kept)."""
        self.model = chunk.get("model") or self.model
        events = self.start()
        if chunk.get("usage"):
            self.usage = usage_object(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # one choice is all a response has
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text("output_text", delta["content"])
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
        if not self.output:  # an empty reply is still one (empty) message, as when not streamed
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
            if item["status"] == "in_progress":
                item["status"] = "incomplete"
        self._open = self._part = None

    def chat_message(self) -> dict[str, Any]:
        """The reply so far as the one assistant chat message to store."""
        return output_items_to_chat_message(self.output)

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
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
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
            done = self._event("response.output_text.done", **where, text=part["text"], logprobs=[])
        return [done, self._event("response.content_part.done", **where, part=part)]

    def _text(self, kind: str, delta: str) -> list[dict[str, Any]]:
        events = [] if self._open is not None and self._open["type"] == "message" else self._open_message()
        if self._part is None or self._part["type"] != kind:
            events += self._open_part(kind)
        assert self._open is not None and self._part is not None
        where = {**self._where(self._open), "content_index": len(self._open["content"]) - 1}
        if kind == "refusal":
            self._part["refusal"] += delta
            return events + [self._event("response.refusal.delta", **where, delta=delta)]
        self._part["text"] += delta
        return events + [self._event("response.output_text.delta", **where, delta=delta, logprobs=[])]

    def _tool_call(self, fragment: Mapping[str, Any]) -> list[dict[str, Any]]:
        function = fragment.get("function") or {}
        index = fragment.get("index", 0)
        item, events = self._calls.get(index), []
        if item is None:
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


# -- the flow: state, the pipeline, the response's row -----------------------------------------


log = logging.getLogger(__name__)


def _state_not_found(param: str, message: str, code: str) -> ApiError:
    """OpenAI's 400 for a previous response or conversation that is not this key's to continue."""
    return ApiError(400, message, details=[{"field": param, "message": "not found"}], code=code)


@dataclass(frozen=True)
class _State:
    """Where a new response's rows go and what history it is sent."""

    user_id: str
    history_exchanges: tuple[str, ...] | None


def _state(request: ResponseRequest, client_key_id: int | None, response_id: str) -> _State:
    """The conversation and history of a new response; a 400 for an unknown one."""
    with unit_of_work(write=False) as session:
        if request.previous_response_id is not None:
            chain = response_chain(session, request.previous_response_id, client_key_id)
            if chain is None:
                raise _state_not_found(
                    "previous_response_id",
                    f"Previous response with id '{request.previous_response_id}' not found.",
                    "previous_response_not_found",
                )
            user_id, exchanges = chain
            return _State(user_id if request.store else response_id, exchanges)
        conversation = request.conversation_id
        if conversation is None:
            return _State(response_id, ())
        if conversation_object(session, conversation, client_key_id) is None:
            raise _state_not_found("conversation", f"Conversation with id '{conversation}' not found.", "not_found")
        if request.store:
            return _State(conversation, None)
        # store: false keeps nothing of what was said: its rows join no conversation, but
        # the conversation's items still go first.
        return _State(response_id, conversation_exchanges(session, conversation, client_key_id))


def _turn(request: ResponseRequest, state: _State, client_key: ClientKey | None) -> ChatTurn:
    instructions = instructions_message(request.instructions)
    return ChatTurn(
        conversation_id=state.user_id,
        messages=items_to_chat_messages(input_items(request)),
        leading=[instructions] if instructions else [],
        model=request.model,
        options=chat_params(request),
        stream=request.stream,
        client_key=client_key,
        history_exchanges=state.history_exchanges,
        trim_history=request.truncation == "auto",
        store_content=request.store,
    )


@dataclass
class ResponseAnswer:
    """A response: the whole object (`body`), or its stream of SSE `events`."""

    response_id: str
    body: dict[str, Any] | None = None
    events: Iterator[str] | None = None


def create_response(
    pipeline: ChatPipeline, request: ResponseRequest, client_key: ClientKey | None, report: ExchangeReport
) -> ResponseAnswer:
    """Answer POST /v1/responses. Raises a 400 ApiError for unknown state, and whatever the
    pipeline raises before its first byte (TurnRejected, BudgetSpent, UpstreamError)."""
    response_id, created_at = new_id("resp"), int(time.time())
    key_id = client_key.id if client_key else None
    state = _state(request, key_id, response_id)
    answer = pipeline.answer(_turn(request, state, client_key), report)
    if request.stream:
        translator = ResponseStreamTranslator(request, response_id=response_id, created_at=created_at)
        return ResponseAnswer(response_id, events=_events(pipeline, answer, translator, request, key_id))
    body = response_from_completion(
        request, answer.completion.as_chat_completion(), response_id=response_id, created_at=created_at
    )
    _record(pipeline, request, key_id, answer, body)
    return ResponseAnswer(response_id, body=body)


def _record(
    pipeline: ChatPipeline, request: ResponseRequest, key_id: int | None, answer: ChatAnswer, body: dict
) -> None:
    """The response's own row, written before the answer leaves (read-after-write).

    The exchange itself is recorded by the pipeline; the row goes the same way (retried,
    else journaled behind the exchange's ending, and recorded once the database is back).
    Only if the journal cannot take it either is it lost: the client still gets the answer
    the upstream made, which then cannot be retrieved or continued by its id.
    """
    columns = {
        "id": body["id"],
        "api_key_id": key_id,
        "exchange_id": answer.exchange_id,
        "user_id": answer.conversation_id,
        "previous_response_id": request.previous_response_id,
        "store": request.store,
        "status": body["status"],
        "body": body if request.store else None,
    }
    # A stored response's conversation lists its output under the ids the response gave it.
    item_ids = [item["id"] for item in body["output"]] if request.store else None
    try:
        pipeline.recorder.record(ResponseRecord(columns, item_ids))
    except SQLAlchemyError as exc:
        log.error("response %s answered but not stored (%s): it cannot be continued", body["id"], type(exc).__name__)


def _events(
    pipeline: ChatPipeline,
    answer: ChatAnswer,
    translator: ResponseStreamTranslator,
    request: ResponseRequest,
    key_id: int | None,
) -> Iterator[str]:
    """The Responses API event stream of a streamed answer; the response is recorded before
    response.completed (or response.failed) is sent, or, when the client leaves mid-stream,
    as "cancelled" with what had arrived."""
    chunks = iter(answer.chunks)
    ending: list[dict[str, Any]] = []
    try:
        # response.created goes with the first chunk's events (feed starts the stream), so
        # the relay is under way before the first byte: a client gone at once is seen by it
        # too, and what the translator holds is all that was sent.
        for item in chunks:
            if isinstance(item, UpstreamError):
                ending = translator.fail(item.message)
                break
            for event in translator.feed(item):
                yield sse(event)
    except GeneratorExit:
        chunks.close()  # the pipeline's relay records the partial reply, DISCONNECTED
        _record(pipeline, request, key_id, answer, translator.cancel())
        raise
    ending = ending or translator.finish()  # the pipeline has recorded the reply by now
    _record(pipeline, request, key_id, answer, ending[-1]["response"])
    yield from (sse(event) for event in ending)


# -- the routes ---------------------------------------------------------------------------------

bp = APIBlueprint(
    "responses_api", __name__, url_prefix="/v1", abp_tags=[Tag(name="responses")], abp_security=KEY_REQUIRED
)

# The document's answer for OpenAI's objects, as the SDK's types define them.
_OBJECT = {"application/json": {"schema": {"type": "object"}}}
_STREAM = {"text/event-stream": {"schema": {}}}  # each event's data: one of OpenAI's stream events


def openai_object(read_only: bool = False, streams: bool = False) -> dict:
    """The documented answers of a route that answers one of OpenAI's objects (or its events)."""
    content = {**_OBJECT, **_STREAM} if streams else _OBJECT
    return responses({200: {"description": "OpenAI's object", "content": content}}, openai=True, read_only=read_only)


def not_found(kind: str, identifier: str) -> ApiError:
    """OpenAI's 404 for an unknown (or another key's) response, conversation or item."""
    return ApiError(404, f"{kind} with id '{identifier}' not found.", code="not_found")


def item_list(page: list[dict], has_more: bool) -> dict:
    """A page of items in OpenAI's list shape."""
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": has_more,
    }


def item_page(items: list[dict], query: ItemListQuery) -> dict:
    """The page `query` asks for of `items` (all of them, oldest first), in OpenAI's list shape."""
    ordered = items if query.order == "asc" else list(reversed(items))
    if query.after is not None:
        ids = [item["id"] for item in ordered]
        ordered = ordered[ids.index(query.after) + 1 :] if query.after in ids else []
    return item_list(ordered[: query.limit], len(ordered) > query.limit)


@bp.post("/responses", responses=openai_object(streams=True))
@limiter.limit(completion_limit)
def create(body: ResponseRequest):
    """Create a model response (OpenAI's `responses.create`), plain or streamed."""
    answer = create_response(current_app.extensions["chat"], body, current_client_key(), exchange_report())
    if answer.events is None:
        return jsonify(answer.body)
    return Response(stream_with_context(answer.events), mimetype="text/event-stream")


@bp.get("/responses/<response_id>", responses=openai_object(read_only=True))
def retrieve(path: ResponsePath):
    """A stored response, as it was answered."""
    with unit_of_work(write=False) as session:
        row = stored_response(session, path.response_id, current_client_key_id())
    if row is None or row.body is None:
        raise not_found("Response", path.response_id)
    return jsonify(row.body)


@bp.delete("/responses/<response_id>", responses=openai_object(read_only=True))
def delete(path: ResponsePath):
    """Erase a stored response and its input and output, for good."""
    with unit_of_work() as session:
        deleted = delete_response(session, path.response_id, current_client_key_id())
    if not deleted:
        raise not_found("Response", path.response_id)
    return jsonify({"id": path.response_id, "object": "response", "deleted": True})


@bp.get("/responses/<response_id>/input_items", responses=openai_object(read_only=True))
def list_input_items(path: ResponsePath, query: ItemListQuery):
    """The input items a stored response was given."""
    with unit_of_work(write=False) as session:
        row = stored_response(session, path.response_id, current_client_key_id())
        items = response_input_items(session, row) if row is not None else None
    if items is None:
        raise not_found("Response", path.response_id)
    return jsonify(item_page(items, query))
