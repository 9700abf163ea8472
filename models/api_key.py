"""Client API keys (stored as a hash and a short prefix) and their daily token usage."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.message import iso_utc, utc_now


class ApiKey(db.Model):
    """A key a client presents as `Authorization: Bearer <key>`.

    The key itself is never stored: `key_hash` is its SHA-256 (keys are 256 random bits,
    so a fast hash is safe) and `prefix` its first characters, for people to recognise it.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Its own rate limit ("100 per minute"); None means RATELIMIT_DEFAULT and RATELIMIT_COMPLETION.
    rate_limit: Mapped[str | None] = mapped_column(String(100))
    # Tokens it may spend per UTC day; None means no budget.
    daily_tokens: Mapped[int | None] = mapped_column(Integer)
    # What it may spend per UTC day and per UTC month, in micro-dollars; None: no budget.
    daily_usd_micros: Mapped[int | None] = mapped_column(BigInteger)
    monthly_usd_micros: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def to_dict(self) -> dict[str, Any]:
        """Everything but the hash, timestamps in ISO 8601 UTC."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "rate_limit": self.rate_limit,
            "daily_tokens": self.daily_tokens,
            "daily_usd": usd(self.daily_usd_micros),
            "monthly_usd": usd(self.monthly_usd_micros),
            "created_at": iso_utc(self.created_at),
            "revoked_at": iso_utc(self.revoked_at),
        }


class ApiKeyUsage(db.Model):
    """Tokens a key spent on one UTC day, added to as each reply is recorded.

    A counter of its own, not a sum over `messages`: erasing conversations (or pruning
    them) must not give a key its budget back. `reserved_tokens` is what the requests in
    progress may still spend: each reserves its worst case when it starts and gives it
    back when its real usage is charged.
    """

    __tablename__ = "api_key_usage"

    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reserved_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The same in money (micro-dollars): spent today, and held by the requests in progress.
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ApiKeyMonthlySpend(db.Model):
    """What a key spent in one UTC month (`month`: its first day), in micro-dollars, and
    what its requests in progress hold: the counter a monthly budget is checked against,
    kept as replies are recorded (no sum over days at request time)."""

    __tablename__ = "api_key_monthly_spend"

    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reserved_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


def usd(micros: int | None) -> float | None:
    """Micro-dollars as dollars, for JSON (exact to the micro-dollar)."""
    return None if micros is None else round(micros / 1_000_000, 6)
