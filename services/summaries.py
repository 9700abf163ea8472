"""A stored conversation's summaries: the rows that stand for its older exchanges, and the lease
that lets one process at a time write the next one.

A summary is a row of the conversation (role "compaction", status "summary"; models/message.py)
whose `compacts_through` is the first row id of the newest exchange it covers: it stands for
every completed exchange of its conversation whose first row is at or before that id. The
newest summary is sent first in the history (services/history.py); the exchanges after it
follow, trimmed as ever. Every function takes the session of the caller's unit of work and
never commits it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import CompactionLease, Message, MessageStatus
from services.exchanges import replayed
from services.ownership import owned_by
from services.tokens import estimate_message_tokens

MESSAGES = Message.__table__
LEASES = CompactionLease.__table__
# A summary row's role: what the Conversations API calls its item, and how anyone reading the
# messages table (the console, the CLI) recognises one (with status "summary").
SUMMARY_ROLE = "compaction"
# The summary goes to the model as a system message after the leading ones: it is the service's
# note on the conversation, not a turn of either side.
SUMMARY_PREFIX = "Summary of the earlier part of this conversation (older turns were summarised):\n"


@dataclass(frozen=True)
class Summary:
    """A conversation's newest summary: its text, the first row id of the newest exchange it
    covers, and its row's public id."""

    text: str
    through: int
    public_id: str = ""

    def message(self) -> dict[str, Any]:
        """The summary as the chat message the history starts with."""
        return {"role": "system", "content": SUMMARY_PREFIX + self.text}

    @property
    def tokens(self) -> int:
        """The summary message's estimated tokens."""
        return estimate_message_tokens(self.message())


def latest_summary(session: Session, conversation_id: str, client_key_id: int | None) -> Summary | None:
    """The conversation's newest summary, or None when it has none."""
    row = session.execute(
        select(MESSAGES.c.content, MESSAGES.c.compacts_through, MESSAGES.c.public_id)
        .where(
            MESSAGES.c.user_id == conversation_id, owned_by(client_key_id), MESSAGES.c.status == MessageStatus.SUMMARY
        )
        .order_by(MESSAGES.c.id.desc())
        .limit(1)
    ).first()
    if row is None or row.compacts_through is None:
        return None
    return Summary(str(row.content or ""), int(row.compacts_through), row.public_id)


# -- the exchanges a summary is made of ----------------------------------------------------------


@dataclass
class Unit:
    """Exchanges that are kept or summarised whole (a tool round: the exchange that called the
    tools and those answering them), oldest first: their first row ids and messages, and cost."""

    first_ids: list[int]
    messages: list[dict[str, Any]]
    tokens: int

    @property
    def answers_tools(self) -> bool:
        """Whether the unit's oldest exchange answers the tool calls of the one before it."""
        return bool(self.messages) and self.messages[0].get("role") == "tool"


def _exchanges(session: Session, conversation_id: str, client_key_id: int | None, after: int, newest_first: bool):
    """The completed exchanges of the conversation whose first row is past `after`: (first row
    id, messages), newest or oldest first, read a few rows at a time."""
    mine = (MESSAGES.c.user_id == conversation_id, owned_by(client_key_id))
    completed = MESSAGES.c.status == MessageStatus.COMPLETED
    first_id = func.min(MESSAGES.c.id)
    exchanges = (
        select(MESSAGES.c.exchange_id, first_id.label("first_id"))
        .where(*mine, completed)
        .group_by(MESSAGES.c.exchange_id)
        .having(first_id > after)
        .subquery()
    )
    order = exchanges.c.first_id.desc() if newest_first else exchanges.c.first_id
    query = (
        select(exchanges.c.first_id, MESSAGES.c.role, MESSAGES.c.content, MESSAGES.c.message_fields)
        .join(exchanges, MESSAGES.c.exchange_id == exchanges.c.exchange_id)
        .where(*mine, completed)
        .order_by(order, MESSAGES.c.id)
        .execution_options(yield_per=16)
    )
    return session.execute(query)


def _grouped(result: Any) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """The rows of _exchanges as (first row id, messages), one exchange at a time."""
    current: tuple[int, list[dict[str, Any]]] | None = None
    for first_id, role, content, fields in result:
        if current is None or current[0] != first_id:
            if current is not None:
                yield current
            current = (first_id, [])
        current[1].append(replayed(role, content, fields))
    if current is not None:
        yield current


def kept_from(
    session: Session, conversation_id: str, client_key_id: int | None, after: int, max_tokens: int, max_messages: int
) -> int | None:
    """The first row id of the oldest exchange the next turns keep when what follows the summary
    (`after`) is cut to `max_tokens` and `max_messages`, never splitting a tool round and always
    keeping the newest one; None when everything after the summary fits (nothing to summarise).
    Reads newest first, no further than the cut."""
    result = _exchanges(session, conversation_id, client_key_id, after, newest_first=True)
    tokens = messages = 0
    unit: Unit | None = None
    boundary = None

    def fits(unit: Unit) -> bool:  # the newest unit always does
        return boundary is None or (
            tokens + unit.tokens <= max_tokens and messages + len(unit.messages) <= max_messages
        )

    try:
        for first_id, exchange in _grouped(result):
            cost = sum(estimate_message_tokens(m) for m in exchange)
            if unit is not None and unit.answers_tools:  # this exchange made the calls: same unit
                unit = Unit([first_id, *unit.first_ids], [*exchange, *unit.messages], unit.tokens + cost)
                continue
            if unit is not None:
                if not fits(unit):
                    return boundary
                tokens, messages, boundary = tokens + unit.tokens, messages + len(unit.messages), unit.first_ids[0]
            unit = Unit([first_id], exchange, cost)
    finally:
        result.close()
    return boundary if unit is not None and not fits(unit) else None


def oldest_pending(session: Session, conversation_id: str, client_key_id: int | None) -> int | None:
    """The first row id of the conversation's oldest exchange still in flight (pending), or
    None: a summary covers nothing from there on (that exchange completes after it)."""
    mine = (MESSAGES.c.user_id == conversation_id, owned_by(client_key_id))
    return session.scalar(select(func.min(MESSAGES.c.id)).where(*mine, MESSAGES.c.status == MessageStatus.PENDING))


def to_summarise(
    session: Session, conversation_id: str, client_key_id: int | None, after: int, before: int, max_tokens: int
) -> list[Unit]:
    """The oldest whole units after `after` whose exchanges begin before row `before`, oldest
    first, as many as fit `max_tokens` (at least one): what the next summary adds."""
    result = _exchanges(session, conversation_id, client_key_id, after, newest_first=False)
    units: list[Unit] = []
    tokens = 0
    try:
        for first_id, exchange in _grouped(result):
            if first_id >= before:
                break
            cost = sum(estimate_message_tokens(m) for m in exchange)
            if units and exchange and exchange[0].get("role") == "tool":
                last = units[-1]
                units[-1] = Unit([*last.first_ids, first_id], [*last.messages, *exchange], last.tokens + cost)
            elif units and tokens + cost > max_tokens:
                break
            else:
                units.append(Unit([first_id], exchange, cost))
            tokens += cost
    finally:
        result.close()
    return units


# -- writing a summary ---------------------------------------------------------------------------


def covered_rows_remain(
    session: Session, conversation_id: str, client_key_id: int | None, first_id: int, through: int
) -> str | None:
    """The public id of row `through` when the rows a new summary was made of are still stored
    (the conversation was not erased, nor its oldest rows pruned by retention, while the model
    wrote it); None when they are not."""
    mine = (MESSAGES.c.user_id == conversation_id, owned_by(client_key_id))
    query = select(MESSAGES.c.id, MESSAGES.c.public_id).where(*mine, MESSAGES.c.id.in_((first_id, through)))
    found = {row_id: public_id for row_id, public_id in session.execute(query)}
    return found[through] if set(found) == {first_id, through} else None


def record_summary(
    session: Session, exchange_id: str, conversation_id: str, client_key_id: int | None, row: dict[str, Any]
) -> None:
    """Store a summary row (`row`: content, compacts_through, model, usage, cost...) of the
    conversation. Its message_fields say, for readers of the row (GET /conversations/<id>, the
    CLI), up to which row it covers: `compacts_through` (that row's public id)."""
    base = {"user_id": conversation_id, "exchange_id": exchange_id, "api_key_id": client_key_id}
    values = {**base, "role": SUMMARY_ROLE, "status": MessageStatus.SUMMARY, "timestamp": datetime.now(UTC), **row}
    session.execute(insert(MESSAGES), [values])


def delete_summaries_covering(session: Session, conversation_id: str, client_key_id: int | None, row_id: int) -> None:
    """Before one row of the conversation is erased (DELETE of a Conversations API item): the
    summaries that cover it go too, since they hold what it said; its next trimmed turn makes
    a new one from what is left."""
    mine = (MESSAGES.c.user_id == conversation_id, owned_by(client_key_id), MESSAGES.c.status == MessageStatus.SUMMARY)
    session.execute(delete(MESSAGES).where(*mine, MESSAGES.c.compacts_through >= row_id))


def delete_summaries_of_pruned(session: Session, exchange_ids: list[str]) -> None:
    """Before retention deletes `exchange_ids`: the summaries that cover any of their rows go
    too (a summary holds what they said), whatever their own age."""
    pruned = MESSAGES.alias("pruned")
    same_key = (pruned.c.api_key_id == MESSAGES.c.api_key_id) | (
        pruned.c.api_key_id.is_(None) & MESSAGES.c.api_key_id.is_(None)
    )
    covers = exists().where(
        pruned.c.exchange_id.in_(exchange_ids),
        pruned.c.user_id == MESSAGES.c.user_id,
        same_key,
        pruned.c.id <= MESSAGES.c.compacts_through,
    )
    session.execute(delete(MESSAGES).where(MESSAGES.c.status == MessageStatus.SUMMARY, covers))


# -- the lease -----------------------------------------------------------------------------------


def lease_name(conversation_id: str, client_key_id: int | None) -> str:
    """The lease's key: the conversation within its key."""
    return f"{client_key_id if client_key_id is not None else ''}:{conversation_id}"


_TAKE_EXPIRED = (
    update(LEASES)
    .where(LEASES.c.conversation == bindparam("name"), LEASES.c.expires_at < bindparam("now"))
    .values(holder=bindparam("new_holder"), expires_at=bindparam("until"))
)


def take_lease(session: Session, name: str, holder: str, seconds: float) -> bool:
    """Take the conversation's summarising lease for `seconds`: True when `holder` has it now.

    A conditional INSERT (nothing when a lease row exists) or, over an expired lease, a
    conditional UPDATE: PostgreSQL makes a concurrent insert of the same key wait and then do
    nothing, and re-checks the expiry on the row another transaction just changed; SQLite's
    writers take turns. Two takers on any number of hosts: one wins."""
    now = datetime.now(UTC)
    values = {"conversation": name, "holder": holder, "expires_at": now + timedelta(seconds=seconds)}
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        statement = (postgresql if dialect == "postgresql" else sqlite).insert(LEASES).on_conflict_do_nothing()
        # RETURNING says whether the row went in (rowcount may be -1 for an insert).
        if session.execute(statement.returning(LEASES.c.conversation), values).first() is not None:
            return True
    elif not session.execute(select(LEASES.c.conversation).where(LEASES.c.conversation == name)).first():
        session.execute(insert(LEASES), values)
        return True
    moved = {"name": name, "now": now, "new_holder": holder, "until": values["expires_at"]}
    return bool(session.execute(_TAKE_EXPIRED, moved).rowcount)


def hold_lease(session: Session, name: str, holder: str, seconds: float) -> None:
    """Keep the lease `holder` has for `seconds` from now: no process summarises the
    conversation until then (after a failure: its next turns trim as before)."""
    until = datetime.now(UTC) + timedelta(seconds=seconds)
    mine = and_(LEASES.c.conversation == name, LEASES.c.holder == holder)
    session.execute(update(LEASES).where(mine).values(expires_at=until))


def lock_lease(session: Session, name: str, holder: str) -> bool:
    """Lock the lease `holder` has, for the rest of the caller's transaction (PostgreSQL: FOR
    UPDATE; SQLite's writers take turns anyway); False when it is gone (the conversation was
    erased, which deletes its lease first)."""
    mine = and_(LEASES.c.conversation == name, LEASES.c.holder == holder)
    return session.execute(select(LEASES.c.conversation).where(mine).with_for_update()).first() is not None


def erase_leases(session: Session, conversation_id: str, client_key_id: Any) -> None:
    """An erasure's first step: the conversation's summarising lease goes (ANY_KEY: every
    key's), waiting for a summariser that holds it locked to commit, so that the rows the
    erasure deletes next include its summary, or the summariser finds the lease gone."""
    if client_key_id is None or isinstance(client_key_id, int):
        where = LEASES.c.conversation == lease_name(conversation_id, client_key_id)
    else:
        where = LEASES.c.conversation.endswith(":" + conversation_id, autoescape=True)
    session.execute(delete(LEASES).where(where))


def drop_lease(session: Session, name: str, holder: str) -> None:
    """Give the lease back, if `holder` still has it."""
    session.execute(delete(LEASES).where(and_(LEASES.c.conversation == name, LEASES.c.holder == holder)))
