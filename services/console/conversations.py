"""The console's conversations page: the newest conversations (of every key, of one key, or
of the keyless rows) and a search by conversation id, exact or by prefix.

A conversation is a conversation id (`user_id`) within a key (services/ownership.py), so
every entry names both. Every query is bounded and rides an index (models/message.py);
pages follow each other by keyset, never by OFFSET:

- Newest activity first: the key's rows are walked newest first (ix_messages_api_key_id_id,
  or the primary key across keys), a few hundred at a time. A conversation belongs to the
  page whose stretch of rows holds its newest row, so the cursor is a row id and no
  conversation is listed twice or skipped, however the pages fall.
- By id: one id's conversations (one per key using it); by prefix: the ids in the range
  [prefix, next prefix) of the user_id indexes, in id order, the cursor the last id listed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from models import ApiKey, Message, iso_utc
from services.ownership import ANY_KEY, KeyScope, owned_by

PAGE_SIZE = 50
# Rows read per step of the newest-first walk, and at most per page: past that a page ends
# early (its cursor says where the walk stopped) rather than run long.
SCAN_BATCH = 200
SCAN_LIMIT = 10_000
# A reply (the model's: the pipeline names its model) recorded without a price.
UNPRICED_REPLY = (Message.role == "assistant", Message.model.is_not(None), Message.cost_micros.is_(None))
# One key's conversation: (api_key_id, user_id).
Ref = tuple[int | None, str]


@dataclass(frozen=True)
class ConversationListing:
    """One page of conversations and the cursor of the next page (None: the last page)."""

    conversations: list[dict[str, Any]]
    next_cursor: int | str | None


def format_usd(micros: int | None) -> str:
    """Micro-dollars as a dollar amount to the micro-dollar ("$0.000125"); "unpriced" for None."""
    if micros is None:
        return "unpriced"
    return f"${micros / 1_000_000:,.6f}"


def _of_refs(refs: Iterable[Ref]) -> ColumnElement[bool]:
    """The rows of these conversations: one `user_id IN (...)` per key, so each term rides
    the (api_key_id, user_id) indexes."""
    by_key: dict[int | None, list[str]] = defaultdict(list)
    for key_id, user_id in refs:
        by_key[key_id].append(user_id)
    return or_(*(and_(owned_by(key_id), Message.user_id.in_(ids)) for key_id, ids in by_key.items()))


def _key_names(session: Session, key_ids: Iterable[int | None]) -> dict[int, dict[str, Any]]:
    wanted = {key_id for key_id in key_ids if key_id is not None}
    if not wanted:
        return {}
    rows = session.execute(select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(ApiKey.id.in_(wanted)))
    return {key_id: {"id": key_id, "name": name, "prefix": prefix} for key_id, name, prefix in rows}


def conversation_stats(session: Session, refs: Sequence[Ref]) -> dict[Ref, dict[str, Any]]:
    """Rows, first and last activity, tokens and cost of each of these conversations (each
    read within its key: bounded by the conversations' own sizes)."""
    return _stats(session, _of_refs(refs)) if refs else {}


def _stats(session: Session, rows_of: ColumnElement[bool]) -> dict[Ref, dict[str, Any]]:
    rows = session.execute(
        select(
            Message.api_key_id,
            Message.user_id,
            func.count(Message.id),
            func.max(Message.id),
            func.min(Message.timestamp),
            func.max(Message.timestamp),
            func.coalesce(func.sum(Message.total_tokens), 0),
            func.coalesce(func.sum(Message.cost_micros), 0),
            func.count(Message.id).filter(*UNPRICED_REPLY),
        )
        .where(rows_of)
        .group_by(Message.api_key_id, Message.user_id)
    ).all()
    keys = _key_names(session, (row[0] for row in rows))
    stats = {}
    for key_id, user_id, count, last_id, first_at, last_at, tokens, cost, unpriced in rows:
        stats[(key_id, user_id)] = {
            "api_key_id": key_id,
            "key": keys.get(key_id),
            "user_id": user_id,
            "messages": count,
            "last_id": last_id,
            "first_at": iso_utc(first_at),
            "last_at": iso_utc(last_at),
            "tokens": int(tokens),
            "cost": format_usd(int(cost)),
            "unpriced": unpriced,
        }
    return stats


def _newest_rows(session: Session, scope: KeyScope, before: int | None, limit: int) -> list[tuple[int, Ref]]:
    query = select(Message.id, Message.api_key_id, Message.user_id).where(owned_by(scope))
    if before is not None:
        query = query.where(Message.id < before)
    rows = session.execute(query.order_by(Message.id.desc()).limit(limit)).all()
    return [(row_id, (key_id, user_id)) for row_id, key_id, user_id in rows]


def _active_since(session: Session, refs: Sequence[Ref], since: int) -> set[Ref]:
    """Those of `refs` with a row at or after `since`: listed on an earlier page."""
    if not refs:
        return set()
    query = select(Message.api_key_id, Message.user_id).where(_of_refs(refs), Message.id >= since).distinct()
    return {(key_id, user_id) for key_id, user_id in session.execute(query)}


def _first_sightings(rows: Sequence[tuple[int, Ref]], seen: set[Ref]) -> list[tuple[int, Ref]]:
    """Each conversation of `rows` not yet in `seen` with the id of its first (newest) row."""
    firsts = []
    for row_id, ref in rows:
        if ref not in seen:
            seen.add(ref)
            firsts.append((row_id, ref))
    return firsts


def recent_conversations(
    session: Session, scope: KeyScope = ANY_KEY, before: int | None = None, page_size: int | None = None
) -> ConversationListing:
    """The conversations of `scope` by newest activity (its newest row), newest first: those
    whose newest row is older than row `before` when given. The cursor is the row id where
    the next page's walk starts."""
    page_size = page_size or PAGE_SIZE
    found: list[tuple[int, Ref]] = []
    seen: set[Ref] = set()
    position, scanned = before, 0
    while scanned < SCAN_LIMIT:
        rows = _newest_rows(session, scope, position, SCAN_BATCH)
        firsts = _first_sightings(rows, seen)
        # Seen first here but with a newer row (at or after `before`): an earlier page's.
        listed = _active_since(session, [ref for _, ref in firsts], before) if before is not None else set()
        for row_id, ref in firsts:
            if ref not in listed:
                found.append((row_id, ref))
                if len(found) == page_size:
                    return _listing(session, found, next_cursor=row_id)
        if len(rows) < SCAN_BATCH:
            return _listing(session, found, next_cursor=None)
        position, scanned = rows[-1][0], scanned + len(rows)
    return _listing(session, found, next_cursor=position)


def _listing(session: Session, found: Sequence[tuple[int, Ref]], next_cursor: int | None) -> ConversationListing:
    stats = conversation_stats(session, [ref for _, ref in found])
    return ConversationListing([stats[ref] for _, ref in found if ref in stats], next_cursor)


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` in code point order
    (the order of SQLite's BINARY and PostgreSQL's C collations); None when there is none."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if 0xD800 <= last <= 0xDFFF:
            last = 0xE000  # surrogates are no characters of a stored string
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def _ids_with_prefix(session: Session, scope: KeyScope, prefix: str, after: str | None, limit: int) -> list[str]:
    """Up to `limit` conversation ids starting with `prefix` (after `after`), in id order:
    a range of the user_id indexes, so the read is as long as the page."""
    query = select(Message.user_id).where(owned_by(scope), Message.user_id >= prefix)
    end = prefix_end(prefix)
    if end is not None:
        query = query.where(Message.user_id < end)
    # The range is exact in code point order; under another collation it may hold more.
    query = query.where(func.substr(Message.user_id, 1, len(prefix)) == prefix)
    if after is not None:
        query = query.where(Message.user_id > after)
    return list(session.scalars(query.group_by(Message.user_id).order_by(Message.user_id).limit(limit)))


def search_conversations(
    session: Session,
    scope: KeyScope,
    text: str,
    prefix: bool = False,
    after: str | None = None,
    page_size: int | None = None,
) -> ConversationListing:
    """The conversations of `scope` whose id is `text` (newest activity first: one per key
    using it), or starts with it (`prefix`: by id, `page_size` ids after `after` a page)."""
    page_size = page_size or PAGE_SIZE
    if not text or "\x00" in text:
        return ConversationListing([], None)
    if prefix:
        ids = _ids_with_prefix(session, scope, text, after, page_size + 1)
        more, ids = len(ids) > page_size, ids[:page_size]
    else:
        ids, more = [text], False
    stats = _stats(session, and_(owned_by(scope), Message.user_id.in_(ids))) if ids else {}
    ordered = sorted(stats.values(), key=lambda entry: -entry["last_id"])
    ordered.sort(key=lambda entry: entry["user_id"])  # stable: by id, then newest first
    return ConversationListing(ordered, ids[-1] if more else None)


def key_choices(session: Session) -> list[dict[str, Any]]:
    """Every key (id, name, prefix, revoked or not), oldest first, for the page's key filter."""
    rows = session.execute(select(ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.revoked_at).order_by(ApiKey.id))
    return [
        {"id": key_id, "name": name, "prefix": prefix, "revoked": revoked is not None}
        for key_id, name, prefix, revoked in rows
    ]
