"""The `messages` table: every turn of every conversation, with its exchange and usage."""

from __future__ import annotations

import functools
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC (evaluated per row, not at import)."""
    return datetime.now(UTC)


# A row's public id: 32 random hex digits (128 bits), which say nothing of the row. The
# standard library's own function, so that writing a row runs no code of this folder.
new_public_id = functools.partial(secrets.token_hex, 16)


def as_utc(stamp: datetime) -> datetime:
    """A stored timestamp in UTC; naive values (SQLite returns those) are taken as UTC."""
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def iso_utc(stamp: datetime | None) -> str | None:
    """ISO 8601 in UTC; naive values (SQLite returns those) are taken as UTC."""
    return None if stamp is None else as_utc(stamp).isoformat()


class MessageStatus(StrEnum):
    """Lifecycle of an exchange; every row of one exchange carries the same status.

    Members are str: they compare equal to, bind, serialise (json.dumps) and format (%s,
    f-strings) as their plain values, which is what the `status` column holds and reads back.
    """

    PENDING = "pending"  # user turn recorded, upstream call in flight
    COMPLETED = "completed"  # reply recorded; the exchange is part of the history
    FAILED = "failed"  # upstream failed; kept for audit, never sent to the model again
    DISCONNECTED = "disconnected"  # the client left mid-stream; the partial reply is kept
    # The process serving it stopped (killed, or cut short past GRACEFUL_TIMEOUT) before the
    # reply was recorded: closed by the sweeper (services/sweeper.py), never sent as history.
    ABANDONED = "abandoned"
    # Not an exchange's state: the row is a summary of the conversation's older exchanges
    # (role "compaction", services/summaries.py). Never history as it is, never an item page's
    # message: the history puts it first, the Conversations API lists it as a compaction item.
    SUMMARY = "summary"


class Message(db.Model):
    """One turn. Rows sharing `exchange_id` are one request and its reply."""

    __tablename__ = "messages"
    __table_args__ = (
        # Every read of a conversation names its key: the key first, so another key's rows
        # under the same user_id are never visited (an unknown conversation and another
        # key's cost the same). History and item pages read completed rows in insertion order.
        Index("ix_messages_api_key_id_user_id_status_id", "api_key_id", "user_id", "status", "id"),
        # A key's conversations are listed by user_id, and a conversation's rows paged by id.
        Index("ix_messages_api_key_id_user_id", "api_key_id", "user_id"),
        # The console lists a key's conversations by newest activity: its rows, newest first.
        Index("ix_messages_api_key_id_id", "api_key_id", "id"),
        # The sweeper looks for old pending rows: an index of the in-flight rows alone stays
        # tiny however large the table grows (the query names 'pending' as a literal).
        Index(
            "ix_messages_pending_timestamp",
            "timestamp",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # A row is found by its public id: its items' ids and its page cursor (migration 0013).
        Index("ix_messages_public_id", "public_id", unique=True),
        # Row ids are never handed out twice (they order rows and pages). SQLite would reuse
        # the id of a deleted last row without AUTOINCREMENT; PostgreSQL's sequence never does.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    # What clients see of the row: its items are msg_<public_id>, fc_<public_id>_<n> and
    # fco_<public_id>, and `GET /conversations/<user_id>` names it (and pages after it) by it.
    # Random, so that no id tells how many rows anyone else wrote (the row id would).
    public_id: Mapped[str] = mapped_column(String(32), default=new_public_id)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    exchange_id: Mapped[str] = mapped_column(String(36), index=True)
    # The client key the conversation belongs to; NULL when keys are off. A user_id is
    # a conversation within its key: two keys using the same user_id never share one.
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, index=True)
    role: Mapped[str] = mapped_column(String(16))
    # A string, or a list of content parts kept as the client sent them.
    content: Mapped[Any] = mapped_column(JSON)
    # Every other field of the chat message (tool_calls, tool_call_id, name, refusal; and
    # "content": null where the message had none), so it is replayed exactly as sent.
    message_fields: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    # While a long stream is relayed, the pipeline touches its pending rows now and then,
    # so the sweeper can tell a live exchange from one whose process died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # On an exchange's first row: the tokens its request reserved from the key's budget that
    # day (NULL: none), which the sweeper gives back if its process dies before settling.
    reserved_tokens: Mapped[int | None] = mapped_column(Integer)
    # ... and the micro-dollars it reserved from the key's daily and monthly money budgets.
    reserved_micros: Mapped[int | None] = mapped_column(BigInteger)
    completion_id: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    # The deployment whose answer this reply is (issue 21; the attempts table has the rest).
    deployment: Mapped[str | None] = mapped_column(String(255))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    # On a reply's row: what it cost in micro-dollars at the prices of the moment it was
    # recorded (services/prices.py); NULL on a reply whose model is unpriced.
    cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    # On a summary row (status "summary"): the id of the newest row it covers; it stands for
    # every completed exchange of its conversation up to that row (migration 0017).
    compacts_through: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data, timestamp in ISO 8601 UTC; its id is its public id."""
        return {
            "id": self.public_id,
            "user_id": self.user_id,
            "exchange_id": self.exchange_id,
            "timestamp": iso_utc(self.timestamp),
            "role": self.role,
            "content": self.content,
            "message_fields": self.message_fields,
            "status": self.status,
            "error": self.error,
            "completion_id": self.completion_id,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
