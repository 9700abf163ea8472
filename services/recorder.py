"""Unit of work 2, kept safe: how an exchange ends, recorded, even when the database cannot take it.

An Ending is everything unit of work 2 writes: the reply row (or none, when the upstream
failed before answering), the exchange's status, the key's budget reservation settled
with what the upstream spent, and the upstream attempts the router made for it.
`ExchangeRecorder.record` writes it in one transaction, retried briefly; if the database
still refuses (PostgreSQL gone, SQLite's disk full), the ending goes to the local journal
(services/journal.py) and the client gets its answer all the same. A replayer thread
applies the journal, in order, once writes succeed again: woken by the next successful
write or by /readyz, else every REPLAY_SECONDS. Applying an ending is idempotent: an
exchange no longer pending was recorded already (by an earlier try whose commit looked
failed, or an earlier replay), so it is neither written nor charged again, nor its
attempts written twice.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from flask import Flask
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from database import unit_of_work
from models import MessageStatus
from services.client_keys import Reservation, settle_reservation
from services.exchanges import attempts_recorded, exchange_status, record_attempts, record_failure, record_reply
from services.journal import EntryRejected, Journal
from services.request_log import ended_row, log_exchange
from services.responses.store import name_reply_items, record_response, response_recorded

log = logging.getLogger(__name__)


# Pauses before the second and third try of a write: about a second in all, enough for a
# pool to reconnect after a blip without holding the client's answer for long.
RETRY_PAUSES = (0.25, 0.75)
# How often the replayer tries the journal while nothing wakes it.
REPLAY_SECONDS = 5.0


@dataclass(frozen=True)
class Ending:
    """How one exchange ended, as unit of work 2 records it and the journal keeps it.

    `reply` holds the assistant row's columns; None marks the exchange failed without a
    reply row. `spent` (prompt, completion tokens) is charged when the reservation is
    settled; None charges nothing and only gives the reservation back. `attempts` are the
    upstream calls made for it, in order (Attempt.as_row() columns), written with it;
    `model` is the model the client asked for, which a failed exchange's rows name.
    """

    exchange_id: str
    conversation_id: str
    client_key_id: int | None
    status: str
    error: str | None = None
    reply: dict[str, Any] | None = None
    reservation: Reservation | None = None
    spent: tuple[int, int] | None = None
    ended_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    attempts: tuple[dict[str, Any], ...] = ()
    model: str | None = None
    # What `spent` cost in micro-dollars (the reply row's cost; 0 when unpriced), charged with it.
    spent_micros: int = 0
    # For the request log: the URL rule the client called, and the time from the request's
    # start to this ending (None in entries journaled before the log existed).
    route: str | None = None
    latency_ms: int | None = None

    def as_entry(self) -> dict[str, Any]:
        """The ending as one JSON-ready journal entry."""
        held = self.reservation
        return {
            **{name: getattr(self, name) for name in ("exchange_id", "conversation_id", "client_key_id", "status")},
            "error": self.error,
            "reply": self.reply,
            "reservation": None
            if held is None
            else [held.client_key_id, held.day.isoformat(), held.tokens, held.micros],
            "spent": None if self.spent is None else list(self.spent),
            "ended_at": self.ended_at.isoformat(),
            "attempts": list(self.attempts),
            "model": self.model,
            "spent_micros": self.spent_micros,
            "route": self.route,
            "latency_ms": self.latency_ms,
        }

    def apply(self, session: Session, *, recheck: bool) -> None:
        """Record the ending in the caller's transaction (see apply_ending)."""
        apply_ending(session, self, recheck=recheck)

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Ending:
        """The ending a journal entry holds; KeyError, TypeError or ValueError if it holds none.
        An entry journaled before attempts were recorded holds none, and no model; one
        journaled before costs were, no cost; one journaled before the request log, no route
        nor latency."""
        held = entry["reservation"]
        model, route, latency = entry.get("model"), entry.get("route"), entry.get("latency_ms")
        if not all(value is None or isinstance(value, str) for value in (model, route)):
            raise TypeError("an ending's model and route must be strings")
        return cls(
            **{name: entry[name] for name in ("exchange_id", "conversation_id", "client_key_id", "status", "error")},
            reply=entry["reply"],
            reservation=None if held is None else _reservation(held),
            spent=None if entry["spent"] is None else (int(entry["spent"][0]), int(entry["spent"][1])),
            ended_at=datetime.fromisoformat(entry["ended_at"]),
            attempts=tuple(attempt_columns(attempt) for attempt in entry.get("attempts") or ()),
            model=model,
            spent_micros=int(entry.get("spent_micros") or 0),
            route=None if route is None else route[:128],
            latency_ms=None if latency is None else int(latency),
        )


def _reservation(held: list[Any]) -> Reservation:
    micros = int(held[3]) if len(held) > 3 else 0
    return Reservation(int(held[0]), date.fromisoformat(held[1]), int(held[2]), micros)


# An attempt's string columns and their sizes (models/upstream_attempt.py).
_ATTEMPT_STRINGS = {"deployment": 255, "model": 255, "outcome": 32}


def attempt_columns(attempt: dict[str, Any]) -> dict[str, Any]:
    """A journaled attempt as the columns the table takes; KeyError, TypeError or ValueError
    if it is none. A journal line is text anyone could have edited: what it holds must not
    make the database refuse the ending it belongs to (the reply would be set aside with it)."""
    if not isinstance(attempt, dict):
        raise TypeError("an attempt must be an object")
    columns: dict[str, Any] = {}
    for name, size in _ATTEMPT_STRINGS.items():
        if not isinstance(attempt[name], str):
            raise TypeError(f"an attempt's {name} must be a string")
        columns[name] = attempt[name][:size]
    status, error = attempt.get("status_code"), attempt.get("error")
    if error is not None and not isinstance(error, str):
        raise TypeError("an attempt's error must be a string")
    columns.update(latency_ms=int(attempt["latency_ms"]), status_code=None if status is None else int(status))
    return {**columns, "error": error}


@dataclass(frozen=True)
class ResponseRecord:
    """A Responses-API response's own row (services/responses/store.py), recorded after its
    exchange's Ending and kept as safely: retried, else journaled behind that ending, so
    that once the database is back the response can be retrieved and continued by its id.

    `columns` are record_response's; `item_ids` name the reply's items in the conversation
    (stored responses only).
    """

    columns: dict[str, Any]
    item_ids: list[str] | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def exchange_id(self) -> str:
        """The exchange the response answered."""
        return self.columns["exchange_id"]

    def as_entry(self) -> dict[str, Any]:
        """The row as one JSON-ready journal entry, marked as a response's."""
        return {
            "kind": "response",
            "columns": self.columns,
            "item_ids": self.item_ids,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> ResponseRecord:
        """The row a journal entry holds; KeyError, TypeError or ValueError if it holds none."""
        columns = entry["columns"]
        if not isinstance(columns, dict) or not isinstance(columns["id"], str):
            raise TypeError("a response entry's columns must name its id")
        return cls(columns, entry["item_ids"], datetime.fromisoformat(entry["created_at"]))

    def apply(self, session: Session, *, recheck: bool) -> None:
        """Write the row in the caller's transaction. Not for an exchange erased meanwhile
        (a reply must not bring back what its owner erased), nor, with `recheck`, when the
        row is there already. EndingWaits while the exchange's own ending is still pending:
        it waits in the journal, and the row goes behind it (on replay, an ending that never
        came: the row is set aside)."""
        status = exchange_status(session, self.exchange_id)
        if status is None:
            return
        if status == MessageStatus.PENDING:
            raise EndingWaits(self.exchange_id)
        if recheck and response_recorded(session, self.columns["id"]):
            return
        record_response(session, **self.columns, created_at=self.created_at)
        if self.item_ids:
            name_reply_items(session, self.exchange_id, self.item_ids)


class EndingWaits(Exception):
    """A response's row cannot be written before its exchange's ending, which waits in the journal."""


# What the journal holds: an exchange's Ending (entries without a kind), or a response's row.
Record = Ending | ResponseRecord


# The statuses an ending may still be recorded over: its own exchange's, or none (erased).
_OPEN_STATUSES = (None, MessageStatus.PENDING, MessageStatus.ABANDONED)


def apply_ending(session: Session, ending: Ending, *, recheck: bool) -> None:
    """Record `ending` in the caller's transaction: reservation settled, rows written.

    With `recheck`, an exchange that is no longer pending was recorded already and is
    left alone, unless the sweeper closed it as abandoned meanwhile (a reply journaled
    for longer than ABANDON_AFTER_SECONDS): that one is recorded after all. An exchange
    whose rows were erased meanwhile is still charged (the upstream spent the tokens)
    and its reply not stored.
    """
    if recheck and exchange_status(session, ending.exchange_id) not in _OPEN_STATUSES:
        return
    if ending.reply is None:
        before = record_failure(session, ending.exchange_id, ending.error or "", ending.model)
    else:
        reply = {**ending.reply, "timestamp": ending.ended_at}
        ids = (ending.exchange_id, ending.conversation_id, ending.client_key_id)
        before = record_reply(session, *ids, reply, ending.status, ending.error)
    if ending.reservation is not None:
        # An exchange the sweeper closed as abandoned while its call still ran (an
        # ABANDON_AFTER_SECONDS below the call's time) had its reservation given back then.
        held = ending.reservation
        if before == MessageStatus.ABANDONED:
            held = replace(held, tokens=0, micros=0)
        settle_reservation(session, held, ending.spent, ending.spent_micros)
    # An erased exchange's ending may be applied twice (it stays open): its attempts go in once.
    if ending.attempts and not (recheck and attempts_recorded(session, ending.exchange_id)):
        record_attempts(session, ending.exchange_id, ending.attempts, ending.ended_at)
    log_exchange(session, _log_row(ending), replace=before != MessageStatus.PENDING)


def _log_row(ending: Ending) -> dict[str, Any]:
    """The ending's request log row (services/request_log.py)."""
    reply = ending.reply or {}
    spent = ending.spent or (None, None)
    prompt, completion = reply.get("prompt_tokens"), reply.get("completion_tokens")
    return ended_row(
        exchange_id=ending.exchange_id,
        api_key_id=ending.client_key_id,
        user_id=ending.conversation_id,
        status=ending.status,
        created_at=ending.ended_at,
        route=ending.route,
        model=ending.model or reply.get("model"),
        answered_model=reply.get("model"),
        deployment=reply.get("deployment"),
        error=ending.error,
        prompt_tokens=spent[0] if prompt is None else prompt,
        completion_tokens=spent[1] if completion is None else completion,
        cost_micros=reply.get("cost_micros"),
        latency_ms=ending.latency_ms,
    )


def replay_entry(entry: dict[str, Any]) -> None:
    """Apply one journal entry in a unit of work of its own (the journal's `apply`)."""
    try:
        record = (ResponseRecord if entry.get("kind") == "response" else Ending).from_entry(entry)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise EntryRejected(f"not an exchange ending or response ({type(exc).__name__})") from exc
    try:
        with unit_of_work() as session:
            record.apply(session, recheck=True)
    except (IntegrityError, DataError) as exc:
        raise EntryRejected(f"exchange {record.exchange_id}: the database refused it ({type(exc).__name__})") from exc
    except EndingWaits as exc:
        raise EntryRejected(f"exchange {record.exchange_id}: its ending was never recorded") from exc


class ExchangeRecorder:
    """Records endings (unit of work 2) for one process, journaling what the database refuses."""

    def __init__(self, app: Flask, journal: Journal, replay_seconds: float = REPLAY_SECONDS) -> None:
        self.journal = journal
        self.replay_seconds = replay_seconds
        self._app = app
        self._wake = threading.Event()
        self._replayer: threading.Thread | None = None
        self._replayer_lock = threading.Lock()

    def record(self, ending: Record) -> None:
        """Record `ending` (or a response's row) in the database, trying up to three times
        in about a second; failing that, in the journal. Raises (the database's error) only
        when neither could take it.

        A response's row whose exchange's ending waits in the journal goes in behind it.
        """
        try:
            self._write(ending)
        except SQLAlchemyError as exc:
            self._journal(ending, exc)
            return
        except EndingWaits:
            self._journal_behind_ending(ending)
            return
        if self.journal.pending():
            self.wake()  # writes succeed again: replay what waits now

    def _journal_behind_ending(self, record: Record) -> None:
        try:
            self.journal.append(record.as_entry())
        except OSError as exc:  # the ending was journaled a moment ago; this one is lost
            log.error("response row of exchange %s lost: the journal failed (%s)", record.exchange_id, exc.strerror)
            return
        self.wake()

    def _write(self, ending: Record) -> None:
        started = time.monotonic()
        for attempt in range(len(RETRY_PAUSES) + 1):
            try:
                with unit_of_work() as session:
                    # A retry rechecks: the failed try's commit may have happened after all.
                    ending.apply(session, recheck=attempt > 0)
                return
            except SQLAlchemyError as exc:
                out_of_tries = attempt == len(RETRY_PAUSES) or time.monotonic() - started > 1.0
                if out_of_tries:
                    raise
                log.warning("recording exchange %s failed (%s); retrying", ending.exchange_id, type(exc).__name__)
                time.sleep(RETRY_PAUSES[attempt])

    def _journal(self, ending: Record, failure: SQLAlchemyError) -> None:
        try:
            self.journal.append(ending.as_entry())
        except OSError as exc:
            log.error(
                "exchange %s lost: the database (%s) and the journal %s (%s) both failed",
                ending.exchange_id,
                type(failure).__name__,
                self.journal.path,
                exc.strerror,
            )
            raise failure from None
        log.error(
            "database unwritable (%s): exchange %s journaled in %s, to be recorded when it is back",
            type(failure).__name__,
            ending.exchange_id,
            self.journal.path,
        )
        self.start_replayer()

    def replay(self) -> bool:
        """Apply the journal now, in this thread; True when it is empty after."""
        with self._app.app_context():
            return self.journal.drain(replay_entry)

    def wake(self) -> None:
        """Have the replayer try the journal now (the database looks writable)."""
        self._wake.set()
        self.start_replayer()

    def start_replayer(self) -> None:
        """Run the background replayer unless it runs already; it stops when the journal is empty."""
        with self._replayer_lock:
            if self._replayer is None:
                self._replayer = threading.Thread(target=self._replay_until_empty, name="journal-replayer", daemon=True)
                self._replayer.start()

    def _replay_until_empty(self) -> None:
        # A thread (a greenlet under gevent, which patches threading). The wait is a timer
        # between tries, cut short by wake(); it is no synchronisation.
        while True:
            self._wake.wait(self.replay_seconds)
            with self._replayer_lock:
                self._wake.clear()
                if not self.journal.pending():
                    self._replayer = None  # under the lock: a start_replayer() now starts a new one
                    return
            try:
                self.replay()
            except Exception:
                log.exception("journal replay failed; retrying in %s s", self.replay_seconds)
