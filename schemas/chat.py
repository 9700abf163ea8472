"""The chat routes' models: the seed routes (/openai-completion, /process-payload) and
OpenAI's /v1/chat/completions and /v1/models, their requests and their answers."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from schemas.common import (
    IMAGE_URL_PATTERN,
    MAX_MESSAGES,
    MAX_PARTS,
    USER_ID_PATTERN,
    ImageUrlText,
    MessageText,
    Parameters,
    RequestModel,
    UserId,
    check_image_url,
    text_or_parts,
    whole_number,
)
from schemas.validation import Validated

# Opt-in server-side memory on /v1/chat/completions: the conversation id as a header.
CONVERSATION_HEADER = "X-Conversation-Id"
TokenCount = Annotated[int, Ge(1), BeforeValidator(whole_number)]


class TextPart(RequestModel):
    type: Literal["text"]
    text: MessageText


class ImageUrl(RequestModel):
    url: ImageUrlText
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(RequestModel):
    # Passed through to the model as sent (extra keys kept).
    model_config = ConfigDict(extra="allow")
    type: Literal["image_url"]
    image_url: ImageUrl


def _part_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return {"text": "text_part", "image_url": "image_part"}.get(kind) if isinstance(kind, str) else None


ContentPart = Annotated[
    Annotated[TextPart, Tag("text_part")] | Annotated[ImageUrlPart, Tag("image_part")],
    Discriminator(
        _part_kind,
        custom_error_type="content_part_type",
        custom_error_message="Content part type must be 'text' or 'image_url'",
    ),
]


Content = text_or_parts(ContentPart, "Content")


class ChatMessage(RequestModel):
    role: Literal["system", "user", "assistant"]
    content: Content

    def as_openai(self) -> dict[str, Any]:
        """The message as the OpenAI API takes it (content parts kept losslessly)."""
        return self.model_dump(mode="json", exclude_none=True)


class CompletionRequest(Validated, RequestModel):
    """POST /openai-completion."""

    @classmethod
    def rejection(cls, details: list[dict[str, str]]) -> tuple[str, list[dict[str, str]] | None]:
        # The seed API's documented answer for any missing or unusable prompt.
        if any(d["field"] in ("prompt", "body") for d in details):
            return "Prompt is required", None
        return super().rejection(details)

    # At least one character that is not white space (the pattern is a search).
    prompt: Annotated[str, StringConstraints(pattern=r"\S")]
    user_id: UserId | None = None
    stream: bool = False


# JSON Schema for "at least one message that is not a system message".
_A_TURN = {"type": "object", "properties": {"role": {"enum": ["user", "assistant"]}}, "required": ["role"]}


class ProcessPayloadRequest(Validated, RequestModel):
    """POST /process-payload: the payload of the original FastAPI integration."""

    invalid_message: ClassVar[str] = "Invalid payload"

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES, json_schema_extra={"contains": _A_TURN})
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: TokenCount | None = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    user_id: UserId | None = None
    stream: bool = False

    @field_validator("messages")
    @classmethod
    def _has_a_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if all(m.role == "system" for m in messages):
            raise ValueError("messages must include at least one user or assistant message")
        return messages


# OpenAI's own sentences for two faults of a chat completions request (its 400s, as its API
# words them): a message other than an assistant's without content, and `n` out of bounds.
OPENAI_NULL_CONTENT = "Invalid value for 'content': expected a string, got null."
MAX_CHOICES = 128
_OPENAI_SENTENCES = ("Invalid value for 'content'", "Invalid 'n'")


# The two rules of OpenAIMessage's validators, for the OpenAPI document: content is required
# but of an assistant message, and an image_url part's URL is one check_image_url takes.
_IMAGE_URL_RULE = {"pattern": IMAGE_URL_PATTERN, "properties": {"url": {"pattern": IMAGE_URL_PATTERN}}}
_MESSAGE_RULES = {
    "allOf": [
        {
            "anyOf": [
                {"properties": {"role": {"const": "assistant"}}},
                {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
            ]
        },
        {
            "properties": {
                "content": {
                    "items": {
                        "anyOf": [
                            {"properties": {"type": {"not": {"const": "image_url"}}}},
                            {"properties": {"image_url": _IMAGE_URL_RULE}},
                        ]
                    }
                }
            }
        },
    ]
}


class OpenAIMessage(RequestModel):
    """A message of OpenAI's chat API; fields beyond role and content pass through."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_MESSAGE_RULES)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # Validated when absent too: only an assistant message (which may be all tool calls) goes without.
    content: MessageText | Annotated[list[dict[str, Any]], Field(max_length=MAX_PARTS)] | None = Field(
        default=None, validate_default=True
    )

    @field_validator("content")
    @classmethod
    def _content_as_openai_takes_it(cls, content: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if content is None and role is not None and role != "assistant":
            raise ValueError(OPENAI_NULL_CONTENT)  # absent or null alike, as OpenAI answers both
        if isinstance(content, list):
            _check_image_parts(content)
        return content


def _check_image_parts(parts: list[dict[str, Any]]) -> None:
    """The image URLs of raw content parts (passed on as sent), checked as the typed parts'
    are; a bad one is a ValidationError at its own path (content.<n>.image_url.url)."""
    errors = []
    for index, part in enumerate(parts):
        image = part.get("image_url") if part.get("type") == "image_url" else None
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            continue  # no URL to fetch: the upstream answers the part's shape
        try:
            check_image_url(url)
        except ValueError as exc:
            loc = (index, "image_url", "url") if isinstance(image, dict) else (index, "image_url")
            errors.append(InitErrorDetails(type=PydanticCustomError("image_url", str(exc)), loc=loc, input=url))
    if errors:
        raise ValidationError.from_exception_data("OpenAIMessage", errors)


class OpenAIChatRequest(Validated, RequestModel):
    """POST /v1/chat/completions: OpenAI's body; unknown fields are passed to the upstream."""

    name_fields: ClassVar[bool] = True
    model_config = ConfigDict(extra="allow")
    model: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    messages: list[OpenAIMessage] = Field(
        min_length=1,
        max_length=MAX_MESSAGES,
        json_schema_extra={
            "contains": {
                "type": "object",
                "properties": {"role": {"enum": ["user", "assistant", "tool"]}},
                "required": ["role"],
            }
        },
    )
    stream: bool = False
    # {"include_usage": true}: the stream ends with a usage chunk, as OpenAI's does.
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: TokenCount | None = None
    # Choices to generate (the budget reserves max_tokens for each).
    n: Annotated[int, BeforeValidator(whole_number)] | None = Field(
        default=None, json_schema_extra={"minimum": 1, "maximum": MAX_CHOICES}
    )
    # Opt-in server-side memory (the X-Conversation-Id header does the same).
    user_id: UserId | None = None

    @field_validator("messages")
    @classmethod
    def _has_a_turn(cls, messages: list[OpenAIMessage]) -> list[OpenAIMessage]:
        if all(m.role in ("system", "developer") for m in messages):
            raise ValueError("messages must include at least one user, assistant or tool message")
        return messages

    @field_validator("n")
    @classmethod
    def _choices_as_openai_takes_them(cls, n: int | None) -> int | None:
        if n is not None and n < 1:
            raise ValueError(f"Invalid 'n': integer below minimum value. Expected a value >= 1, but got {n} instead.")
        if n is not None and n > MAX_CHOICES:
            raise ValueError(
                f"Invalid 'n': integer above maximum value. Expected a value <= {MAX_CHOICES}, but got {n} instead."
            )
        return n

    @classmethod
    def rejection(cls, details: list[dict[str, str]]) -> tuple[str, list[dict[str, str]] | None]:
        # A fault OpenAI words in a sentence of its own is answered in that sentence alone.
        if len(details) == 1 and details[0]["message"].startswith(_OPENAI_SENTENCES):
            return details[0]["message"], details
        return super().rejection(details)


class ConversationHeader(Validated, Parameters):
    """Opt-in server-side memory for /v1/chat/completions."""

    # Its 400 is one fixed sentence (rejection below), and its field's name (the header's) stays
    # out of CHAT_FIELDS, as it always has.
    names_in_errors: ClassVar[bool] = False
    conversation_id: Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)] | None = Field(
        default=None, alias=CONVERSATION_HEADER
    )

    @classmethod
    def rejection(cls, details: list[dict[str, str]]) -> tuple[str, list[dict[str, str]] | None]:
        return (
            f"{CONVERSATION_HEADER} must be 1 to 128 letters, digits or ._:-",
            [{"field": "user_id", "message": "invalid conversation id"}],
        )


class ModelPath(Validated, Parameters):
    """A model id taken from the URL path (GET /v1/models/<model>)."""

    invalid_message: ClassVar[str] = "Invalid model"
    model: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class Usage(BaseModel):
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


# With "stream": true the same routes answer Server-Sent Events instead.
# Each event's data is JSON: see the README for the event format of each route.
_ALSO_STREAMED = {"openapi_extra": {"content": {"text/event-stream": {"schema": {}}}}}


class CompletionResponse(BaseModel):
    model_config = ConfigDict(**_ALSO_STREAMED)
    user_id: str
    completion: str
    model: str
    usage: Usage


class ProcessPayloadResponse(BaseModel):
    model_config = ConfigDict(**_ALSO_STREAMED)
    content: str
    user_id: str
    model: str
    usage: Usage


class ChatCompletionResponse(BaseModel):
    """OpenAI's chat.completion object, as the upstream sent it."""

    model_config = ConfigDict(extra="allow", **_ALSO_STREAMED)
    id: str | None = None
    object: str
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class ModelInfo(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str
    data: list[ModelInfo]
