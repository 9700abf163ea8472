"""The `upstream_attempts` table: every call the router made to a deployment for an exchange.

An exchange's rows (models/message.py) say what was asked and answered; these say how the
answer was got: which deployments were tried, in what order, how each ended and how long
it took, the answering one included (outcome "ok"). They are audit data, never billed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.message import utc_now


class UpstreamAttempt(db.Model):
    """One attempt of one exchange (see services/llm/types.py's Attempt)."""

    __tablename__ = "upstream_attempts"
    # The console's upstreams page reads a deployment's recent attempts (migration 0019).
    __table_args__ = (Index("ix_upstream_attempts_deployment_created_at", "deployment", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exchange_id: Mapped[str] = mapped_column(String(36), index=True)
    # 1 for the exchange's first call, then 2, 3... in the order the router made them.
    attempt: Mapped[int] = mapped_column(Integer)
    deployment: Mapped[str] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(255))
    # "ok", "cut" (a stream broken off and continued elsewhere), or an UpstreamError class name.
    outcome: Mapped[str] = mapped_column(String(32))
    # The upstream's HTTP status; NULL when it never answered (a reset, a timeout).
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    def to_dict(self) -> dict[str, Any]:
        """The attempt as the console shows it (every column but its ids and time)."""
        return {name: getattr(self, name) for name in SHOWN_COLUMNS}


# An attempt's columns a reader is shown.
SHOWN_COLUMNS = ("attempt", "deployment", "model", "outcome", "status_code", "latency_ms", "error")
