"""The request log and its daily rollups: what the console's Requests and Overview pages read.

`request_log` holds one row per exchange, written when the exchange ends (in the unit of
work that records its ending, services/recorder.py, or by the sweeper that closes it as
abandoned): who asked (key, conversation), by which route, for which model, which
deployment answered, how it ended, what it spent and how long it took. No content.

`request_rollups` adds every row to a counter of its UTC day, model and route, and
`request_key_rollups` to one of its UTC day and key, in the same transaction, latency as a
fixed histogram, so the Overview's totals, breakdowns and percentiles are sums over a few
rows per day (one per key and day for the breakdown by key), never a scan of the log. Two
tables rather than one of day x key x model x route: summing that one over 30 days reads
up to days x keys x models x routes rows (90,000 at 1,000 keys and 3 models, 0.8 s on
SQLite), where these read a few hundred and one per active key and day.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from models.message import utc_now

# Upper bounds (ms) of the latency histogram's buckets; one more bucket counts the slower.
LATENCY_BUCKETS_MS = (100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
LATENCY_COLUMNS = tuple(f"latency_b{index}" for index in range(len(LATENCY_BUCKETS_MS) + 1))
ERROR_LENGTH = 300


class RequestLog(db.Model):
    """One exchange, as the Requests page lists it (newest first, keyset-paged)."""

    __tablename__ = "request_log"
    __table_args__ = (
        # Each filter of the Requests page reads one of these, newest first, from its keyset.
        Index("ix_request_log_created_at_id", "created_at", "id"),
        Index("ix_request_log_api_key_id_created_at_id", "api_key_id", "created_at", "id"),
        Index("ix_request_log_model_created_at_id", "model", "created_at", "id"),
        Index("ix_request_log_route_created_at_id", "route", "created_at", "id"),
        Index("ix_request_log_status_created_at_id", "status", "created_at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    exchange_id: Mapped[str] = mapped_column(String(36), unique=True)
    # NULL when keys are off (rollups count those under key 0).
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(String(128))
    # The URL rule the client called ("/v1/chat/completions"); NULL when unknown (rows the
    # migration backfilled, exchanges the sweeper closed).
    route: Mapped[str | None] = mapped_column(String(128))
    # The model asked for (backfilled rows: the model that answered, the asked one not being kept).
    model: Mapped[str | None] = mapped_column(String(255))
    answered_model: Mapped[str | None] = mapped_column(String(255))
    deployment: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    # NULL: unpriced (or nothing answered).
    cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    # From the request's start to its ending; NULL when unknown.
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    # When the exchange ended (UTC).
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class RollupCounters:
    """The counters of a rollup row: what its exchanges added up to."""

    requests: Mapped[int] = mapped_column(Integer, default=0)
    # Exchanges that failed or were abandoned.
    errors: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # The exchanges of known latency: their latencies' sum and histogram (LATENCY_BUCKETS_MS).
    latency_ms_total: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_b0: Mapped[int] = mapped_column(Integer, default=0)
    latency_b1: Mapped[int] = mapped_column(Integer, default=0)
    latency_b2: Mapped[int] = mapped_column(Integer, default=0)
    latency_b3: Mapped[int] = mapped_column(Integer, default=0)
    latency_b4: Mapped[int] = mapped_column(Integer, default=0)
    latency_b5: Mapped[int] = mapped_column(Integer, default=0)
    latency_b6: Mapped[int] = mapped_column(Integer, default=0)
    latency_b7: Mapped[int] = mapped_column(Integer, default=0)
    latency_b8: Mapped[int] = mapped_column(Integer, default=0)
    latency_b9: Mapped[int] = mapped_column(Integer, default=0)


class RequestRollup(RollupCounters, db.Model):
    """The exchanges of one UTC day, model ('' unknown) and route ('' unknown), every key's:
    a few rows a day, whatever the number of keys (the Overview's totals, charts, models, routes)."""

    __tablename__ = "request_rollups"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    route: Mapped[str] = mapped_column(String(128), primary_key=True)


class RequestKeyRollup(RollupCounters, db.Model):
    """The exchanges of one UTC day and key (0: none): the Overview's breakdown by key."""

    __tablename__ = "request_key_rollups"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
