"""SQLAlchemy models. Models never commit: the service layer owns transactions."""

from models.message import Message, MessageStatus, iso_utc

__all__ = ["Message", "MessageStatus", "iso_utc"]
