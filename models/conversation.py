"""Conversations API state: what a conversation keeps beyond its messages (its metadata).

Its messages are rows of `messages` (models/message.py), named by `user_id` within their key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.message import utc_now


class ConversationRecord(db.Model):
    """What the Conversations API keeps of a conversation beyond its messages: its metadata.

    A conversation that only the chat routes wrote (a `user_id`) has none and still exists.
    """

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_api_key_id_user_id", "api_key_id", "user_id", unique=True),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    user_id: Mapped[str] = mapped_column(String(128))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
