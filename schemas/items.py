"""The items of the Responses and Conversations APIs as a client sends them: messages (and
their content parts), function calls and their outputs, and, in a response's input,
references to items stored earlier. A request's `input` and a conversation's new items are
lists of these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints, ValidationInfo, field_validator, model_validator

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


class InputFilePart(RequestModel):
    """A file (a PDF, say) for the model: its bytes as `file_data` (a data URL) with a
    `filename`, or the `file_id` of a file the upstream's own Files API holds. Sent on as
    chat completions' `file` part; `file_url` has no chat form and is refused."""

    type: Literal["input_file"]
    # Bounded, as an image's data URL is, by the request body's limit (MAX_CONTENT_LENGTH).
    file_data: Annotated[str, StringConstraints(min_length=1)] | None = None
    file_id: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    file_url: str | None = None
    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None

    @field_validator("file_url")
    @classmethod
    def _no_file_url(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "input_file with a file_url is not supported (chat completions takes a file only as "
                "file_data or file_id); send the file's contents as file_data, a data URL"
            )
        return value

    @model_validator(mode="after")
    def _names_a_file(self) -> InputFilePart:
        if self.file_data is None and self.file_id is None:
            raise ValueError("input_file needs file_data (a data URL, with a filename) or a file_id")
        return self


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
    return value


MessagePart = Annotated[
    tagged_union(
        {
            "input_text": InputTextPart,
            "input_image": InputImagePart,
            "input_file": InputFilePart,
            "output_text": OutputTextPart,
            "refusal": RefusalPart,
        },
        "content_part_type",
        "Content part type must be 'input_text', 'input_image', 'input_file', 'output_text' or 'refusal'",
    ),
    BeforeValidator(_image_needs_url),
]
# Which parts each role may carry (as OpenAI: assistant turns are what a model wrote).
PARTS_BY_ROLE = {
    "user": ("input_text", "input_image", "input_file"),
    "system": ("input_text", "input_image", "input_file"),
    "developer": ("input_text", "input_image", "input_file"),
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


class ItemReference(RequestModel):
    """An item this service stored, named by its id instead of sent whole; "type" may be left
    out (the specification's ItemReferenceParam). Resolved before the model is called
    (services/responses/references.py)."""

    type: Literal["item_reference"] | None = None
    id: ItemId


class CompactionItem(RequestModel):
    """A `compaction` item this service made (POST /v1/responses/compact, or a response's
    `context_management`), sent back as input: its `encrypted_content` is opened with the
    server's COMPACTION_KEY and stands for everything before it (services/responses/compaction.py)."""

    type: Literal["compaction"]
    # The specification's bound (CompactionSummaryItemParam); the request body's limit is lower.
    encrypted_content: Annotated[str, StringConstraints(min_length=1, max_length=10485760)]
    id: ItemId | None = None
    created_by: Annotated[str, StringConstraints(max_length=255)] | None = None


_UNSUPPORTED_ITEM_HINTS = {
    "item_reference": "send the items themselves",
    "reasoning": "this service produces no reasoning items; leave them out",
}


def _item_kinds(*kinds: str) -> Any:
    """A BeforeValidator for items of these types: a message may leave out its "type" (it has a
    role), and so may an item reference (an id and no role); any other type is refused by name."""
    names = ", ".join(f"'{kind}'" for kind in kinds[:-1]) + f" or '{kinds[-1]}'"

    def supported(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        kind = value.get("type")
        if kind is None and "role" in value:
            return {**value, "type": "message"}
        if kind is None and "id" in value and "item_reference" in kinds:
            return {**value, "type": "item_reference"}
        if isinstance(kind, str) and kind not in kinds:
            hint = _UNSUPPORTED_ITEM_HINTS.get(kind, f"use {names}")
            raise ValueError(f"Input item type '{kind}' is not supported; {hint}")
        return value

    return BeforeValidator(supported)


_ITEM_TYPES = ("message", "function_call", "function_call_output")
_ITEM_MODELS = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
}

# A conversation's new items: what is added is stored whole.
ConversationItem = Annotated[
    tagged_union(
        _ITEM_MODELS,
        "input_item_type",
        "Input item must be an object: a message (with a role), a function_call or a function_call_output",
    ),
    _item_kinds(*_ITEM_TYPES),
]
# A response's input: the items, references to items stored earlier, or compaction items.
InputItem = Annotated[
    tagged_union(
        {**_ITEM_MODELS, "compaction": CompactionItem, "item_reference": ItemReference},
        "input_item_type",
        "Input item must be an object: a message (with a role), a function_call, a function_call_output, "
        "a compaction or an item_reference",
    ),
    _item_kinds(*_ITEM_TYPES, "compaction", "item_reference"),
]
