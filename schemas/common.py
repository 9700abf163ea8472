"""What every request schema shares: the one base model, the bounds on what one request may
carry, and the small types more than one API's schemas use."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag

USER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
# The ids of the Responses and Conversations APIs (responses, conversations) and of their items.
Identifier = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
# chat completions' rule for function names, which the upstream enforces
FUNCTION_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
FunctionName = Annotated[str, StringConstraints(pattern=FUNCTION_NAME_PATTERN)]

# Bounds on what one request may carry (each breach is a 400 naming the field).
MAX_MESSAGES = 256
MAX_PARTS = 64
MAX_MESSAGE_CHARS = 100_000
MessageText = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]

# OpenAI's own limit: 16 metadata pairs, keys up to 64 characters, values up to 512.
MAX_METADATA_PAIRS = 16
MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_PAIRS)]


def whole_number(value: Any) -> Any:
    """`value`, with a float that is a whole number (800.0) as that int: JSON has one number
    type, so 800.0 is the integer 800 to JSON Schema, and so to us."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def string_or_list(value: Any) -> str | None:
    """The tag of a string-or-list union: "string", "list", or None for anything else."""
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else None


def text_or_parts(parts: Any, what: str) -> Any:
    """A string, or 1 to MAX_PARTS parts: the shape of message content and of tool output.
    Anything else is refused as "`what` must be a string or a list of content parts"."""
    return Annotated[
        Annotated[MessageText, Tag("string")]
        | Annotated[list[parts], Field(min_length=1, max_length=MAX_PARTS), Tag("list")],
        Discriminator(
            string_or_list,
            custom_error_type="content_type",
            custom_error_message=f"{what} must be a string or a list of content parts",
        ),
    ]


def kind_of(value: Any) -> Any:
    """The "type" of `value`, a JSON object or a model (None when it has none)."""
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


def tagged_union(models: dict[str, type[BaseModel]], error_type: str, message: str) -> Any:
    """A union picked by the "type" field; tags end in "_kind" so they never pass for a field name."""

    def kind(value: Any) -> str | None:
        tag = kind_of(value)
        return f"{tag}_kind" if isinstance(tag, str) and tag in models else None

    members = tuple(Annotated[model, Tag(f"{name}_kind")] for name, model in models.items())
    return Annotated[
        Union[members],  # noqa: UP007 - a runtime-built union needs the subscript form
        Discriminator(kind, custom_error_type=error_type, custom_error_message=message),
    ]


class RequestModel(BaseModel):
    """What a client sends, or a part of it.

    Strict: "0.7" is not a number and 1 is not a string. Unknown fields are ignored so that
    clients sending OpenAI's extra fields keep working.
    """

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class Parameters(RequestModel):
    """A request's path, query or header parameters. They arrive as text, so they are read
    leniently ("20" is the limit 20) where a JSON body is strict."""

    model_config = ConfigDict(strict=False)
