"""SQLAlchemy models. Models never commit: the service layer owns transactions."""

from models.admin import Admin, AuditEntry
from models.api_key import ApiKey, ApiKeyMonthlySpend, ApiKeyUsage, usd
from models.compaction_lease import CompactionLease
from models.conversation import ConversationRecord
from models.message import Message, MessageStatus, as_utc, iso_utc
from models.request_log import RequestKeyRollup, RequestLog, RequestRollup
from models.response import StoredResponse
from models.upstream_attempt import UpstreamAttempt

__all__ = [
    "Admin",
    "AuditEntry",
    "ApiKey",
    "ApiKeyMonthlySpend",
    "ApiKeyUsage",
    "CompactionLease",
    "ConversationRecord",
    "Message",
    "MessageStatus",
    "RequestKeyRollup",
    "RequestLog",
    "RequestRollup",
    "StoredResponse",
    "UpstreamAttempt",
    "as_utc",
    "iso_utc",
    "usd",
]
