"""The Responses and Conversations APIs' items, in OpenAI's JSON shape: ids and the
projections between items and chat messages.

Items and responses are plain dicts in OpenAI's JSON shape; the tests validate each
against the openai SDK's own types. A stored row is one or more items, with ids derived
from the row's id: `msg_<row>` (its message), `fc_<row>_<n>` (its n-th tool call) and
`fco_<row>` (a tool message: a function_call_output).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from services.exchanges import ITEM_IDS, replayed
from services.llm import text_of

Item = dict[str, Any]


def new_id(prefix: str) -> str:
    """A fresh id in OpenAI's style: the prefix ("resp", "msg", "fc", "fco", "call"), "_", 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


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
        # Annotations are citations from built-in tools, which this service has none of.
        return {"type": "output_text", "text": part["text"], "annotations": []}
    if kind == "input_image":
        return {"type": "input_image", "image_url": part["image_url"], "detail": part.get("detail") or "auto"}
    return {"type": "input_text", "text": part["text"]}


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


def _input_parts(content: Any) -> Any:
    """Chat content as Responses input parts (input_text, input_image)."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if part.get("type") == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail")})
        else:
            parts.append({"type": "input_text", "text": part.get("text", "")})
    return parts


def row_items(row: Any) -> list[dict[str, Any]]:
    """The items one stored message row is, with ids derived from the row's id."""
    message = replayed(row.role, row.content, row.message_fields)
    if row.role == "tool":
        call_id = message.get("tool_call_id") or ""
        return [function_call_output_item(call_id, text_of(row.content), item_id=f"fco_{row.id}")]
    if row.role != "assistant":
        return [message_item(row.role, _input_parts(row.content), item_id=f"msg_{row.id}")]
    items = []
    calls = message.get("tool_calls") or []
    text = text_of(row.content)
    if text or message.get("refusal") or not calls:
        parts = [{"type": "output_text", "text": text}] if text or not message.get("refusal") else []
        if message.get("refusal"):
            parts.append({"type": "refusal", "refusal": message["refusal"]})
        items.append(message_item("assistant", parts, item_id=f"msg_{row.id}"))
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        name, arguments = function.get("name", ""), function.get("arguments", "")
        items.append(function_call_item(call.get("id"), name, arguments, item_id=f"fc_{row.id}_{index}"))
    named = (row.message_fields or {}).get(ITEM_IDS) or []
    if len(named) == len(items):  # the ids the response that made this reply gave its items
        for item, item_id in zip(items, named, strict=True):
            item["id"] = item_id
    return items
