"""Client API keys: issue, list, revoke and check them; count and enforce daily token budgets.

A key is `gw_` and 43 characters of a 256-bit random token. It is shown once, when it is
created; the database keeps only its SHA-256 and its first characters (the prefix, for
people to recognise it in `flask keys list`). Every request looks its key up again, so a
revocation takes effect on the next request in every worker and on every host.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config import is_rate_limit
from extensions import db
from models import ApiKey, ApiKeyUsage

KEY_PREFIX = "gw_"
PREFIX_LENGTH = 12  # "gw_" and 9 characters of the token: recognisable, and never enough to use
USAGE = ApiKeyUsage.__table__


@dataclass(frozen=True)
class ClientKey:
    """The key a request was made with: who it is and what it may spend."""

    id: int
    name: str
    prefix: str
    rate_limit: str | None
    daily_tokens: int | None


class BudgetSpent(Exception):
    """The request's worst case does not fit in what is left of the key's daily token budget;
    nothing may reach the upstream. `used` is charged today, `reserved` held by requests in
    progress, `needed` this request's worst case; the budget resets at `resets_at`."""

    def __init__(
        self, client_key: ClientKey, used: int, resets_at: datetime, *, reserved: int = 0, needed: int = 0
    ) -> None:
        super().__init__(f"daily token budget of key {client_key.prefix} cannot cover the request")
        self.client_key = client_key
        self.used = used
        self.reserved = reserved
        self.needed = needed
        self.resets_at = resets_at


@dataclass(frozen=True)
class Reservation:
    """Tokens held back from a key's budget of `day` while one request runs (0 for a key
    without a budget: its usage is still counted on `day` when the request ends)."""

    client_key_id: int
    day: date
    tokens: int


def hash_key(key: str) -> str:
    """The stored form of `key`: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_rate_limit(text: str | None) -> str | None:
    """`text` when it is a rate limit Flask-Limiter understands ("100 per minute"); ValueError if not."""
    if text is not None and not is_rate_limit(text):
        raise ValueError(f"{text!r} is not a rate limit such as '100 per minute' or '1000 per day;100 per hour'")
    return text


def create_key(
    session: Session, name: str, rate_limit: str | None = None, daily_tokens: int | None = None
) -> tuple[dict[str, Any], str]:
    """Add a new key to the session; return its record and the key itself (the only time
    it is known). The prefix is drawn from 256 random bits: a collision (1 in 2^54) fails
    the unit of work with an IntegrityError rather than being retried."""
    check_rate_limit(rate_limit)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        name=name, prefix=key[:PREFIX_LENGTH], key_hash=hash_key(key), rate_limit=rate_limit, daily_tokens=daily_tokens
    )
    session.add(record)
    session.flush()
    return record.to_dict(), key


def list_keys(session: Session) -> list[dict[str, Any]]:
    """Every key, oldest first, with the tokens and requests it spent today and the tokens
    its requests in progress hold."""
    rows = session.execute(
        select(ApiKey, USAGE.c.total_tokens, USAGE.c.requests, USAGE.c.reserved_tokens)
        .outerjoin(USAGE, (USAGE.c.api_key_id == ApiKey.id) & (USAGE.c.day == utc_today()))
        .order_by(ApiKey.id)
    ).all()
    return [
        {**key.to_dict(), "tokens_today": tokens or 0, "requests_today": requests or 0, "reserved_today": held or 0}
        for key, tokens, requests, held in rows
    ]


def revoke_key(session: Session, prefix_or_key: str) -> dict[str, Any] | None:
    """Revoke the key with this prefix (or the whole key); None when there is no such key.

    Revoking twice keeps the first revocation's time.
    """
    if prefix_or_key.startswith(KEY_PREFIX) and len(prefix_or_key) > PREFIX_LENGTH:
        where = ApiKey.key_hash == hash_key(prefix_or_key)
    else:
        where = ApiKey.prefix == prefix_or_key
    session.execute(update(ApiKey).where(where, ApiKey.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC)))
    key = session.scalar(select(ApiKey).where(where))
    return key.to_dict() if key else None


# Built once: every request runs it, and building the statement costs more than the read.
_FIND_ACTIVE_KEY = select(ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.rate_limit, ApiKey.daily_tokens).where(
    ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None)
)
_LIVE_KEY_HASHES = select(ApiKey.key_hash).where(ApiKey.revoked_at.is_(None))


def _well_formed(presented: str) -> bool:
    return presented.startswith(KEY_PREFIX) and len(presented) <= 200


def find_active_key(presented: str, known: KnownKeys | None = None) -> ClientKey | None:
    """The live (unrevoked) key `presented` is, or None. One indexed read on a connection
    of its own (no ORM session), handed back before the request goes on. What it finds
    keeps `known` (this process's set of live keys) up to date."""
    if not _well_formed(presented):
        return None
    key_hash = hash_key(presented)
    with db.engine.connect() as connection:
        row = connection.execute(_FIND_ACTIVE_KEY, {"key_hash": key_hash}).first()
    if known is not None and row:
        known.learn(key_hash)
    elif known is not None:
        known.forget(key_hash)
    return ClientKey(*row) if row else None


class KnownKeys:
    """The hashes of the live keys, as this process last read them: what decides, for an
    address over AUTH_FAILURE_LIMIT, whether a presented key is worth a database lookup.

    The set is read again once it is `refresh_seconds` old, by whichever request comes
    first (usually a served one); a lookup adds the key it finds at once, and drops one it
    finds revoked. So a key created elsewhere (`flask keys create`, another worker, another
    host) is known within `refresh_seconds`, and from an address under the limit at once; a
    revoked key may stay known until then, but only ever earns a lookup, which checks
    revocation. A guess from an address over the limit costs a set membership test: the
    reads are bounded by time, one per `refresh_seconds`, not by the number of guesses.
    """

    def __init__(self, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds
        self._hashes: frozenset[str] = frozenset()
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def may_be_live(self, presented: str) -> bool:
        """False when `presented` is no live key as far as this process knows: then it
        needs no lookup."""
        if not _well_formed(presented):
            return False
        self.refresh_if_stale()
        return hash_key(presented) in self._hashes

    def refresh_if_stale(self) -> None:
        """Read the live keys' hashes again if the set is refresh_seconds old (or was never read)."""
        if self._read_at is not None and monotonic() - self._read_at < self.refresh_seconds:
            return
        with self._lock:  # one reader at a time; the others then find it fresh
            now = monotonic()
            if self._read_at is not None and now - self._read_at < self.refresh_seconds:
                return
            with db.engine.connect() as connection:
                self._hashes = frozenset(connection.scalars(_LIVE_KEY_HASHES))
            self._read_at = now

    def learn(self, key_hash: str) -> None:
        """A lookup found this key live."""
        if key_hash not in self._hashes:
            with self._lock:
                self._hashes = self._hashes | {key_hash}

    def forget(self, key_hash: str) -> None:
        """A lookup found this key revoked (or gone)."""
        if key_hash in self._hashes:
            with self._lock:
                self._hashes = self._hashes - {key_hash}


def utc_today() -> date:
    """Today in UTC: budgets are per UTC day."""
    return datetime.now(UTC).date()


def next_reset(day: date) -> datetime:
    """When the budget of `day` resets: the next UTC midnight."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


# Statements each budgeted request runs, built once (then only bound).
_USAGE_ROW = (USAGE.c.api_key_id == bindparam("usage_key")) & (USAGE.c.day == bindparam("usage_day"))
_RESERVE = (
    update(USAGE)
    .where(_USAGE_ROW, USAGE.c.total_tokens + USAGE.c.reserved_tokens + bindparam("tokens") <= bindparam("budget"))
    .values(reserved_tokens=USAGE.c.reserved_tokens + bindparam("tokens"))
)
_HELD = select(USAGE.c.total_tokens, USAGE.c.reserved_tokens).where(_USAGE_ROW)


@functools.cache
def _usage_insert(dialect_name: str, upsert: bool) -> Any:
    """The usage table's INSERT for a backend, built once: ON CONFLICT DO NOTHING (a day's
    zero row), or with `upsert` DO UPDATE adding to the day's counters."""
    insert = (postgresql if dialect_name == "postgresql" else sqlite).insert(USAGE)
    if not upsert:
        return insert.on_conflict_do_nothing()
    added = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "reserved_tokens")
    return insert.on_conflict_do_update(
        index_elements=[USAGE.c.api_key_id, USAGE.c.day],
        set_={name: USAGE.c[name] + insert.excluded[name] for name in added},
    )


def _ensure_usage_row(session: Session, client_key_id: int, day: date) -> None:
    """Today's counter row of the key, made (all zeros) if it is not there yet."""
    zeros = dict.fromkeys(("requests", "prompt_tokens", "completion_tokens", "total_tokens", "reserved_tokens"), 0)
    statement = _usage_insert(session.get_bind().dialect.name, upsert=False)
    session.execute(statement, {"api_key_id": client_key_id, "day": day, **zeros})


def reserve_budget(
    session: Session, client_key: ClientKey | None, worst_case: int, today: date | None = None
) -> Reservation | None:
    """Hold `worst_case` tokens of the key's budget for today, in the caller's transaction;
    raise BudgetSpent when what is charged and reserved leaves no room for them.

    One conditional UPDATE checks and reserves at once, so concurrent requests cannot all
    pass the check on the same remainder: PostgreSQL re-evaluates the condition on the row
    another transaction just changed, and SQLite's writers take turns. None: no key.
    `today` (UTC; by default now's) is the day whose budget it comes from.
    """
    if client_key is None:
        return None
    today = today or utc_today()
    if client_key.daily_tokens is None:
        return Reservation(client_key.id, today, 0)
    _ensure_usage_row(session, client_key.id, today)
    row = {"usage_key": client_key.id, "usage_day": today}
    reserved = session.execute(_RESERVE, {**row, "tokens": worst_case, "budget": client_key.daily_tokens})
    if not reserved.rowcount:
        used, held = session.execute(_HELD, row).one()
        raise BudgetSpent(client_key, used, next_reset(today), reserved=held, needed=worst_case)
    return Reservation(client_key.id, today, worst_case)


def settle_reservation(session: Session, reservation: Reservation, spent: tuple[int, int] | None) -> None:
    """End a request's reservation in the caller's transaction: give the reserved tokens
    back and charge what it `spent` (prompt and completion tokens) to the reservation's
    day; `spent` None (the upstream failed) charges nothing.

    An upsert, so concurrent replies of one key add up instead of racing on a read. The
    row exists whenever something was reserved, so the insert never stores a negative.
    """
    if spent is None and not reservation.tokens:
        return  # nothing held, nothing spent
    prompt_tokens, completion_tokens = spent or (0, 0)
    values = {
        "api_key_id": reservation.client_key_id,
        "day": reservation.day,
        "requests": 1 if spent is not None else 0,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "reserved_tokens": -reservation.tokens,
    }
    session.execute(_usage_insert(session.get_bind().dialect.name, upsert=True), values)


def charge_usage(session: Session, client_key_id: int, prompt_tokens: int, completion_tokens: int) -> None:
    """Add one request's tokens to today's counter of the key, in the caller's transaction,
    outside any reservation (the sweeper charges an abandoned exchange's estimate so)."""
    values = {
        "api_key_id": client_key_id,
        "day": utc_today(),
        "requests": 1,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "reserved_tokens": 0,
    }
    session.execute(_usage_insert(session.get_bind().dialect.name, upsert=True), values)


def key_id_for(session: Session, prefix: str) -> int | None:
    """The id of the key with this prefix (revoked or not), or None."""
    return session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix))
