"""The conversations' models: our routes under /conversations (a conversation's messages,
the list of conversations, their usage), and OpenAI's Conversations API under
/v1/conversations (conversations, their metadata and items)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.common import USER_ID_PATTERN, Identifier, ItemId, Metadata, Parameters, RequestModel, UserId
from schemas.items import ConversationItem
from schemas.validation import ResponsesValidated, Validated

# -- our conversation routes ------------------------------------------------------------------


class UserIdPath(Validated, Parameters):
    """A user_id taken from the URL path."""

    invalid_message: ClassVar[str] = "Invalid user_id"

    user_id: UserId


class ConversationPageQuery(Validated, Parameters):
    """GET /conversations/<user_id>: `limit` rows after `cursor` (both from the query string)."""

    invalid_message: ClassVar[str] = "Invalid query"
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=200)
    # A row's public id: 32 hex digits (models/message.py).
    cursor: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = None


class ConversationListQuery(Validated, Parameters):
    """GET /conversations: `limit` conversations after the user_id `cursor`."""

    invalid_message: ClassVar[str] = "Invalid query"
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)] | None = None


class StoredMessage(BaseModel):
    id: str
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


class CostTotal(BaseModel):
    currency: str = Field(description="the price table's currency: USD")
    amount: float = Field(description="what the replies cost, as recorded with each at the prices of that moment")
    unpriced_replies: int = Field(description="replies whose model has no price: they count 0 in `amount`")


class ConversationUsageResponse(BaseModel):
    user_id: str
    exchanges: ExchangeCounts
    messages: int
    tokens: TokenTotals
    first_message_at: str | None
    last_message_at: str | None
    cost: CostTotal


# -- OpenAI's Conversations API ---------------------------------------------------------------


class ConversationPath(ResponsesValidated, Parameters):
    conversation_id: Identifier


class ItemPath(ResponsesValidated, Parameters):
    conversation_id: Identifier
    item_id: ItemId


# Also the page of a stored response's input items (GET /v1/responses/{id}/input_items).
class ItemListQuery(ResponsesValidated, Parameters):
    """`limit` items (1 to 100) in `order` ("desc", newest first, as OpenAI's default), after the item `after`."""

    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"
    after: ItemId | None = None


class ConversationCreate(ResponsesValidated, RequestModel):
    """POST /v1/conversations: optional first items (at most 20) and metadata."""

    items: Annotated[list[ConversationItem], Field(max_length=20)] | None = None
    metadata: Metadata | None = None


class ConversationUpdate(ResponsesValidated, RequestModel):
    """POST /v1/conversations/{id}: the metadata that replaces the conversation's."""

    metadata: Metadata


class ItemsAdd(ResponsesValidated, RequestModel):
    """POST /v1/conversations/{id}/items: 1 to 20 items to append."""

    items: Annotated[list[ConversationItem], Field(min_length=1, max_length=20)]
