"""POST /v1/responses: the body of OpenAI's Responses API, as far as a chat-completions upstream
can honour it, and the paths of its stored responses.

What the service cannot do (built-in tools, background mode, prompt templates, file inputs,
item references) is refused with a sentence that says so, rather than silently ignored.
Fields OpenAI has and we do not act on are ignored, as the chat route does, so that clients
sending newer fields keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Le
from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from schemas.common import (
    MAX_MESSAGES,
    FunctionName,
    Identifier,
    MessageText,
    Metadata,
    Parameters,
    RequestModel,
    kind_of,
    string_or_list,
    tagged_union,
    whole_number,
)
from schemas.items import InputItem
from schemas.validation import ResponsesValidated

# OpenAI's own limits (128 functions per request; max_output_tokens at least 16; 0 to 20 top
# logprobs) and the Open Responses specification's (a prompt_cache_key of 64 characters at most).
MAX_TOOLS = 128
MIN_OUTPUT_TOKENS = 16
MAX_TOP_LOGPROBS = 20
MAX_PROMPT_CACHE_KEY = 64
# `include` values we honour: image URLs are always kept; we never produce reasoning items, so
# asking for their encrypted content is trivially satisfied (stateless agent clients always ask);
# output text logprobs are asked of the upstream (chat's `logprobs`) and put in the output.
LOGPROBS_INCLUDE = "message.output_text.logprobs"
SUPPORTED_INCLUDES = frozenset({"message.input_image.image_url", "reasoning.encrypted_content", LOGPROBS_INCLUDE})
# The service tiers OpenAI's SDK knows (openai.types.responses.ServiceTier); the upstream
# decides which it serves, and the response names the one it says it used.
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"]


Input = Annotated[
    Annotated[MessageText, Tag("string")]
    | Annotated[list[InputItem], Field(min_length=1, max_length=MAX_MESSAGES), Tag("list")],
    Discriminator(
        string_or_list,
        custom_error_type="input_type",
        custom_error_message="input must be a string or a list of input items",
    ),
]


# -- tools, tool choice, text format, reasoning ---------------------------------------------


class FunctionTool(RequestModel):
    type: Literal["function"]
    name: FunctionName
    description: MessageText | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


def _function_tools_only(value: Any) -> Any:
    kind = kind_of(value)
    if isinstance(kind, str) and kind != "function":
        raise ValueError(f"Tool type '{kind}' is not supported; only 'function' tools are")
    return value


FunctionTools = Annotated[
    list[Annotated[FunctionTool, BeforeValidator(_function_tools_only)]], Field(max_length=MAX_TOOLS)
]


class FunctionToolChoice(RequestModel):
    type: Literal["function"]
    name: FunctionName


def _choice_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "option"
    return "function_choice" if kind_of(value) == "function" else None


def _checked_choice(value: Any) -> Any:
    kind = kind_of(value)
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


class TextFormatText(RequestModel):
    type: Literal["text"]


class TextFormatJSONObject(RequestModel):
    type: Literal["json_object"]


class TextFormatJSONSchema(RequestModel):
    type: Literal["json_schema"]
    name: FunctionName
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: MessageText | None = None


TextFormat = tagged_union(
    {"text": TextFormatText, "json_object": TextFormatJSONObject, "json_schema": TextFormatJSONSchema},
    "text_format_type",
    "text.format.type must be 'text', 'json_object' or 'json_schema'",
)


class TextConfig(RequestModel):
    format: TextFormat = Field(default_factory=lambda: TextFormatText(type="text"))
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(RequestModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    # Accepted and not acted on: a chat upstream returns no reasoning summaries.
    summary: Literal["auto", "concise", "detailed"] | None = None


class ConversationRef(RequestModel):
    id: Identifier


ConversationParam = Annotated[
    Annotated[Identifier, Tag("string")] | Annotated[ConversationRef, Tag("object")],
    Discriminator(
        lambda v: "string" if isinstance(v, str) else ("object" if isinstance(v, dict | ConversationRef) else None),
        custom_error_type="conversation_type",
        custom_error_message='conversation must be a conversation id or {"id": ...}',
    ),
]


class ContextManagement(RequestModel):
    """One `context_management` entry: compact the input first when it passes
    `compact_threshold` tokens (services/responses/compaction.py)."""

    type: Literal["compaction"]
    compact_threshold: Annotated[int, Ge(1), BeforeValidator(whole_number)] | None = None


# -- the request ----------------------------------------------------------------------------


class ResponseRequest(ResponsesValidated, RequestModel):
    """POST /v1/responses. Field order matters: later validators read earlier fields."""

    # Optional, as the specification has it: the configured default model (OPENAI_MODEL) answers.
    model: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
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
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    top_logprobs: Annotated[int, Ge(0), Le(MAX_TOP_LOGPROBS), BeforeValidator(whole_number)] | None = None
    prompt_cache_key: Annotated[str, StringConstraints(max_length=MAX_PROMPT_CACHE_KEY)] | None = None
    service_tier: ServiceTier | None = None
    # Enforced here, not upstream (chat completions has no such limit): see services/responses/objects.py.
    max_tool_calls: Annotated[int, Ge(1), BeforeValidator(whole_number)] | None = None
    metadata: Metadata = Field(default_factory=dict)
    truncation: Literal["auto", "disabled"] = "disabled"
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    safety_identifier: Annotated[str, StringConstraints(max_length=128)] | None = None
    reasoning: ReasoningConfig | None = None
    context_management: Annotated[list[ContextManagement], Field(max_length=1)] | None = None
    # Refused when asked for (each says why); present so that false / null / [] still pass.
    # The document says what is accepted; the validators below say why anything else is not.
    background: Annotated[bool | None, WithJsonSchema({"enum": [False, None]})] = None
    include: Annotated[
        list[str] | None,
        WithJsonSchema({"anyOf": [{"type": "array", "items": {"enum": sorted(SUPPORTED_INCLUDES)}}, {"type": "null"}]}),
    ] = None
    prompt: Annotated[Any, WithJsonSchema({"type": "null"})] = None

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


class ResponsePath(ResponsesValidated, Parameters):
    # Its field's name stays out of RESPONSES_FIELDS, as it always has, so a malformed response
    # id is answered "Request body must be a JSON object"; deleting this line would name it.
    names_in_errors: ClassVar[bool] = False
    response_id: Identifier


class InputTokensRequest(ResponseRequest):
    """POST /v1/responses/input_tokens: a response's request, whose input tokens are counted
    as a create would send them. `model` and `input` may be left out (the state alone is
    counted); fields only a create acts on (store, stream, metadata...) are not used."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    input: Input | None = None


class CompactRequest(InputTokensRequest):
    """POST /v1/responses/compact (OpenAI's `responses.compact`): the input (and the state
    behind `previous_response_id`) to compact, with its `instructions`; `model` makes the
    summary (the configured default when left out). Fields only a create acts on are not used."""
