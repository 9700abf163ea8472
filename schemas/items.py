"""The items of the Responses and Conversations APIs as a client sends them: messages (and
their content parts), function calls and their outputs. A request's `input` and a
conversation's new items are lists of these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints, ValidationInfo, field_validator

from schemas.common import (
    MAX_PARTS,
    FunctionName,
    ImageUrlText,
    ItemId,
    MessageText,
    RequestModel,
    tagged_union,
    text_or_parts,
)

CallId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


# -- content parts ------------------------------------------------------------------------


class InputTextPart(RequestModel):
    type: Literal["input_text"]
    text: MessageText


class InputImagePart(RequestModel):
    type: Literal["input_image"]
    image_url: ImageUrlText
    detail: Literal["low", "high", "auto", "original"] = "auto"


class OutputTextPart(RequestModel):
    type: Literal["output_text"]
    text: MessageText
    # Citations only come from built-in tools; what a client sends back is kept as sent.
    annotations: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_PARTS)


class RefusalPart(RequestModel):
    type: Literal["refusal"]
    refusal: MessageText


def _image_needs_url(value: Any) -> Any:
    image = isinstance(value, dict) and value.get("type") == "input_image"
    if image and value.get("image_url") is None and value.get("file_id") is not None:
        raise ValueError("input_image with a file_id is not supported (there is no Files API here); send image_url")
    if isinstance(value, dict) and value.get("type") == "input_file":
        raise ValueError("Content part type 'input_file' is not supported; send the text, or an image as input_image")
    return value


MessagePart = Annotated[
    tagged_union(
        {
            "input_text": InputTextPart,
            "input_image": InputImagePart,
            "output_text": OutputTextPart,
            "refusal": RefusalPart,
        },
        "content_part_type",
        "Content part type must be 'input_text', 'input_image', 'output_text' or 'refusal'",
    ),
    BeforeValidator(_image_needs_url),
]
# Which parts each role may carry (as OpenAI: assistant turns are what a model wrote).
PARTS_BY_ROLE = {
    "user": ("input_text", "input_image"),
    "system": ("input_text", "input_image"),
    "developer": ("input_text", "input_image"),
    "assistant": ("output_text", "refusal"),
}


# -- input items ---------------------------------------------------------------------------


class MessageItem(RequestModel):
    """A message; "type" may be left out (the SDK's EasyInputMessage)."""

    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: text_or_parts(MessagePart, "Message content")
    id: ItemId | None = None
    status: ItemStatus | None = None

    @field_validator("content")
    @classmethod
    def _parts_fit_the_role(cls, content: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        allowed = PARTS_BY_ROLE.get(role or "", ())
        for index, part in enumerate(content if isinstance(content, list) else []):
            if allowed and part.type not in allowed:
                names = " or ".join(f"'{name}'" for name in allowed)
                raise ValueError(f"content[{index}]: {role} messages take {names} parts, not '{part.type}'")
        return content


class FunctionCallItem(RequestModel):
    """A call the model made earlier (an output item sent back as input)."""

    type: Literal["function_call"]
    call_id: CallId
    name: FunctionName
    arguments: MessageText
    id: ItemId | None = None
    status: ItemStatus | None = None


def _text_parts_only(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") in ("input_image", "input_file"):
        raise ValueError(f"Function call output part type '{value['type']}' is not supported; only 'input_text' is")
    return value


ToolOutputPart = Annotated[InputTextPart, BeforeValidator(_text_parts_only)]


class FunctionCallOutputItem(RequestModel):
    """The result of a function call, answered by the client."""

    type: Literal["function_call_output"]
    call_id: CallId
    output: text_or_parts(ToolOutputPart, "Function call output")
    id: ItemId | None = None
    status: ItemStatus | None = None


_UNSUPPORTED_ITEM_HINTS = {
    "item_reference": "send the items themselves, or use previous_response_id or conversation",
    "reasoning": "this service produces no reasoning items; leave them out",
}


def _supported_item(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    kind = value.get("type")
    if kind is None and "role" in value:
        return {**value, "type": "message"}
    if isinstance(kind, str) and kind not in ("message", "function_call", "function_call_output"):
        hint = _UNSUPPORTED_ITEM_HINTS.get(kind, "use 'message', 'function_call' or 'function_call_output'")
        raise ValueError(f"Input item type '{kind}' is not supported; {hint}")
    return value


InputItem = Annotated[
    tagged_union(
        {"message": MessageItem, "function_call": FunctionCallItem, "function_call_output": FunctionCallOutputItem},
        "input_item_type",
        "Input item must be an object: a message (with a role), a function_call or a function_call_output",
    ),
    BeforeValidator(_supported_item),
]
