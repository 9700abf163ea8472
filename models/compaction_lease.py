"""The `compaction_leases` table: who is summarising a conversation, and until when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db


class CompactionLease(db.Model):
    """One conversation's summarising lease: taken by a conditional INSERT or UPDATE (never a
    process lock), so one process on one host writes a conversation's next summary at a time.
    An expired lease (its holder died) is taken over; a finished one is deleted."""

    __tablename__ = "compaction_leases"

    # "<api key id or empty>:<user_id>": a conversation within its key (NULL keys compare equal here).
    conversation: Mapped[str] = mapped_column(String(160), primary_key=True)
    holder: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
