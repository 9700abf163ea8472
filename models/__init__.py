"""SQLAlchemy models. Models never commit: the service layer owns transactions."""

from models.api_key import ApiKey, ApiKeyUsage
from models.message import Message, MessageStatus, iso_utc

__all__ = ["ApiKey", "ApiKeyUsage", "Message", "MessageStatus", "iso_utc"]
