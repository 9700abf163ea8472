"""The console's operators (admin credentials made by `flask admins create`) and the audit
log of what they did."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.message import iso_utc, utc_now


class Admin(db.Model):
    """Someone who may sign in to the console. `password_hash` is a slow, salted hash
    (werkzeug's scrypt): the password itself is never stored."""

    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    def to_dict(self) -> dict[str, Any]:
        """Name and creation time; never the hash."""
        return {"id": self.id, "name": self.name, "created_at": iso_utc(self.created_at)}


class AuditEntry(db.Model):
    """One thing an operator did (or tried): who, when, what, to which object.

    `actor` is a name, not a foreign key: the entry outlives the admin it names.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at_id", "at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    def to_dict(self) -> dict[str, Any]:
        """Every field, the time in ISO 8601 UTC."""
        return {
            "id": self.id,
            "at": iso_utc(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }
