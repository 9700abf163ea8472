"""Responses API state: each response made (its exchange, its chain).

A response's input and output are rows of `messages` (its exchange), like any chat turn;
this table adds what the Responses API needs around them: the id, the chain through
`previous_response_id`, whether it is stored, and the response object as answered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.message import utc_now


class StoredResponse(db.Model):
    """One `response` of POST /v1/responses, owned by the client key that made it."""

    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_api_key_id_user_id", "api_key_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    exchange_id: Mapped[str] = mapped_column(String(36), index=True)
    # The conversation its rows belong to: the `conversation` asked for, else its chain's
    # first response id (a chain is a conversation of its own).
    user_id: Mapped[str] = mapped_column(String(128))
    previous_response_id: Mapped[str | None] = mapped_column(String(64))
    # store: false keeps usage and metadata for budgets and audits, never the content.
    store: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    # The response object as answered (None when not stored).
    body: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
