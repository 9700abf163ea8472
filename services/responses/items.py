"""The Responses and Conversations APIs' items, in OpenAI's JSON shape, and the one
projection between items and chat messages, both ways.

Input items become chat messages (`items_to_chat_messages`); a chat reply becomes output
items (`output_items`), and a stored row the items it is (`row_items`), through the same
`reply_items`. Items are plain dicts in OpenAI's JSON shape; the tests validate each
against the openai SDK's own types.

Every id names where its item is kept, so that one can be found by its id alone
(services/responses/references.py). A stored row is one or more items, with ids derived
from the row's public id, random and kept for the row's life (models/message.py): `msg_<public>`
(its message), `fc_<public>_<n>` (its n-th tool call) and `fco_<public>` (a tool message: a
function_call_output); no id says anything of how many rows there are. A response's output item n is
`msg_<hex>_<n>` or `fc_<hex>_<n>`, <hex> being its response's (`resp_<hex>`); its reply row
keeps those ids.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from schemas import CompactionItem, FunctionCallItem, FunctionCallOutputItem, MessageItem, ResponseRequest
from services.exchanges import ITEM_IDS, replayed
from services.tokens import text_of

Item = dict[str, Any]
# Chat image detail levels; the Responses API's "original" is nearest to "high".
_CHAT_IMAGE_DETAIL = {"auto": "auto", "low": "low", "high": "high", "original": "high"}


# -- ids and items --------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    """A fresh id in OpenAI's style: the prefix ("resp", "msg", "fc", "fco", "call"), "_", 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


def output_item_id(response_id: str, kind: str, index: int) -> str:
    """The id of a response's output item: "msg" or "fc", the response id's hex, its index in the output."""
    prefix = "fc" if kind == "function_call" else "msg"
    return f"{prefix}_{response_id.partition('_')[2]}_{index}"


def response_of_item(item_id: str) -> str | None:
    """The id of the response whose output item `item_id` is (see output_item_id), or None."""
    prefix, _, rest = item_id.partition("_")
    hex_part, _, index = rest.rpartition("_")
    if prefix not in ("msg", "fc") or not re.fullmatch(r"[0-9]{1,4}", index) or len(hex_part) != 48:
        return None
    return f"resp_{hex_part}" if all(c in "0123456789abcdef" for c in hex_part) else None


# A row's item ids: msg_<public>, fco_<public>, fc_<public>_<n>, <public> 32 hex digits (ASCII only).
_ROW_ITEM_ID = re.compile(r"(?:msg|fco|cmp)_([0-9a-f]{32})|fc_([0-9a-f]{32})_[0-9]{1,4}", re.ASCII)


def row_of_item(item_id: str) -> str | None:
    """The public id of the stored row an item id derived from it names (msg_<public>,
    fc_<public>_<n>, fco_<public>, cmp_<public>), or None for any other string."""
    match = _ROW_ITEM_ID.fullmatch(item_id)
    return (match.group(1) or match.group(2)) if match else None


def message_item(role: str, content: str | Sequence[Mapping[str, Any]], *, item_id: str | None = None) -> Item:
    """A message item; string content becomes one text part of the kind the role takes."""
    parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else list(content)
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [_item_part(role, part) for part in parts],
    }


def _item_part(role: str, part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if role == "assistant":
        if kind == "refusal":
            return {"type": "refusal", "refusal": part["refusal"]}
        return output_text_part(part["text"], logprobs=False)
    if kind == "input_image":
        return {"type": "input_image", "image_url": part["image_url"], "detail": part.get("detail") or "auto"}
    if kind == "input_file":
        return {"type": "input_file", **_file_fields(part)}
    return {"type": "input_text", "text": part["text"]}


def _file_fields(file: Mapping[str, Any]) -> dict[str, Any]:
    """The fields an input_file part and a chat `file` part share, those given only."""
    return {name: file[name] for name in ("file_data", "file_id", "filename") if file.get(name) is not None}


def function_call_item(
    call_id: str, name: str, arguments: str, *, item_id: str | None = None, status: str = "completed"
) -> Item:
    """A function_call item (id fc_...): the call the model made, as OpenAI lists it."""
    return {
        "id": item_id or new_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def function_call_output_item(
    call_id: str, output: str | Sequence[Mapping[str, Any]], *, item_id: str | None = None
) -> Item:
    """A function_call_output item (id fco_...): the client's answer to a call; output kept as sent."""
    if not isinstance(output, str):
        output = [{"type": "input_text", "text": part["text"]} for part in output]
    return {
        "id": item_id or new_id("fco"),
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": output,
    }


# -- content, both ways: input parts <-> chat content parts ------------------------------------


def chat_content(content: str | Sequence[Mapping[str, Any]]) -> str | list[dict[str, Any]]:
    """Input parts (input_text, input_image, input_file) as chat content; one text part is a plain string."""
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
    if part["type"] == "input_file":
        # chat completions' file part (OpenAI's and Azure OpenAI's): file_data a data URL, or a file_id
        return {"type": "file", "file": _file_fields(part)}
    return {"type": "text", "text": part.get("text") or ""}


def item_content(content: Any) -> Any:
    """Chat content as input parts (input_text, input_image, input_file); a string stays one."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if part.get("type") == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail")})
        elif part.get("type") == "file":
            parts.append({"type": "input_file", **_file_fields(part.get("file") or {})})
        else:
            parts.append({"type": "input_text", "text": part.get("text", "")})
    return parts


def _tool_output_text(output: str | Sequence[Mapping[str, Any]]) -> str:
    if isinstance(output, str):
        return output
    return "".join(part.get("text") or "" for part in output)


# -- a request's input -> items -----------------------------------------------------------------


def input_items(request: ResponseRequest) -> list[Item]:
    """The request's input as stored items, each with an id (one user message for a string input)."""
    if isinstance(request.input, str):
        return [message_item("user", request.input)]
    return validated_items(request.input)


def validated_items(items: Iterable[Any]) -> list[Item]:
    """Validated input items (schemas' MessageItem, FunctionCallItem, FunctionCallOutputItem,
    ItemReference) as items, each with an id.

    Message items come out as OpenAI lists them: user/system/developer content as input_text,
    input_image and input_file parts, assistant content as output_text/refusal parts; every item
    has "status": "completed". Ids the client sent are kept; the others are generated (msg_, fc_,
    fco_). A reference stays {"type": "item_reference", "id"}: references.py resolves it.
    """
    made: list[Item] = []
    for item in items:
        if isinstance(item, MessageItem):
            parts = item.content if isinstance(item.content, str) else [p.model_dump() for p in item.content]
            made.append(message_item(item.role, parts, item_id=item.id))
        elif isinstance(item, FunctionCallItem):
            made.append(function_call_item(item.call_id, item.name, item.arguments, item_id=item.id))
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else [p.model_dump() for p in item.output]
            made.append(function_call_output_item(item.call_id, output, item_id=item.id))
        elif isinstance(item, CompactionItem):  # opened by services/responses/compaction.py
            made.append({"type": "compaction", "id": item.id, "encrypted_content": item.encrypted_content})
        else:
            made.append({"type": "item_reference", "id": item.id})
    return made


# -- items -> chat messages -----------------------------------------------------------------


def items_to_chat_messages(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Items (input items, earlier output items) as chat-completions messages, in order.

    One assistant turn is one chat message: an assistant text and the function calls next to it
    become {"role": "assistant", "content", "tool_calls": [...]}; a function_call_output becomes a
    "tool" message. "developer" messages are sent as "system", which every upstream knows.
    Raises ValueError for an item type that has no chat form.
    """
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type") or "message"
        if kind == "message" and item["role"] == "assistant":
            _add_assistant(messages, text=_assistant_text(item["content"]))
        elif kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": chat_content(item["content"])})
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


def tool_pairing_error(items: Iterable[Mapping[str, Any]]) -> str | None:
    """OpenAI's 400 message when function calls and outputs do not pair up, else None.

    Every function_call_output needs an earlier function_call with its call_id, and every call
    needs its output before the next user, system or developer message (or the end): a chat
    upstream rejects anything else.
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


def open_calls(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The function_call items `items` leave unanswered at their end: the calls a next input
    may answer (a call that a user, system or developer message followed was given up)."""
    pending: dict[str, Mapping[str, Any]] = {}
    for item in items:
        kind = item.get("type") or "message"
        if kind == "function_call":
            pending[item["call_id"]] = item
        elif kind == "function_call_output":
            pending.pop(item["call_id"], None)
        elif kind == "message" and item.get("role") != "assistant":
            pending.clear()
    return list(pending.values())


# -- chat messages -> items -----------------------------------------------------------------


def output_text_part(text: str, *, logprobs: bool = True) -> dict[str, Any]:
    """An output_text part. Annotations are citations from built-in tools, which this service
    has none of; a response's output carries (empty) logprobs, a listed conversation item never did."""
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    if logprobs:
        part["logprobs"] = []
    return part


def reply_items(
    text: str | None,
    refusal: str | None,
    calls: list[Item],
    *,
    message_id: str | None = None,
    status: str = "completed",
    logprobs: bool = True,
) -> list[Item]:
    """An assistant's reply as items: its message (an output_text and/or a refusal part), then its
    function calls (`calls`, made by the caller). A reply with neither text nor calls still gets
    its (empty) message, so a turn is never lost."""
    if not (text or refusal or not calls):
        return calls
    content: list[dict[str, Any]] = []
    if text or not refusal:
        content.append(output_text_part(text or "", logprobs=logprobs))
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    message = {"id": message_id or new_id("msg"), "type": "message", "role": "assistant", "status": status}
    return [{**message, "content": content}, *calls]


def output_items(
    text: str | None,
    refusal: str | None = None,
    tool_calls: Sequence[Mapping[str, Any]] = (),
    status: str = "completed",
    *,
    response_id: str | None = None,
) -> list[Item]:
    """A chat assistant message as a response's output items: a message (output_text and/or
    refusal part), then function calls; ids those of `response_id`'s output (output_item_id),
    or fresh ones without it."""
    calls = []
    for call in tool_calls:
        function = call.get("function") or {}
        call_id = call.get("id") or new_id("call")
        calls.append(
            function_call_item(call_id, function.get("name") or "", function.get("arguments") or "", status=status)
        )
    items = reply_items(text, refusal, calls, status=status)
    if response_id is not None:
        for index, item in enumerate(items):
            item["id"] = output_item_id(response_id, item["type"], index)
    return items


def row_items(row: Any) -> list[Item]:
    """The items one stored message row is, with ids derived from the row's public id (or
    those the response that made the reply gave them)."""
    message = replayed(row.role, row.content, row.message_fields)
    if row.role == "compaction":  # a stored conversation's summary (services/summaries.py)
        # The summary's text for now: conversation_items seals it (a client may send the item back).
        return [{"id": f"cmp_{row.public_id}", "type": "compaction", "encrypted_content": text_of(row.content)}]
    if row.role == "tool":
        call_id = message.get("tool_call_id") or ""
        return [function_call_output_item(call_id, text_of(row.content), item_id=f"fco_{row.public_id}")]
    if row.role != "assistant":
        return [message_item(row.role, item_content(row.content), item_id=f"msg_{row.public_id}")]
    calls = []
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        name, arguments = function.get("name", ""), function.get("arguments", "")
        calls.append(function_call_item(call.get("id"), name, arguments, item_id=f"fc_{row.public_id}_{index}"))
    text, refusal = text_of(row.content), message.get("refusal")
    items = reply_items(text, refusal, calls, message_id=f"msg_{row.public_id}", logprobs=False)
    named = (row.message_fields or {}).get(ITEM_IDS) or []
    if len(named) == len(items):  # the ids the response that made this reply gave its items
        for item, item_id in zip(items, named, strict=True):
            item["id"] = item_id
    return items
