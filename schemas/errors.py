"""The error envelopes as the OpenAPI document describes them: ours outside /v1, OpenAI's
under it (errors.py writes both)."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
