"""Abandoned exchanges: closing what a dead process left `pending`, and keeping live streams alive.

An exchange is recorded `pending` before the LLM call and settled after it (services/chat.py).
If the process serving it dies in between (SIGKILL, the OOM killer, GRACEFUL_TIMEOUT shorter
than a call), nobody settles it. Once it is older than any call can last
(config.abandon_after_seconds, or ABANDON_AFTER_SECONDS) and no heartbeat came since, the
sweeper closes it as `abandoned` with ABANDONED_ERROR, charges its key the estimated
prompt tokens of its stored messages (the upstream most likely received and billed them),
and gives back the worst case the exchange had reserved of the key's daily budget (its
first row records it), which its dead process never settled.

A stream may legitimately run longer than that: while one is relayed, the chat pipeline
(services/heartbeat.py, `keep_alive`) touches its pending rows (`heartbeat_at`) every
`heartbeat_seconds`, so only a stream whose process died goes quiet.

Several sweepers (every worker of every host, plus cron's `flask messages sweep`) never charge
an exchange twice: each batch is one UPDATE ... RETURNING that re-checks the status, and the
key is charged for the rows that statement returned; on PostgreSQL a transaction-level
advisory lock lets one sweeper work at a time (the others skip their turn), on SQLite the
writer queue does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import ColumnElement, Row, func, literal, select, update
from sqlalchemy.orm import Session

from config import abandon_after_seconds
from database import unit_of_work
from models import Message, MessageStatus, as_utc
from services.client_keys import Reservation, charge_usage, settle_reservation
from services.exchanges import replayed
from services.request_log import ended_row, log_exchange
from services.tokens import estimate_message_tokens

log = logging.getLogger("gateway.sweeper")

ABANDONED_ERROR = "abandoned: the process serving this exchange stopped before the reply was recorded"
# Stale rows (and the rest of their exchanges) closed per unit of work: one short transaction.
BATCH_SIZE = 200
# pg_try_advisory_xact_lock's key for "sweeping abandoned exchanges" (any fixed bigint).
SWEEP_LOCK_KEY = 7_311_412_116_012_411_501
MESSAGES = Message.__table__


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: exchanges closed, estimated prompt tokens charged to keys, and
    whether it stood aside because another sweeper held the lock."""

    exchanges: int = 0
    charged_tokens: int = 0
    skipped: bool = False
    rows: int = 0


def _unheartbeated(older_than: datetime) -> ColumnElement[bool]:
    """Pending rows not heartbeated since `older_than`."""
    # 'pending' rendered as a literal: only then can SQLite's and PostgreSQL's planners
    # (a generic plan too) use the partial index ix_messages_pending_timestamp.
    pending = literal(MessageStatus.PENDING, literal_execute=True)
    return (MESSAGES.c.status == pending) & (MESSAGES.c.heartbeat_at.is_(None) | (MESSAGES.c.heartbeat_at < older_than))


def abandon_stale(session: Session, older_than: datetime, error: str, batch_size: int) -> list[Row]:
    """Close the exchanges of up to `batch_size` rows still pending since before `older_than`
    (and not heartbeated since), whole, as ABANDONED with `error`; return the rows this
    statement changed (exchange_id, api_key_id, user_id, role, content, message_fields, and the
    reserved_tokens, reserved_micros and timestamp of the reservation a first row records): fewer than
    `batch_size` means none is left.

    One UPDATE ... RETURNING of whole exchanges whose WHERE re-checks the status and the
    heartbeat: a row another sweeper, a heartbeat or the exchange's own reply changed
    first is not changed, nor returned, again.
    """
    stale = (
        select(MESSAGES.c.exchange_id)
        .where(_unheartbeated(older_than), MESSAGES.c.timestamp < older_than)
        .limit(batch_size)
    )
    statement = (
        update(MESSAGES)
        .where(_unheartbeated(older_than), MESSAGES.c.exchange_id.in_(stale))
        .values(status=MessageStatus.ABANDONED, error=error)
        .returning(
            MESSAGES.c.exchange_id,
            MESSAGES.c.api_key_id,
            MESSAGES.c.user_id,
            MESSAGES.c.role,
            MESSAGES.c.content,
            MESSAGES.c.message_fields,
            MESSAGES.c.reserved_tokens,
            MESSAGES.c.reserved_micros,
            MESSAGES.c.timestamp,
        )
    )
    return list(session.execute(statement).all())


def _claim(session: Session) -> bool:
    """Take the sweep for this transaction; False when another sweeper has it (PostgreSQL)."""
    if session.get_bind().dialect.name != "postgresql":
        return True  # SQLite: the write turn (BEGIN IMMEDIATE, writer queue) serialises sweepers
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(SWEEP_LOCK_KEY))))


def sweep_batch(session: Session, older_than: datetime, batch_size: int = BATCH_SIZE) -> SweepResult:
    """In the caller's unit of work: close up to `batch_size` exchanges pending since before
    `older_than` as abandoned, charge each keyed one its estimated prompt tokens, once, and
    give back what it had reserved of its key's budget."""
    if not _claim(session):
        return SweepResult(skipped=True)
    exchanges: dict[str, tuple[int | None, int]] = {}
    rows = abandon_stale(session, older_than, ABANDONED_ERROR, batch_size)
    for row in rows:
        key_id, tokens = exchanges.get(row.exchange_id, (row.api_key_id, 0))
        prompt = estimate_message_tokens(replayed(row.role, row.content, row.message_fields))
        exchanges[row.exchange_id] = (key_id, tokens + prompt)
        if key_id is not None and (row.reserved_tokens or row.reserved_micros):
            # Given back, nothing charged against it: the estimate below is charged apart.
            held = Reservation(key_id, as_utc(row.timestamp).date(), row.reserved_tokens or 0, row.reserved_micros or 0)
            settle_reservation(session, held, None)
    charged = 0
    for key_id, tokens in exchanges.values():
        if key_id is not None:
            charge_usage(session, key_id, tokens, 0)
            charged += tokens
    _log_abandoned(session, rows, exchanges)
    return SweepResult(exchanges=len(exchanges), charged_tokens=charged, rows=len(rows))


def _log_abandoned(session: Session, rows: list[Row], exchanges: dict[str, tuple[int | None, int]]) -> None:
    """The request log row of each exchange closed: abandoned, its estimated prompt tokens
    (what its key was charged), route and latency unknown (its process kept them)."""
    now = datetime.now(UTC)
    conversations = {row.exchange_id: row.user_id for row in rows}
    for exchange_id, (key_id, tokens) in exchanges.items():
        row = ended_row(
            exchange_id=exchange_id,
            api_key_id=key_id,
            user_id=conversations[exchange_id],
            status=MessageStatus.ABANDONED,
            created_at=now,
            error=ABANDONED_ERROR,
            prompt_tokens=tokens,
            completion_tokens=0,
        )
        log_exchange(session, row, replace=False)


def sweep(older_than: datetime, batch_size: int = BATCH_SIZE) -> SweepResult:
    """Close every exchange abandoned before `older_than`, a short unit of work per batch
    (needs an app context). Stops early, `skipped`, when another sweeper is at work."""
    exchanges = charged = 0
    while True:
        with unit_of_work() as session:
            batch = sweep_batch(session, older_than, batch_size)
        exchanges += batch.exchanges
        charged += batch.charged_tokens
        if batch.skipped or batch.rows < batch_size:
            return SweepResult(exchanges, charged, batch.skipped)


def cutoff(config: Mapping[str, Any], now: datetime | None = None) -> datetime:
    """The moment before which a pending, unheartbeated exchange counts as abandoned."""
    return (now or datetime.now(UTC)) - timedelta(seconds=config["ABANDON_AFTER_SECONDS"])


def sweep_now(app: Flask) -> SweepResult:
    """One sweep with the app's cut-off, logged when it closed anything."""
    with app.app_context():
        result = sweep(cutoff(app.config))
    if result.exchanges:
        log.warning(
            "Closed %d exchanges as abandoned (their process stopped before the reply was recorded); "
            "charged keys %d estimated prompt tokens",
            result.exchanges,
            result.charged_tokens,
        )
    return result


class Sweeper:
    """A daemon thread of one process: a sweep at start, then one every `interval` seconds.

    A thread (not a process or a timer signal) so it works under gthread and, monkey-patched
    into a greenlet, under gevent; it holds no connection between sweeps.
    """

    def __init__(self, app: Flask, interval: float) -> None:
        self.app = app
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="abandoned-exchange-sweeper", daemon=True)

    def start(self) -> Sweeper:
        """Start sweeping in the background thread; the sweeper itself."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to stop: it ends before its next sweep."""
        self.stopped.set()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                sweep_now(self.app)
            except Exception as exc:  # the database is down: try again next time
                log.warning(
                    "Sweeping abandoned exchanges failed (%s); next try in %ss", type(exc).__name__, self.interval
                )
            self.stopped.wait(self.interval)


def start_sweeper(app: Flask) -> Sweeper | None:
    """Start this process's sweeper (gunicorn.conf.py's post_worker_init calls it); None
    when SWEEP_INTERVAL_SECONDS is 0. Warns when ABANDON_AFTER_SECONDS is set below what
    the upstream settings allow a call to last: live exchanges may then be closed."""
    interval = app.config["SWEEP_INTERVAL_SECONDS"]
    if not interval:
        return None
    longest = abandon_after_seconds(app.config)
    if app.config["ABANDON_AFTER_SECONDS"] < longest:
        log.warning(
            "ABANDON_AFTER_SECONDS=%s is below the %s s an upstream call may take (UPSTREAM_DEADLINE_SECONDS "
            "and a margin): exchanges still in flight may be closed as abandoned",
            app.config["ABANDON_AFTER_SECONDS"],
            longest,
        )
    log.info(
        "Closing exchanges pending for over %s s as abandoned, at start and every %s s",
        app.config["ABANDON_AFTER_SECONDS"],
        interval,
    )
    return Sweeper(app, interval).start()
