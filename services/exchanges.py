"""Writing an exchange: one request and its reply, rows that share `exchange_id` and a status.

The new messages are recorded `pending` before the LLM call (unit of work 1); the reply,
or the failure, closes the exchange after it (unit of work 2). Every function takes the
session of the caller's unit of work (database.unit_of_work) and never commits or closes
it: the pipeline decides where transactions begin and end.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from models import Message, MessageStatus, UpstreamAttempt

MESSAGES = Message.__table__
ATTEMPTS = UpstreamAttempt.__table__

# The statements every exchange runs, built once (SQLAlchemy then only looks up their
# compiled form): building them per request was a quarter of its two transactions' CPU.
_ADD_ROWS = insert(MESSAGES)
_CLOSE_ROWS = (
    update(MESSAGES)
    .where(MESSAGES.c.exchange_id == bindparam("exchange"))
    .values(status=bindparam("new_status"), error=bindparam("new_error"))
)
_CLOSE_PENDING_ROWS = _CLOSE_ROWS.where(MESSAGES.c.status == MessageStatus.PENDING)
# A failed exchange's rows name the model it asked for. Not its assistant rows: on those a
# model marks the reply (services/responses/store.py), and a client's own turn is none.
_NAME_REQUESTED_MODEL = (
    update(MESSAGES)
    .where(MESSAGES.c.exchange_id == bindparam("exchange"), MESSAGES.c.role != "assistant")
    .values(model=bindparam("requested_model"))
)
_ADD_ATTEMPTS = insert(ATTEMPTS)


def new_conversation_id() -> str:
    """A fresh conversation id (UUID4)."""
    return str(uuid.uuid4())


def new_exchange_id() -> str:
    """A fresh exchange id (UUID4)."""
    return str(uuid.uuid4())


def without_content(message: dict[str, Any]) -> dict[str, Any]:
    """The message with nothing of what was said: its role only (store: false keeps no content)."""
    return {"role": message["role"], "content": ""}


def stored_columns(message: dict[str, Any]) -> dict[str, Any]:
    """The columns one chat message is stored in: role, content, and every other field."""
    fields = {name: value for name, value in message.items() if name not in ("role", "content")}
    content = message.get("content")
    if content is None:
        # A message without content (an assistant's tool calls): the column holds "",
        # the fields remember that it was null.
        fields["content"] = None
    stored = content if content is not None else ""
    return {"role": message["role"], "content": stored, "message_fields": fields or None}


# In message_fields, but not a field of the chat message: the ids a Responses-API answer gave
# the items this row is, so the conversation lists them under the same ids.
ITEM_IDS = "item_ids"


def replayed(role: str, content: Any, message_fields: dict[str, Any] | None) -> dict[str, Any]:
    """A stored message as it was sent or received: role, content and every other field."""
    fields = {name: value for name, value in (message_fields or {}).items() if name != ITEM_IDS}
    return {"role": role, "content": content, **fields}


def record_turn(
    session: Session,
    exchange_id: str,
    conversation_id: str,
    client_key_id: int | None,
    messages: list[dict[str, Any]],
    reserved_tokens: int | None = None,
    now: datetime | None = None,
    reserved_micros: int | None = None,
) -> None:
    """Store the new messages of an exchange as `pending` rows of the conversation, stamped
    `now` (by default the present); the first carries the tokens and micro-dollars the
    exchange reserved from the budgets of that UTC day (see services/sweeper.py)."""
    # Core statements on the table: no ORM bookkeeping for rows we never read back.
    now = now or datetime.now(UTC)
    session.execute(
        _ADD_ROWS,
        [
            {
                "user_id": conversation_id,
                "exchange_id": exchange_id,
                "api_key_id": client_key_id,
                "status": MessageStatus.PENDING,
                "timestamp": now,
                "reserved_tokens": reserved_tokens if index == 0 else None,
                "reserved_micros": reserved_micros if index == 0 else None,
                **stored_columns(message),
            }
            for index, message in enumerate(messages)
        ],
    )


def _close_exchange(session: Session, exchange_id: str, status: str, error: str | None) -> str | None:
    """Set every row of the exchange to `status`; the status they had: PENDING, ABANDONED
    (the sweeper closed it while its call still ran), or None (its rows were erased)."""
    values = {"exchange": exchange_id, "new_status": status, "new_error": error}
    if session.execute(_CLOSE_PENDING_ROWS, values).rowcount:
        return MessageStatus.PENDING
    return MessageStatus.ABANDONED if session.execute(_CLOSE_ROWS, values).rowcount else None


def record_reply(
    session: Session,
    exchange_id: str,
    conversation_id: str,
    client_key_id: int | None,
    reply: dict[str, Any],
    status: str = MessageStatus.COMPLETED,
    error: str | None = None,
) -> str | None:
    """Store the assistant turn (`reply`: its stored_columns, completion_id, model and
    token counts) and set the exchange's status; the status it had (see _close_exchange).
    None, storing nothing, when the conversation was erased while the model worked: a
    reply must not bring back what its owner erased."""
    before = _close_exchange(session, exchange_id, status, error)
    if before is None:
        return None
    row = {"user_id": conversation_id, "exchange_id": exchange_id, "api_key_id": client_key_id}
    row.update(status=status, error=error, timestamp=datetime.now(UTC))
    session.execute(_ADD_ROWS, [{**row, **reply}])
    return before


def record_failure(session: Session, exchange_id: str, error: str, model: str | None = None) -> str | None:
    """Mark an exchange failed, keeping it for audit only (never sent as history), its rows
    naming `model`, the model it asked for; the status it had (see _close_exchange)."""
    before = _close_exchange(session, exchange_id, MessageStatus.FAILED, error)
    if before is not None and model:
        session.execute(_NAME_REQUESTED_MODEL, {"exchange": exchange_id, "requested_model": model})
    return before


def record_attempts(session: Session, exchange_id: str, attempts: Sequence[dict[str, Any]], at: datetime) -> None:
    """Store the upstream attempts of an exchange (Attempt.as_row() columns), numbered 1, 2...
    in the order given, stamped `at`."""
    if attempts:
        rows = [
            {**row, "exchange_id": exchange_id, "attempt": number, "created_at": at}
            for number, row in enumerate(attempts, 1)
        ]
        session.execute(_ADD_ATTEMPTS, rows)


def attempts_recorded(session: Session, exchange_id: str) -> bool:
    """Whether any upstream attempt of the exchange is stored."""
    found = select(ATTEMPTS.c.id).where(ATTEMPTS.c.exchange_id == exchange_id).limit(1)
    return session.execute(found).first() is not None


def exchange_status(session: Session, exchange_id: str) -> str | None:
    """The status of an exchange's rows, or None when none is stored (never, or erased)."""
    return session.scalar(select(MESSAGES.c.status).where(MESSAGES.c.exchange_id == exchange_id).limit(1))


def touch_pending(session: Session, exchange_id: str, now: datetime) -> None:
    """Mark a pending exchange alive at `now` (a long stream is still being relayed)."""
    session.execute(
        update(MESSAGES)
        .where(MESSAGES.c.exchange_id == exchange_id, MESSAGES.c.status == MessageStatus.PENDING)
        .values(heartbeat_at=now)
    )
