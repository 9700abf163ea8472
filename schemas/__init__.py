"""Request and response models (pydantic): the chat routes', then the Responses and
Conversations APIs'. Validation lives here, not in the routes."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from annotated_types import Ge
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

USER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
# Opt-in server-side memory on /v1/chat/completions: the conversation id as a header.
CONVERSATION_HEADER = "X-Conversation-Id"
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]


def whole_number(value: Any) -> Any:
    # JSON has one number type: 800.0 is the integer 800 to JSON Schema, and so to us.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


TokenCount = Annotated[int, Ge(1), BeforeValidator(whole_number)]


_DEFAULT_SCHEMAS: dict[type, dict[str, Any]] = {}


class Validated:
    """A request model that says how its own validation errors are answered (400).

    flask-openapi3 validates each view's parameters with these models and hands a
    failure to errors.validation_error_response, which asks the model for the answer.
    """

    invalid_message: ClassVar[str] = "Invalid request"
    # Also name the bad fields in the sentence, for clients (OpenAI's SDKs) that show only it.
    name_fields: ClassVar[bool] = False

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """pydantic's JSON schema of the model; with no arguments, made once per model.

        flask-openapi3 asks a header or query model for its whole JSON schema on every
        request it validates (to see which fields may be null), and pydantic builds it
        anew each time: a tenth of a `/v1/chat/completions` request's CPU, for its
        X-Conversation-Id header (bench/cpu.py --profile). A model's schema cannot change
        once its class exists. The answer is shared: read it, never change it. Calls with
        arguments (the OpenAPI document's) go to pydantic as they are.
        """
        if args or kwargs:
            return super().model_json_schema(*args, **kwargs)  # type: ignore[misc]
        schema = _DEFAULT_SCHEMAS.get(cls)
        if schema is None:
            schema = _DEFAULT_SCHEMAS[cls] = super().model_json_schema()  # type: ignore[misc]
        return schema

    @classmethod
    def details_of(cls, exc: ValidationError) -> list[dict[str, str]]:
        """One {"field", "message"} per bad field of a ValidationError of this model."""
        return error_details(exc)

    @classmethod
    def rejection(cls, details: list[dict[str, str]]) -> tuple[str, list[dict[str, str]] | None]:
        """The error sentence and the details of a 400 for these bad fields."""
        if any(d["field"] == "body" for d in details):  # not an object at all
            return "Request body must be a JSON object", None
        message = cls.invalid_message
        if cls.name_fields:
            message += ": " + "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return message, details


class _Strict(BaseModel):
    # Strict: "0.7" is not a number and 1 is not a string; unknown fields are ignored so
    # that clients sending OpenAI's extra fields keep working.
    model_config = ConfigDict(strict=True, extra="ignore")


# Bounds on what one request may carry (each breach is a 400 naming the field).
MAX_MESSAGES = 256
MAX_PARTS = 64
MAX_MESSAGE_CHARS = 100_000
MessageText = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS)]


class TextPart(_Strict):
    type: Literal["text"]
    text: MessageText


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
    return {"text": "text_part", "image_url": "image_part"}.get(kind) if isinstance(kind, str) else None


ContentPart = Annotated[
    Annotated[TextPart, Tag("text_part")] | Annotated[ImageUrlPart, Tag("image_part")],
    Discriminator(
        _part_kind,
        custom_error_type="content_part_type",
        custom_error_message="Content part type must be 'text' or 'image_url'",
    ),
]


def _string_or_list(value: Any) -> str | None:
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else None


def _text_or_parts(parts: Any, what: str) -> Any:
    """A string, or 1 to MAX_PARTS parts: the shape of message content and of tool output."""
    return Annotated[
        Annotated[MessageText, Tag("string")]
        | Annotated[list[parts], Field(min_length=1, max_length=MAX_PARTS), Tag("list")],
        Discriminator(
            _string_or_list,
            custom_error_type="content_type",
            custom_error_message=f"{what} must be a string or a list of content parts",
        ),
    ]


Content = _text_or_parts(ContentPart, "Content")


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: Content

    def as_openai(self) -> dict[str, Any]:
        """The message as the OpenAI API takes it (content parts kept losslessly)."""
        return self.model_dump(mode="json", exclude_none=True)


class CompletionRequest(Validated, _Strict):
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


class ProcessPayloadRequest(Validated, _Strict):
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


class OpenAIMessage(BaseModel):
    """A message of OpenAI's chat API; fields beyond role and content pass through."""

    model_config = ConfigDict(strict=True, extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: MessageText | Annotated[list[dict[str, Any]], Field(max_length=MAX_PARTS)] | None = None


class OpenAIChatRequest(Validated, BaseModel):
    """POST /v1/chat/completions: OpenAI's body; unknown fields are passed to the upstream."""

    name_fields: ClassVar[bool] = True
    model_config = ConfigDict(strict=True, extra="allow")
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
    # Opt-in server-side memory (the X-Conversation-Id header does the same).
    user_id: UserId | None = None

    @field_validator("messages")
    @classmethod
    def _has_a_turn(cls, messages: list[OpenAIMessage]) -> list[OpenAIMessage]:
        if all(m.role in ("system", "developer") for m in messages):
            raise ValueError("messages must include at least one user, assistant or tool message")
        return messages


class UserIdPath(Validated, _Strict):
    """A user_id taken from the URL path."""

    invalid_message: ClassVar[str] = "Invalid user_id"

    user_id: UserId


class ConversationPageQuery(Validated, BaseModel):
    """GET /conversations/<user_id>: `limit` rows after `cursor` (both from the query string)."""

    invalid_message: ClassVar[str] = "Invalid query"
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=200)
    # Row ids are 64-bit: 18 digits always fit.
    cursor: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,18}$")] | None = None


class ConversationListQuery(Validated, BaseModel):
    """GET /conversations: `limit` conversations after the user_id `cursor`."""

    invalid_message: ClassVar[str] = "Invalid query"
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)] | None = None


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


class ErrorDetail(BaseModel):
    field: str
    message: str


class TokenBudget(BaseModel):
    """A client key's daily token budget, on the 429 that says a request's worst case does not fit in it."""

    daily_tokens: int
    used_today: int
    reserved_today: int = Field(description="held by the key's requests in progress, settled when they end")
    request_worst_case: int = Field(description="the refused request's estimated prompt tokens plus its max_tokens")
    resets_at: str


class ErrorResponse(BaseModel):
    """Every error outside /v1: a sentence, and the bad fields for validation errors."""

    error: str
    details: list[ErrorDetail] | None = None
    code: str | None = None
    request_id: str | None = None
    budget: TokenBudget | None = None


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    """Every error under /v1, in OpenAI's shape."""

    error: OpenAIErrorBody


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


class ModelPath(Validated, BaseModel):
    """A model id taken from the URL path (GET /v1/models/<model>)."""

    invalid_message: ClassVar[str] = "Invalid model"
    model: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class ModelList(BaseModel):
    object: str
    data: list[ModelInfo]


class StoredMessage(BaseModel):
    id: int
    user_id: str
    exchange_id: str
    timestamp: str
    role: str
    content: Any
    # The message's other fields as sent or received (tool_calls, tool_call_id, name, refusal).
    message_fields: dict[str, Any] | None = None
    status: str
    error: str | None
    completion_id: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


class ConversationPageResponse(BaseModel):
    user_id: str
    messages: list[StoredMessage]
    next_cursor: str | None


class ConversationSummary(BaseModel):
    user_id: str
    messages: int
    last_message_at: str


class ConversationListResponse(BaseModel):
    conversations: list[ConversationSummary]
    next_cursor: str | None


class ExchangeCounts(BaseModel):
    total: int
    completed: int
    failed: int
    pending: int
    abandoned: int = Field(
        description="closed by the service: the process serving them stopped before their reply was recorded"
    )


class TokenTotals(BaseModel):
    prompt: int
    completion: int
    total: int


class ConversationUsageResponse(BaseModel):
    user_id: str
    exchanges: ExchangeCounts
    messages: int
    tokens: TokenTotals
    first_message_at: str | None
    last_message_at: str | None


class HealthResponse(BaseModel):
    status: str


class ReadinessResponse(BaseModel):
    status: str | None = None
    error: str | None = None
    database: Literal["ok", "unavailable", "unwritable"] = Field(
        description="unavailable: it does not answer; unwritable: it answers, but replies it could not store "
        "wait in the local journal, recorded as soon as it takes writes again"
    )
    ratelimit_storage: Literal["ok", "degraded"] = Field(
        description="degraded: the shared storage (Redis) is unreachable, so each process counts limits on its own"
    )


class ConversationHeader(Validated, BaseModel):
    """Opt-in server-side memory for /v1/chat/completions."""

    model_config = ConfigDict(populate_by_name=True)
    conversation_id: Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)] | None = Field(
        default=None, alias=CONVERSATION_HEADER
    )

    @classmethod
    def rejection(cls, details: list[dict[str, str]]) -> tuple[str, list[dict[str, str]] | None]:
        return (
            f"{CONVERSATION_HEADER} must be 1 to 128 letters, digits or ._:-",
            [{"field": "user_id", "message": "invalid conversation id"}],
        )


# Field names that may appear in an error location; anything else pydantic adds there
# (union tags and the like) is dropped so that `field` reads like the client's JSON path.
_FIELD_NAMES = frozenset(
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
)


# Request models by name: a ValidationError's `title` names the model that raised it.
REQUEST_MODELS: dict[str, type[Validated]] = {
    model.__name__: model
    for model in (
        CompletionRequest,
        ProcessPayloadRequest,
        OpenAIChatRequest,
        UserIdPath,
        ConversationPageQuery,
        ConversationListQuery,
        ConversationHeader,
        ModelPath,
    )
}


def rejection_of(exc: ValidationError) -> tuple[str, list[dict[str, str]] | None]:
    """The 400's sentence and details for a request model's ValidationError."""
    model = REQUEST_MODELS.get(exc.title, Validated)
    return model.rejection(model.details_of(exc))


def error_details(exc: ValidationError, names: frozenset[str] | None = None) -> list[dict[str, str]]:
    """One {"field", "message"} per bad field, in the client's terms, for a 400 answer: the
    path keeps the `names` of fields (the chat models' by default), list indexes, and the
    keys of a `metadata` object (the client's own names, so "metadata.team" says which)."""
    names = _FIELD_NAMES if names is None else names
    details: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = error["loc"]
        path = [
            str(part)
            for index, part in enumerate(loc)
            if isinstance(part, int) or part in names or (index and loc[index - 1] == "metadata")
        ]
        field = ".".join(path) or "body"
        message = error["msg"].removeprefix("Value error, ")
        if message not in details.setdefault(field, []):
            details[field].append(message)
    return [{"field": field, "message": "; ".join(messages)} for field, messages in details.items()]


# The Responses and Conversations APIs ------------------------------------------------------
#
# POST /v1/responses: the body of OpenAI's Responses API, as far as a chat-completions upstream
# can honour it. What the service cannot do (built-in tools, background mode, prompt templates,
# file inputs, item references, logprobs) is refused with a sentence that says so, rather than
# silently ignored. Fields OpenAI has and we do not act on are ignored, as the chat route does,
# so that clients sending newer fields keep working.

# OpenAI's own limits (128 functions per request; 16 metadata pairs; max_output_tokens at least 16).
MAX_TOOLS = 128
MAX_METADATA_PAIRS = 16
MIN_OUTPUT_TOKENS = 16
# chat completions' rule for function names, which the upstream enforces
FUNCTION_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# `include` values we honour: image URLs are always kept; we never produce reasoning items, so
# asking for their encrypted content is trivially satisfied (stateless agent clients always ask).
SUPPORTED_INCLUDES = frozenset({"message.input_image.image_url", "reasoning.encrypted_content"})

Identifier = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
FunctionName = Annotated[str, StringConstraints(pattern=FUNCTION_NAME_PATTERN)]
CallId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ItemId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class _Body(BaseModel):
    # Strict like the other request schemas: "0.7" is not a number, 1 is not a string.
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


def _kind_of(value: Any) -> Any:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


def _tagged(models: dict[str, type[BaseModel]], error_type: str, message: str) -> Any:
    """A union picked by the "type" field; tags end in "_kind" so they never pass for a field name."""

    def kind(value: Any) -> str | None:
        tag = _kind_of(value)
        return f"{tag}_kind" if isinstance(tag, str) and tag in models else None

    members = tuple(Annotated[model, Tag(f"{name}_kind")] for name, model in models.items())
    return Annotated[
        Union[members],  # noqa: UP007 - a runtime-built union needs the subscript form
        Discriminator(kind, custom_error_type=error_type, custom_error_message=message),
    ]


# -- content parts ------------------------------------------------------------------------


class InputTextPart(_Body):
    type: Literal["input_text"]
    text: MessageText


class InputImagePart(_Body):
    type: Literal["input_image"]
    image_url: Annotated[str, StringConstraints(min_length=1)]
    detail: Literal["low", "high", "auto", "original"] = "auto"


class OutputTextPart(_Body):
    type: Literal["output_text"]
    text: MessageText
    # Citations only come from built-in tools; what a client sends back is kept as sent.
    annotations: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_PARTS)


class RefusalPart(_Body):
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
    _tagged(
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


class MessageItem(_Body):
    """A message; "type" may be left out (the SDK's EasyInputMessage)."""

    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: _text_or_parts(MessagePart, "Message content")
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


class FunctionCallItem(_Body):
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


class FunctionCallOutputItem(_Body):
    """The result of a function call, answered by the client."""

    type: Literal["function_call_output"]
    call_id: CallId
    output: _text_or_parts(ToolOutputPart, "Function call output")
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
    _tagged(
        {"message": MessageItem, "function_call": FunctionCallItem, "function_call_output": FunctionCallOutputItem},
        "input_item_type",
        "Input item must be an object: a message (with a role), a function_call or a function_call_output",
    ),
    BeforeValidator(_supported_item),
]


Input = Annotated[
    Annotated[MessageText, Tag("string")]
    | Annotated[list[InputItem], Field(min_length=1, max_length=MAX_MESSAGES), Tag("list")],
    Discriminator(
        _string_or_list,
        custom_error_type="input_type",
        custom_error_message="input must be a string or a list of input items",
    ),
]


# -- tools, tool choice, text format, reasoning ---------------------------------------------


class FunctionTool(_Body):
    type: Literal["function"]
    name: FunctionName
    description: MessageText | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


def _function_tools_only(value: Any) -> Any:
    kind = _kind_of(value)
    if isinstance(kind, str) and kind != "function":
        raise ValueError(f"Tool type '{kind}' is not supported; only 'function' tools are")
    return value


FunctionTools = Annotated[
    list[Annotated[FunctionTool, BeforeValidator(_function_tools_only)]], Field(max_length=MAX_TOOLS)
]


class FunctionToolChoice(_Body):
    type: Literal["function"]
    name: FunctionName


def _choice_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "option"
    return "function_choice" if _kind_of(value) == "function" else None


def _checked_choice(value: Any) -> Any:
    kind = _kind_of(value)
    if isinstance(value, dict) and isinstance(kind, str) and kind != "function":
        raise ValueError(f"tool_choice type '{kind}' is not supported; use 'auto', 'none', 'required' or a function")
    return value


ToolChoice = Annotated[
    Annotated[Literal["auto", "none", "required"], Tag("option")]
    | Annotated[FunctionToolChoice, Tag("function_choice")],
    Discriminator(
        _choice_kind,
        custom_error_type="tool_choice_type",
        custom_error_message="tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'name': ...}",
    ),
    BeforeValidator(_checked_choice),
]


class TextFormatText(_Body):
    type: Literal["text"]


class TextFormatJSONObject(_Body):
    type: Literal["json_object"]


class TextFormatJSONSchema(_Body):
    type: Literal["json_schema"]
    name: FunctionName
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: MessageText | None = None


TextFormat = _tagged(
    {"text": TextFormatText, "json_object": TextFormatJSONObject, "json_schema": TextFormatJSONSchema},
    "text_format_type",
    "text.format.type must be 'text', 'json_object' or 'json_schema'",
)


class TextConfig(_Body):
    format: TextFormat = Field(default_factory=lambda: TextFormatText(type="text"))
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(_Body):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    # Accepted and not acted on: a chat upstream returns no reasoning summaries.
    summary: Literal["auto", "concise", "detailed"] | None = None


class ConversationRef(_Body):
    id: Identifier


ConversationParam = Annotated[
    Annotated[Identifier, Tag("string")] | Annotated[ConversationRef, Tag("object")],
    Discriminator(
        lambda v: "string" if isinstance(v, str) else ("object" if isinstance(v, dict | ConversationRef) else None),
        custom_error_type="conversation_type",
        custom_error_message='conversation must be a conversation id or {"id": ...}',
    ),
]
MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_PAIRS)]


# -- the request ----------------------------------------------------------------------------


class ResponseRequest(Validated, _Body):
    """POST /v1/responses. Field order matters: later validators read earlier fields."""

    name_fields: ClassVar[bool] = True

    @classmethod
    def details_of(cls, exc: ValidationError) -> list[dict[str, str]]:
        return response_error_details(exc)

    model: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    input: Input
    instructions: MessageText | None = None
    previous_response_id: Identifier | None = None
    conversation: ConversationParam | None = None
    store: bool = True
    stream: bool = False
    tools: FunctionTools = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True
    text: TextConfig = Field(default_factory=TextConfig)
    max_output_tokens: Annotated[int, Ge(MIN_OUTPUT_TOKENS), BeforeValidator(whole_number)] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    metadata: Metadata = Field(default_factory=dict)
    truncation: Literal["auto", "disabled"] = "disabled"
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    safety_identifier: Annotated[str, StringConstraints(max_length=128)] | None = None
    reasoning: ReasoningConfig | None = None
    # Refused when asked for (each says why); present so that false / null / [] still pass.
    # The document says what is accepted; the validators below say why anything else is not.
    background: Annotated[bool | None, WithJsonSchema({"enum": [False, None]})] = None
    include: Annotated[
        list[str] | None,
        WithJsonSchema({"anyOf": [{"type": "array", "items": {"enum": sorted(SUPPORTED_INCLUDES)}}, {"type": "null"}]}),
    ] = None
    prompt: Annotated[Any, WithJsonSchema({"type": "null"})] = None
    top_logprobs: Annotated[int | None, WithJsonSchema({"enum": [0, None]})] = None

    @property
    def conversation_id(self) -> str | None:
        """The conversation's id, whichever of the two shapes the client sent."""
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation

    @field_validator("conversation")
    @classmethod
    def _not_with_previous_response(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("previous_response_id") is not None:
            raise ValueError("Use either previous_response_id or conversation, not both")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_names_a_tool(cls, value: Any, info: ValidationInfo) -> Any:
        tools = info.data.get("tools")
        if tools is None:  # tools itself was invalid: that error says enough
            return value
        if value == "required" and not tools:
            raise ValueError("tool_choice 'required' needs at least one tool")
        if isinstance(value, FunctionToolChoice) and value.name not in {tool.name for tool in tools}:
            raise ValueError(f"tool_choice names function '{value.name}', which is not in tools")
        return value

    @field_validator("background")
    @classmethod
    def _no_background(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("Background mode is not supported; omit background or set it to false")
        return value

    @field_validator("include")
    @classmethod
    def _honourable_includes(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in SUPPORTED_INCLUDES:
                raise ValueError(f"include value '{name}' is not supported")
        return value

    @field_validator("prompt")
    @classmethod
    def _no_prompt_templates(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("Prompt templates are not supported; send instructions and input instead")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise ValueError("Log probabilities are not supported; omit top_logprobs or set it to 0")
        return value


# -- errors in the client's terms ----------------------------------------------------------

_MODELS = (
    InputTextPart,
    InputImagePart,
    OutputTextPart,
    RefusalPart,
    MessageItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    FunctionToolChoice,
    TextFormatJSONSchema,
    TextConfig,
    ReasoningConfig,
    ConversationRef,
    ResponseRequest,
)
# Names that may appear in an error location (aliases as the client spells them); anything else
# pydantic puts there (union tags and the like) is dropped so that a path reads like the JSON.
_RESPONSE_FIELD_NAMES = frozenset(info.alias or name for model in _MODELS for name, info in model.model_fields.items())


def response_error_details(exc: ValidationError) -> list[dict[str, str]]:
    """error_details for the Responses and Conversations APIs ("input.0.content"), their
    fields named as the client spells them (aliases included)."""
    return error_details(exc, _RESPONSE_FIELD_NAMES)


# -- the Conversations API and the responses' paths and queries --------------------------------


class _ApiRequest(Validated, BaseModel):
    """A request model of the Responses and Conversations routes: OpenAI's 400 naming the fields."""

    model_config = ConfigDict(extra="ignore")
    name_fields: ClassVar[bool] = True

    @classmethod
    def details_of(cls, exc: ValidationError) -> list[dict[str, str]]:
        return response_error_details(exc)


class ResponsePath(_ApiRequest):
    response_id: Identifier


class ConversationPath(_ApiRequest):
    conversation_id: Identifier


class ItemPath(_ApiRequest):
    conversation_id: Identifier
    item_id: ItemId


class ItemListQuery(_ApiRequest):
    """`limit` items (1 to 100) in `order` ("desc", newest first, as OpenAI's default), after the item `after`."""

    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: ItemId | None = None


class ConversationCreate(_ApiRequest):
    """POST /v1/conversations: optional first items (at most 20) and metadata."""

    model_config = ConfigDict(extra="ignore", strict=True)
    items: Annotated[list[InputItem], Field(max_length=20)] | None = None
    metadata: Metadata | None = None


class ConversationUpdate(_ApiRequest):
    """POST /v1/conversations/{id}: the metadata that replaces the conversation's."""

    model_config = ConfigDict(extra="ignore", strict=True)
    metadata: Metadata


class ItemsAdd(_ApiRequest):
    """POST /v1/conversations/{id}/items: 1 to 20 items to append."""

    model_config = ConfigDict(extra="ignore", strict=True)
    items: Annotated[list[InputItem], Field(min_length=1, max_length=20)]


# The Conversations API's own field names read in error paths too ("items.0.content").
_RESPONSE_FIELD_NAMES = _RESPONSE_FIELD_NAMES | {
    name
    for model in (ConversationCreate, ConversationUpdate, ItemsAdd, ItemListQuery, ItemPath)
    for name in model.model_fields
}

for _model in (
    ResponseRequest,
    ResponsePath,
    ConversationPath,
    ItemPath,
    ItemListQuery,
    ConversationCreate,
    ConversationUpdate,
    ItemsAdd,
):
    REQUEST_MODELS[_model.__name__] = _model
