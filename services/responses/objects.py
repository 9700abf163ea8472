"""The Responses API's objects: a request as the chat call it makes (its leading message and
options), and the chat completion as the Response object it answers (output, usage, status,
the request's settings echoed). Plain dicts in OpenAI's JSON shape.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

from schemas import FunctionToolChoice, ResponseRequest, TextFormatJSONObject, TextFormatJSONSchema
from services.responses.items import new_id, output_items

# Where max_output_tokens goes. OpenAI's chat API deprecated `max_tokens` and its reasoning models
# refuse it; `max_completion_tokens` also counts reasoning tokens, exactly as max_output_tokens does.
MAX_TOKENS_PARAM = "max_completion_tokens"


# -- request -> chat call -------------------------------------------------------------------


def instructions_message(instructions: str | None) -> dict[str, Any] | None:
    """The request's `instructions` as the leading chat message (None when there are none).

    "system": every chat upstream knows it, and OpenAI treats it as "developer" for the
    models that have that role.
    """
    if instructions is None:
        return None
    return {"role": "system", "content": instructions}


def chat_params(request: ResponseRequest) -> dict[str, Any]:
    """The chat-completions parameters for the request (no model, messages or stream; None left out).

    metadata and store are not sent: they are ours to keep, and on OpenAI they would store the
    chat completion there too. Tool settings go only with tools (OpenAI refuses them alone).
    """
    params: dict[str, Any] = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        MAX_TOKENS_PARAM: request.max_output_tokens,
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
    response_id = response_id or new_id("resp")
    calls = message.get("tool_calls") or ()
    output = output_items(message.get("content"), message.get("refusal"), calls, item_status, response_id=response_id)
    return response_object(
        request,
        response_id=response_id,
        created_at=created_at if created_at is not None else int(time.time()),
        model=completion.get("model") or request.model,
        output=output,
        usage=usage_object(completion.get("usage")),
        status=status,
        incomplete_reason=reason,
    )


def item_list(page: list[dict], has_more: bool) -> dict:
    """A page of items in OpenAI's list shape."""
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": has_more,
    }
