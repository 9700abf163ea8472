"""The Responses API's objects: a request as the chat call it makes (its leading message and
options), and the chat completion as the Response object it answers (output, usage, status,
the request's settings echoed). Plain dicts in OpenAI's JSON shape, every field the Open
Responses specification's ResponseResource requires present (tests/test_responses_spec.py).

`max_tool_calls` is ours to enforce: chat completions has no such limit. OpenAI applies it to
built-in tools ("any further attempts to call a tool by the model will be ignored"); the
specification to every tool call, and function tools are the only ones here. So a reply keeps
its first `max_tool_calls` function calls and the rest are dropped, from the response and from
what is recorded (ChatTurn.max_tool_calls), so a continuation answers only the calls it was
shown; a limit of 1 also asks the upstream for no parallel calls.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

from schemas import FunctionToolChoice, ResponseRequest, TextConfig, TextFormatJSONObject, TextFormatJSONSchema
from schemas.responses import LOGPROBS_INCLUDE
from services.responses.items import new_id, output_items

# Where max_output_tokens goes. OpenAI's chat API deprecated `max_tokens` and its reasoning models
# refuse it; `max_completion_tokens` also counts reasoning tokens, exactly as max_output_tokens does.
MAX_TOKENS_PARAM = "max_completion_tokens"
# What a response says of a setting the request left unset: the value the specification's
# example shows (and OpenAI answers), the upstream's own defaults being unknown to us.
UNSET_ECHO = {
    "temperature": 1.0,
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "top_logprobs": 0,
    "service_tier": "default",
}


# -- request -> chat call -------------------------------------------------------------------


def instructions_message(instructions: str | None) -> dict[str, Any] | None:
    """The request's `instructions` as the leading chat message (None when there are none).

    "system": every chat upstream knows it, and OpenAI treats it as "developer" for the
    models that have that role.
    """
    if instructions is None:
        return None
    return {"role": "system", "content": instructions}


def wants_logprobs(request: ResponseRequest) -> bool:
    """Whether the response's output text carries its logprobs (`include` asks for them, as on OpenAI)."""
    return LOGPROBS_INCLUDE in (request.include or ())


def chat_params(request: ResponseRequest) -> dict[str, Any]:
    """The chat-completions parameters for the request (no model, messages or stream; None left out).

    metadata and store are not sent: they are ours to keep, and on OpenAI they would store the
    chat completion there too. Tool settings go only with tools (OpenAI refuses them alone).
    Logprobs are asked for only when the response is to carry them: chat's `top_logprobs`
    needs `logprobs`, and without the `include` they would reach nobody.
    """
    logprobs = wants_logprobs(request)
    params: dict[str, Any] = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        MAX_TOKENS_PARAM: request.max_output_tokens,
        "response_format": _response_format(request.text.format),
        "verbosity": request.text.verbosity,
        "reasoning_effort": request.reasoning.effort if request.reasoning else None,
        "logprobs": True if logprobs else None,
        "top_logprobs": request.top_logprobs if logprobs else None,
        "prompt_cache_key": request.prompt_cache_key,
        "service_tier": request.service_tier,
        "user": request.user,
        "safety_identifier": request.safety_identifier,
    }
    if request.tools:
        params["tools"] = [
            {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
            for tool in request.tools
        ]
        params["tool_choice"] = _chat_tool_choice(request.tool_choice)
        params["parallel_tool_calls"] = request.parallel_tool_calls and request.max_tool_calls != 1
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


def output_logprobs(chat_logprobs: Any) -> list[dict[str, Any]]:
    """A chat choice's `logprobs` (its `content` entries) as an output_text part's logprobs.

    Chat's `bytes` may be null; the Responses shape always has them (the token's UTF-8 bytes).
    """
    entries = (chat_logprobs or {}).get("content") if isinstance(chat_logprobs, Mapping) else None
    return [
        {
            **_logprob(entry),
            "top_logprobs": [_logprob(alternative) for alternative in entry.get("top_logprobs") or ()],
        }
        for entry in entries or ()
    ]


def _logprob(entry: Mapping[str, Any]) -> dict[str, Any]:
    token = entry.get("token") or ""
    raw = entry.get("bytes")
    return {
        "token": token,
        "logprob": float(entry.get("logprob") or 0.0),
        "bytes": list(raw) if raw is not None else list(token.encode()),
    }


def finish_status(finish_reason: str | None) -> tuple[str, str | None]:
    """(response status, incomplete reason) for a chat finish_reason: "length" is max_output_tokens."""
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content_filter":
        return "incomplete", "content_filter"
    return "completed", None


def request_echo(request: ResponseRequest, service_tier: str | None = None) -> dict[str, Any]:
    """The request's settings as a response repeats them (instructions, tools, text, sampling, ...),
    an unset one as UNSET_ECHO has it. `service_tier` is the tier the upstream says it used,
    which OpenAI answers rather than the one asked for."""
    reasoning = request.reasoning
    conversation_id = request.conversation_id
    sent = {name: getattr(request, name) for name in UNSET_ECHO}
    if service_tier:
        sent["service_tier"] = service_tier
    return {
        **{name: default if sent[name] is None else sent[name] for name, default in UNSET_ECHO.items()},
        "max_tool_calls": request.max_tool_calls,
        "prompt_cache_key": request.prompt_cache_key,
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
        "text": _text_echo(request.text),
        "tool_choice": request.tool_choice
        if isinstance(request.tool_choice, str)
        else request.tool_choice.model_dump(),
        "tools": [tool.model_dump() for tool in request.tools],
        "truncation": request.truncation,
        "user": request.user,
    }


def _text_echo(text: TextConfig) -> dict[str, Any]:
    """`text` as a response repeats it: a json_schema format says its description (null when
    unset) and whether it was strict (false when unset, OpenAI's default), as the
    specification requires of it."""
    echoed = text.model_dump(by_alias=True, exclude_none=True)
    if isinstance(text.format, TextFormatJSONSchema):
        strict = bool(text.format.strict)
        echoed["format"] = {**echoed["format"], "description": text.format.description, "strict": strict}
    return echoed


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
    service_tier: str | None = None,
) -> dict[str, Any]:
    """A `response` object (every field the SDK's Response and the specification's
    ResponseResource require), echoing the request's settings (see request_echo).

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
        **request_echo(request, service_tier),
    }


def response_from_completion(
    request: ResponseRequest,
    completion: Mapping[str, Any],
    *,
    response_id: str | None = None,
    created_at: int | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """The response for a chat.completion dict (the upstream's, or `Completion.as_chat_completion()`).

    finish_reason "length" makes it "incomplete" (max_output_tokens) and "content_filter" too;
    anything else is "completed". The model is the one the upstream says answered (else
    `model`, else the request's). Function calls beyond max_tool_calls are dropped; the
    output text carries the upstream's logprobs when the request includes them.
    """
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    status, reason = finish_status(choice.get("finish_reason"))
    item_status = "completed" if status == "completed" else "incomplete"
    response_id = response_id or new_id("resp")
    calls = (message.get("tool_calls") or [])[: request.max_tool_calls]
    output = output_items(message.get("content"), message.get("refusal"), calls, item_status, response_id=response_id)
    if wants_logprobs(request):
        for part in _output_text_parts(output):
            part["logprobs"] = output_logprobs(choice.get("logprobs"))
    return response_object(
        request,
        response_id=response_id,
        created_at=created_at if created_at is not None else int(time.time()),
        model=completion.get("model") or model or request.model,
        output=output,
        usage=usage_object(completion.get("usage")),
        status=status,
        incomplete_reason=reason,
        service_tier=completion.get("service_tier"),
    )


def _output_text_parts(output: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The output_text parts of a reply's message (one at most: a chat reply has one text)."""
    return [
        part
        for item in output
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    ]


def item_list(page: list[dict], has_more: bool) -> dict:
    """A page of items in OpenAI's list shape."""
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": has_more,
    }
