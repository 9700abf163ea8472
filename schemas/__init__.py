"""Request and response models (pydantic). Validation lives here, not in the routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
)

USER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]


class _Strict(BaseModel):
    # Strict: "0.7" is not a number and 1 is not a string; unknown fields are ignored so
    # that clients sending OpenAI's extra fields keep working.
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageUrl(_Strict):
    url: Annotated[str, StringConstraints(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(_Strict):
    # Passed through to the model as sent (extra keys kept).
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["image_url"]
    image_url: ImageUrl


def _part_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return {"text": "text_part", "image_url": "image_part"}.get(kind)


ContentPart = Annotated[
    Annotated[TextPart, Tag("text_part")] | Annotated[ImageUrlPart, Tag("image_part")],
    Discriminator(
        _part_kind,
        custom_error_type="content_part_type",
        custom_error_message="Content part type must be 'text' or 'image_url'",
    ),
]


def _content_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "parts"
    return None


Content = Annotated[
    Annotated[str, Tag("string")] | Annotated[list[ContentPart], Field(min_length=1), Tag("parts")],
    Discriminator(
        _content_kind,
        custom_error_type="content_type",
        custom_error_message="Content must be a string or a list of content parts",
    ),
]


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: Content

    def as_openai(self) -> dict[str, Any]:
        """The message as the OpenAI API takes it (content parts kept losslessly)."""
        return self.model_dump(mode="json", exclude_none=True)


class CompletionRequest(_Strict):
    """POST /openai-completion."""

    prompt: str
    user_id: UserId | None = None
    stream: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("Prompt is required")
        return value


class ProcessPayloadRequest(_Strict):
    """POST /process-payload: the payload of the original FastAPI integration."""

    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    model: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    user_id: UserId | None = None
    stream: bool = False

    @field_validator("messages")
    @classmethod
    def _has_a_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if all(m.role == "system" for m in messages):
            raise ValueError("messages must include at least one user or assistant message")
        return messages


class OpenAIMessage(BaseModel):
    """A message of OpenAI's chat API; fields beyond role and content pass through."""

    model_config = ConfigDict(strict=True, extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class OpenAIChatRequest(BaseModel):
    """POST /v1/chat/completions: OpenAI's body; unknown fields are passed to the upstream."""

    model_config = ConfigDict(strict=True, extra="allow")
    model: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    # Opt-in server-side memory (the X-Conversation-Id header does the same).
    user_id: UserId | None = None


class UserIdPath(_Strict):
    """A user_id taken from the URL path."""

    user_id: UserId


class ConversationPageQuery(BaseModel):
    """GET /conversations/<user_id>: `limit` rows after `cursor` (both from the query string)."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,19}$")] | None = None


class Usage(BaseModel):
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


class CompletionResponse(BaseModel):
    user_id: str
    completion: str
    model: str
    usage: Usage


class ProcessPayloadResponse(BaseModel):
    content: str
    user_id: str
    model: str
    usage: Usage


# Field names that may appear in an error location; anything else pydantic adds there
# (union tags and the like) is dropped so that `field` reads like the client's JSON path.
_FIELD_NAMES = {
    name
    for model in (
        TextPart,
        ImageUrl,
        ImageUrlPart,
        ChatMessage,
        CompletionRequest,
        ProcessPayloadRequest,
        UserIdPath,
        ConversationPageQuery,
        OpenAIMessage,
        OpenAIChatRequest,
    )
    for name in model.model_fields
}


def error_details(exc: ValidationError) -> list[dict[str, str]]:
    """One {"field", "message"} per bad field, in the client's terms, for a 400 answer."""
    details: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        path = [str(p) for p in error["loc"] if isinstance(p, int) or p in _FIELD_NAMES]
        field = ".".join(path) or "body"
        message = error["msg"].removeprefix("Value error, ")
        if message not in details.setdefault(field, []):
            details[field].append(message)
    return [{"field": field, "message": "; ".join(messages)} for field, messages in details.items()]
