"""SQLAlchemy models. Models never commit: the service layer owns transactions."""

from models.message import Message, MessageStatus

__all__ = ["Message", "MessageStatus"]
