"""Client API keys: issue, list, revoke and check them; count and enforce their budgets
(daily tokens; daily and monthly money, in micro-dollars, see services/prices.py).

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
from database import insert_or_add
from extensions import db
from models import ApiKey, ApiKeyMonthlySpend, ApiKeyUsage, usd

KEY_PREFIX = "gw_"
PREFIX_LENGTH = 12  # "gw_" and 9 characters of the token: recognisable, and never enough to use
USAGE = ApiKeyUsage.__table__
MONTHLY = ApiKeyMonthlySpend.__table__


@dataclass(frozen=True)
class ClientKey:
    """The key a request was made with: who it is and what it may spend."""

    id: int
    name: str
    prefix: str
    rate_limit: str | None
    daily_tokens: int | None
    daily_usd_micros: int | None = None
    monthly_usd_micros: int | None = None


class BudgetSpent(Exception):
    """The request's worst case does not fit in what is left of one of the key's budgets;
    nothing may reach the upstream. `budget` names it: "daily_tokens" (counted in tokens),
    "daily_usd" or "monthly_usd" (counted in micro-dollars). `used` is charged in its
    period, `reserved` held by requests in progress, `needed` this request's worst case;
    the budget resets at `resets_at`."""

    def __init__(
        self,
        client_key: ClientKey,
        used: int,
        resets_at: datetime,
        *,
        reserved: int = 0,
        needed: int = 0,
        budget: str = "daily_tokens",
    ) -> None:
        super().__init__(f"{budget} budget of key {client_key.prefix} cannot cover the request")
        self.client_key = client_key
        self.used = used
        self.reserved = reserved
        self.needed = needed
        self.resets_at = resets_at
        self.budget = budget

    @property
    def limit(self) -> int | None:
        """The budget that was spent, in its unit."""
        key = self.client_key
        return {"daily_usd": key.daily_usd_micros, "monthly_usd": key.monthly_usd_micros}.get(
            self.budget, key.daily_tokens
        )


@dataclass(frozen=True)
class Reservation:
    """Tokens (and micro-dollars) held back from a key's budgets of `day` (and its month)
    while one request runs (0 for a key without a budget: its usage is still counted on
    `day` when the request ends)."""

    client_key_id: int
    day: date
    tokens: int
    micros: int = 0


def hash_key(key: str) -> str:
    """The stored form of `key`: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_rate_limit(text: str | None) -> str | None:
    """`text` when it is a rate limit Flask-Limiter understands ("100 per minute"); ValueError if not."""
    if text is not None and not is_rate_limit(text):
        raise ValueError(f"{text!r} is not a rate limit such as '100 per minute' or '1000 per day;100 per hour'")
    return text


def create_key(
    session: Session,
    name: str,
    rate_limit: str | None = None,
    daily_tokens: int | None = None,
    daily_usd_micros: int | None = None,
    monthly_usd_micros: int | None = None,
) -> tuple[dict[str, Any], str]:
    """Add a new key to the session; return its record and the key itself (the only time
    it is known). The prefix is drawn from 256 random bits: a collision (1 in 2^54) fails
    the unit of work with an IntegrityError rather than being retried."""
    check_rate_limit(rate_limit)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        name=name,
        prefix=key[:PREFIX_LENGTH],
        key_hash=hash_key(key),
        rate_limit=rate_limit,
        daily_tokens=daily_tokens,
        daily_usd_micros=daily_usd_micros,
        monthly_usd_micros=monthly_usd_micros,
    )
    session.add(record)
    session.flush()
    return record.to_dict(), key


def list_keys(session: Session, after_id: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Every key, oldest first (or the `limit` after `after_id`: keyset paging), with the tokens,
    requests and USD it spent today, the USD it spent this month, what its requests hold."""
    today = utc_today()
    query = (
        select(
            ApiKey,
            USAGE.c.total_tokens,
            USAGE.c.requests,
            USAGE.c.reserved_tokens,
            USAGE.c.cost_micros,
            USAGE.c.reserved_micros,
            MONTHLY.c.cost_micros,
        )
        .outerjoin(USAGE, (USAGE.c.api_key_id == ApiKey.id) & (USAGE.c.day == today))
        .outerjoin(MONTHLY, (MONTHLY.c.api_key_id == ApiKey.id) & (MONTHLY.c.month == today.replace(day=1)))
        .order_by(ApiKey.id)
        .limit(limit)
    )
    if after_id is not None:
        query = query.where(ApiKey.id > after_id)
    return [
        {
            **key.to_dict(),
            "tokens_today": tokens or 0,
            "requests_today": requests or 0,
            "reserved_today": held or 0,
            "usd_today": usd(cost or 0),
            "usd_reserved_today": usd(held_micros or 0),
            "usd_this_month": usd(month or 0),
        }
        for key, tokens, requests, held, cost, held_micros, month in session.execute(query).all()
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
_FIND_ACTIVE_KEY = select(
    ApiKey.id,
    ApiKey.name,
    ApiKey.prefix,
    ApiKey.rate_limit,
    ApiKey.daily_tokens,
    ApiKey.daily_usd_micros,
    ApiKey.monthly_usd_micros,
).where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
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
def _reserving(table: Any, row: Any, spent: str, held: str, amount: str) -> Any:
    """The conditional UPDATE that holds `amount` more of a budget on `row` of `table`: only
    while what was `spent` and is `held` there, and the amount, fit within `budget`."""
    fits = table.c[spent] + table.c[held] + bindparam(amount) <= bindparam("budget")
    return update(table).where(row, fits).values({held: table.c[held] + bindparam(amount)})


_USAGE_ROW = (USAGE.c.api_key_id == bindparam("usage_key")) & (USAGE.c.day == bindparam("usage_day"))
_RESERVE = _reserving(USAGE, _USAGE_ROW, "total_tokens", "reserved_tokens", "tokens")
_HELD = select(USAGE.c.total_tokens, USAGE.c.reserved_tokens).where(_USAGE_ROW)
_RESERVE_USD = _reserving(USAGE, _USAGE_ROW, "cost_micros", "reserved_micros", "micros")
_HELD_USD = select(USAGE.c.cost_micros, USAGE.c.reserved_micros).where(_USAGE_ROW)
_MONTH_ROW = (MONTHLY.c.api_key_id == bindparam("usage_key")) & (MONTHLY.c.month == bindparam("usage_month"))
_RESERVE_MONTH = _reserving(MONTHLY, _MONTH_ROW, "cost_micros", "reserved_micros", "micros")
_HELD_MONTH = select(MONTHLY.c.cost_micros, MONTHLY.c.reserved_micros).where(_MONTH_ROW)
# A money reservation of a key without that budget is still held (settled the same way).
_NO_LIMIT = 2**62
_TOKEN_COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "reserved_tokens")
_DAY_COUNTERS = (*_TOKEN_COUNTERS, "cost_micros", "reserved_micros")


@functools.cache
def _usage_insert(dialect_name: str, upsert: bool, monthly: bool = False) -> Any:
    """The day's (or with `monthly` the month's) usage INSERT for a backend, built once: ON
    CONFLICT DO NOTHING (a zero row), or with `upsert` DO UPDATE adding to its counters."""
    table = MONTHLY if monthly else USAGE
    if not upsert:
        return (postgresql if dialect_name == "postgresql" else sqlite).insert(table).on_conflict_do_nothing()
    return insert_or_add(dialect_name, table, ("cost_micros", "reserved_micros") if monthly else _DAY_COUNTERS)


def _ensure_usage_row(session: Session, client_key_id: int, day: date) -> None:
    """Today's counter row of the key, made (all zeros) if it is not there yet."""
    zeros = dict.fromkeys(_DAY_COUNTERS, 0)
    statement = _usage_insert(session.get_bind().dialect.name, upsert=False)
    session.execute(statement, {"api_key_id": client_key_id, "day": day, **zeros})


def _ensure_month_row(session: Session, client_key_id: int, month: date) -> None:
    statement = _usage_insert(session.get_bind().dialect.name, upsert=False, monthly=True)
    session.execute(statement, {"api_key_id": client_key_id, "month": month, "cost_micros": 0, "reserved_micros": 0})


def next_month(day: date) -> datetime:
    """When the monthly budget of `day`'s month resets: its next month's first UTC midnight."""
    first = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
    return datetime.combine(first, time.min, tzinfo=UTC)


def has_money_budget(client_key: ClientKey | None) -> bool:
    """Whether the key has a daily or monthly budget in money."""
    return client_key is not None and (
        client_key.daily_usd_micros is not None or client_key.monthly_usd_micros is not None
    )


def reserve_budget(
    session: Session,
    client_key: ClientKey | None,
    worst_case: int,
    today: date | None = None,
    worst_case_micros: int = 0,
) -> Reservation | None:
    """Hold `worst_case` tokens of the key's token budget for today, and `worst_case_micros`
    of its money budgets (today's and this month's), in the caller's transaction; raise
    BudgetSpent, naming the budget, when what is charged and reserved leaves no room.

    One conditional UPDATE per budget checks and reserves at once, so concurrent requests
    cannot all pass the check on the same remainder: PostgreSQL re-evaluates the condition
    on the row another transaction just changed, and SQLite's writers take turns. A refusal
    leaves the caller's transaction to roll back what an earlier budget reserved. None: no
    key. `today` (UTC; by default now's) is the day whose budgets it comes from.
    """
    if client_key is None:
        return None
    today = today or utc_today()
    tokens = worst_case if client_key.daily_tokens is not None else 0
    micros = worst_case_micros if has_money_budget(client_key) else 0
    if not tokens and not micros:
        return Reservation(client_key.id, today, 0)
    _ensure_usage_row(session, client_key.id, today)
    row = {"usage_key": client_key.id, "usage_day": today}
    if tokens:
        reserved = session.execute(_RESERVE, {**row, "tokens": tokens, "budget": client_key.daily_tokens})
        if not reserved.rowcount:
            used, held = session.execute(_HELD, row).one()
            raise BudgetSpent(client_key, used, next_reset(today), reserved=held, needed=tokens)
    if micros:
        _reserve_money(session, client_key, today, micros)
    return Reservation(client_key.id, today, tokens, micros)


def _reserve_money(session: Session, client_key: ClientKey, today: date, micros: int) -> None:
    """Hold `micros` of the key's daily and monthly money budgets (held, unchecked, where it
    has none, so settling treats every reservation alike); BudgetSpent naming the budget."""
    row = {"usage_key": client_key.id, "usage_day": today}
    daily = client_key.daily_usd_micros
    budget = _NO_LIMIT if daily is None else daily
    if not session.execute(_RESERVE_USD, {**row, "micros": micros, "budget": budget}).rowcount:
        used, held = session.execute(_HELD_USD, row).one()
        raise BudgetSpent(client_key, used, next_reset(today), reserved=held, needed=micros, budget="daily_usd")
    month = {"usage_key": client_key.id, "usage_month": today.replace(day=1)}
    _ensure_month_row(session, client_key.id, month["usage_month"])
    budget = _NO_LIMIT if client_key.monthly_usd_micros is None else client_key.monthly_usd_micros
    if not session.execute(_RESERVE_MONTH, {**month, "micros": micros, "budget": budget}).rowcount:
        used, held = session.execute(_HELD_MONTH, month).one()
        raise BudgetSpent(client_key, used, next_month(today), reserved=held, needed=micros, budget="monthly_usd")


def settle_reservation(
    session: Session, reservation: Reservation, spent: tuple[int, int] | None, spent_micros: int = 0
) -> None:
    """End a request's reservation in the caller's transaction: give the reserved tokens
    and micro-dollars back and charge what it `spent` (prompt and completion tokens, and
    `spent_micros`) to the reservation's day and month; `spent` None (the upstream failed)
    charges nothing.

    Upserts, so concurrent replies of one key add up instead of racing on a read. The
    rows exist whenever something was reserved, so an insert never stores a negative.
    """
    if spent is None and not reservation.tokens and not reservation.micros:
        return  # nothing held, nothing spent
    prompt_tokens, completion_tokens = spent or (0, 0)
    cost = spent_micros if spent is not None else 0
    values = {
        "api_key_id": reservation.client_key_id,
        "day": reservation.day,
        "requests": 1 if spent is not None else 0,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "reserved_tokens": -reservation.tokens,
        "cost_micros": cost,
        "reserved_micros": -reservation.micros,
    }
    dialect = session.get_bind().dialect.name
    session.execute(_usage_insert(dialect, upsert=True), values)
    if cost or reservation.micros:
        month = {"api_key_id": reservation.client_key_id, "month": reservation.day.replace(day=1)}
        month.update(cost_micros=cost, reserved_micros=-reservation.micros)
        session.execute(_usage_insert(dialect, upsert=True, monthly=True), month)


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
        "cost_micros": 0,
        "reserved_micros": 0,
    }
    session.execute(_usage_insert(session.get_bind().dialect.name, upsert=True), values)


def key_id_for(session: Session, prefix: str) -> int | None:
    """The id of the key with this prefix (revoked or not), or None."""
    return session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix))
