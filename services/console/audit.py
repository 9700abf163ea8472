"""The console's audit log: who did what, when, to which object. Never a secret."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import AuditEntry

PAGE_SIZE = 100


def record_action(
    session: Session, actor: str, action: str, target: str | None = None, detail: dict[str, Any] | None = None
) -> None:
    """Add one audit entry to the caller's unit of work (so it commits with the action)."""
    session.add(AuditEntry(actor=actor[:100], action=action, target=target[:100] if target else None, detail=detail))


def recent_actions(session: Session, before_id: int | None = None, limit: int = PAGE_SIZE) -> list[dict[str, Any]]:
    """The newest entries (older than `before_id` when given: keyset paging, never OFFSET)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return [entry.to_dict() for entry in session.scalars(query)]
