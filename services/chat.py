"""The chat pipeline: every chat route's turn, from the shared checks to the recorded reply.

A route turns its own input into one ChatTurn and hands it to `ChatPipeline.answer`,
which does, in order:

1. the checks every chat route shares (prompt size, allowed model), before anything is
   stored or sent;
2. unit of work 1: the trimmed history, the request's worst case reserved from the key's
   budget, the new messages recorded;
3. the LLM call, with no transaction or connection held;
4. unit of work 2: the reply recorded with its usage and the reservation settled to it,
   or the failure recorded and the reservation given back. A streamed reply is recorded
   when its stream ends, however it ends. If the database cannot take it, the ending is
   journaled and recorded when it is back (ExchangeRecorder, below): the client still
   gets its answer.

The pipeline takes what it needs as arguments (the turn with its client key, the
settings, the LLM client); it reads no request state, and it fills the ExchangeReport it
is given so the request's log line and metrics can say what happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from database import EntryRejected, Journal, unit_of_work
from models import MessageStatus
from services.client_keys import ClientKey, Reservation, reserve_budget, settle_reservation
from services.exchanges import (
    exchange_status,
    new_conversation_id,
    new_exchange_id,
    record_failure,
    record_reply,
    record_turn,
    stored_columns,
    touch_pending,
    without_content,
)
from services.history import UNLIMITED, History, HistoryLimits, chain_history, rebuild_history
from services.llm import (
    ChatStream,
    Completion,
    OfflineChat,
    OpenAIChat,
    UpstreamError,
    completion_cap,
    estimate_message_tokens,
    estimate_text_tokens,
    text_of,
)
from services.responses.store import name_reply_items, record_response, response_recorded

if TYPE_CHECKING:
    from telemetry import ExchangeReport

T = TypeVar("T")
log = logging.getLogger(__name__)

# A stream's rows are touched at most this often (and at least every quarter cut-off).
HEARTBEAT_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class ChatSettings:
    """The settings the pipeline reads, taken from the app's configuration once."""

    system_prompt: str
    history: HistoryLimits
    max_prompt_chars: int
    allowed_models: tuple[str, ...]
    # A stream touches its pending rows this often, so the sweeper knows it is alive.
    heartbeat_seconds: float = 0.0
    # Completion tokens a request is reserved from its key's budget when it sets no max_tokens.
    default_max_tokens: int = 1024

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ChatSettings:
        """The settings of a Flask configuration (see config.py)."""
        return cls(
            system_prompt=config.get("SYSTEM_PROMPT") or "",
            history=HistoryLimits(config["HISTORY_MAX_MESSAGES"], config["HISTORY_MAX_TOKENS"]),
            max_prompt_chars=config["MAX_PROMPT_CHARS"],
            allowed_models=tuple(config.get("ALLOWED_MODELS") or ()),
            heartbeat_seconds=heartbeat_seconds(config),
            default_max_tokens=config.get("BUDGET_DEFAULT_MAX_TOKENS", 1024),
        )


class TurnRejected(Exception):
    """The turn breaks a limit every chat route shares: a 400, with nothing stored or sent."""

    def __init__(self, message: str, *, details: list[dict[str, str]] | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.code = code


@dataclass(frozen=True)
class ChatTurn:
    """One chat request, in the terms every chat route shares.

    `conversation_id` None starts a new conversation (an id is made). `leading` are the
    client's system (or developer) messages, sent first and never stored; None means the
    configured SYSTEM_PROMPT. `messages` are the new turns: recorded, then sent after the
    stored history. `options` go to the upstream as they are.
    """

    conversation_id: str | None
    messages: list[dict[str, Any]]
    leading: list[dict[str, Any]] | None = None
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    client_key: ClientKey | None = None
    # The exchanges whose completed rows are the history, oldest first (a Responses API
    # chain), instead of the conversation's; () for none.
    history_exchanges: tuple[str, ...] | None = None
    # False: send the whole history, untrimmed (the Responses API's truncation "disabled").
    trim_history: bool = True
    # False: record the turn and reply without their content (usage and status only).
    store_content: bool = True


@dataclass(frozen=True)
class _Exchange:
    """A recorded turn: its ids, the context the model receives, its budget reservation."""

    exchange_id: str
    conversation_id: str
    client_key_id: int | None
    context: list[dict[str, Any]]
    store_content: bool = True
    reservation: Reservation | None = None


@dataclass
class ChatAnswer:
    """The answer to a turn: a whole `completion`, or `chunks` (OpenAI chunk dicts, then an
    UpstreamError if the upstream broke off) of which `sofar()` sums up what arrived."""

    conversation_id: str
    exchange_id: str
    completion: Completion | None = None
    chunks: Iterator[dict[str, Any] | UpstreamError] | None = None
    stream: ChatStream | None = None

    def sofar(self) -> Completion:
        """The reply as far as it has arrived (all of it, for a plain answer)."""
        return self.completion if self.completion is not None else self.stream.completion()


class ChatPipeline:
    """One process's chat pipeline: the LLM client and the settings every turn uses."""

    def __init__(self, llm: OpenAIChat | OfflineChat, settings: ChatSettings, recorder: ExchangeRecorder) -> None:
        self.llm = llm
        self.settings = settings
        self.recorder = recorder

    def answer(self, turn: ChatTurn, report: ExchangeReport) -> ChatAnswer:
        """Answer one turn, plain or streamed (see the module's docstring for the steps).

        Raises TurnRejected, or BudgetSpent (the request's worst case does not fit in
        the key's budget), before anything is stored or sent, and
        UpstreamError (after recording the exchange as failed) when the model fails
        before its first byte.
        """
        leading = self._leading(turn)
        self._check(turn, leading)
        report.prompt_text = "\n".join(text_of(m.get("content")) for m in turn.messages)
        report.streamed = turn.stream
        exchange = self._start(turn, leading, report)
        if turn.stream:
            opened = time.perf_counter()
            stream = self._call(exchange, report, lambda: self.llm.stream(exchange.context, **self._call_args(turn)))
            chunks = self._relay(exchange, stream, report, opened)
            return ChatAnswer(exchange.conversation_id, exchange.exchange_id, chunks=chunks, stream=stream)
        completion = self._call(exchange, report, lambda: self.llm.complete(exchange.context, **self._call_args(turn)))
        report.outcome, report.completion = "ok", completion
        self._finish(exchange, completion, MessageStatus.COMPLETED)
        return ChatAnswer(exchange.conversation_id, exchange.exchange_id, completion=completion)

    def _leading(self, turn: ChatTurn) -> list[dict[str, Any]]:
        if turn.leading is not None:
            return turn.leading
        prompt = self.settings.system_prompt
        return [{"role": "system", "content": prompt}] if prompt else []

    def _check(self, turn: ChatTurn, leading: list[dict[str, Any]]) -> None:
        """The limits every chat route shares, checked before anything is stored or sent."""
        allowed = self.settings.allowed_models
        if turn.model is not None and allowed and turn.model not in allowed:
            raise TurnRejected(
                f"Model {turn.model!r} is not allowed here; allowed: {', '.join(allowed)}",
                details=[{"field": "model", "message": "not an allowed model"}],
                code="model_not_allowed",
            )
        # The client's own text counts (its system messages too); the configured prompt does not.
        counted = turn.messages if turn.leading is None else [*leading, *turn.messages]
        characters = sum(len(text_of(m.get("content"))) for m in counted)
        if characters > self.settings.max_prompt_chars:
            raise TurnRejected(
                f"Prompt is too long: {characters} characters, the limit is {self.settings.max_prompt_chars}"
            )

    def _start(self, turn: ChatTurn, leading: list[dict[str, Any]], report: ExchangeReport) -> _Exchange:
        """Unit of work 1: the history read, the worst case reserved, the new messages recorded."""
        conversation_id = turn.conversation_id or new_conversation_id()
        report.conversation_id = conversation_id
        key_id = turn.client_key.id if turn.client_key else None
        exchange_id = new_exchange_id()
        began = datetime.now(UTC)  # the rows' time, and the day whose budget is reserved
        with unit_of_work() as session:
            history = self._history(session, turn, conversation_id, key_id, leading)
            # A client that sends its whole conversation each turn (LangChain does) repeats
            # what memory holds: only what is new is stored and sent after the history.
            new = turn.messages[history.repeated :]
            context = [*leading, *history.messages, *new]
            reservation = reserve_budget(session, turn.client_key, self._worst_case(context, turn), began.date())
            stored = new if turn.store_content else [without_content(m) for m in new]
            held = reservation.tokens if reservation is not None and reservation.tokens else None
            record_turn(session, exchange_id, conversation_id, key_id, stored, held, began)
        return _Exchange(exchange_id, conversation_id, key_id, context, turn.store_content, reservation)

    def _worst_case(self, context: list[dict[str, Any]], turn: ChatTurn) -> int:
        """The most tokens the call may spend: the estimated prompt and the completion's cap."""
        prompt = sum(estimate_message_tokens(m) for m in context)
        return prompt + completion_cap(turn.options, self.settings.default_max_tokens)

    def _history(
        self, session: Any, turn: ChatTurn, conversation_id: str, key_id: int | None, leading: list[dict[str, Any]]
    ) -> History:
        """The stored messages sent before the new ones (the turn's chain, or its
        conversation's), and how many of the turn's messages repeat them."""
        if turn.history_exchanges is None and turn.conversation_id is None:
            return History([])  # a conversation just made up has none
        limits = self.settings.history if turn.trim_history else UNLIMITED
        leading_tokens = sum(estimate_message_tokens(m) for m in leading)
        if turn.history_exchanges is not None:
            return chain_history(session, turn.history_exchanges, key_id, limits, turn.messages, leading_tokens)
        return rebuild_history(session, conversation_id, key_id, limits, turn.messages, leading_tokens)

    @staticmethod
    def _call_args(turn: ChatTurn) -> dict[str, Any]:
        return {"model": turn.model, **turn.options}

    def _call(self, exchange: _Exchange, report: ExchangeReport, call: Callable[[], T]) -> T:
        """The upstream call, timed; a failure is recorded (unit of work 2) and re-raised."""
        started = time.perf_counter()
        try:
            return call()
        except Exception as exc:
            failure = exc if isinstance(exc, UpstreamError) else None
            report.outcome = type(exc).__name__ if failure else "InternalError"
            error = failure.message if failure else "internal error while calling the language model"
            # The reservation is given back: a failed call is charged nothing.
            self.recorder.record(
                Ending(
                    exchange.exchange_id,
                    exchange.conversation_id,
                    exchange.client_key_id,
                    MessageStatus.FAILED,
                    error,
                    reservation=exchange.reservation,
                )
            )
            raise
        finally:
            report.upstream_seconds = time.perf_counter() - started

    def _relay(
        self, exchange: _Exchange, stream: ChatStream, report: ExchangeReport, started: float
    ) -> Iterator[dict[str, Any] | UpstreamError]:
        """Yield the upstream's chunks; record the reply however the stream ends.

        Ends normally: the whole reply, COMPLETED. The upstream breaks off: the
        UpstreamError is yielded (for the route's error event) and the partial reply
        recorded FAILED. The client goes away (the server closes this generator): the
        upstream stream is closed and the partial reply recorded DISCONNECTED.
        """
        ended = False
        try:
            try:
                yield from keep_alive(stream, exchange.exchange_id, self.settings.heartbeat_seconds, started)
            except UpstreamError as exc:
                ended, report.outcome = True, type(exc).__name__
                self._finish(exchange, stream.completion(), MessageStatus.FAILED, f"stream broke off: {exc.message}")
                yield exc
                return
            ended, report.outcome = True, "ok"
            self._finish(exchange, stream.completion(), MessageStatus.COMPLETED)
        except GeneratorExit:
            if not ended:  # the client left before the end
                report.outcome = "ClientDisconnected"
                stream.close()
                self._finish(
                    exchange, stream.completion(), MessageStatus.DISCONNECTED, "the client disconnected mid-stream"
                )
            raise
        finally:
            report.upstream_seconds = time.perf_counter() - started
            report.completion = stream.completion()

    def _finish(self, exchange: _Exchange, completion: Completion, status: str, error: str | None = None) -> None:
        """Unit of work 2: the reply recorded with `status`, the reservation settled to the
        tokens spent (journaled if the database cannot take it; see ExchangeRecorder).

        The key is charged even when the conversation was erased meanwhile (the reply is
        then not stored): the upstream spent the tokens either way.
        """
        message = completion.message() if exchange.store_content else without_content(completion.message())
        reply = {
            **stored_columns(message),
            "completion_id": completion.completion_id,
            "model": completion.model,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.total_tokens,
        }
        self.recorder.record(
            Ending(
                exchange.exchange_id,
                exchange.conversation_id,
                exchange.client_key_id,
                status,
                error,
                reply=reply,
                reservation=exchange.reservation,
                spent=self._tokens_spent(exchange, completion) if exchange.reservation is not None else None,
            )
        )

    @staticmethod
    def _tokens_spent(exchange: _Exchange, completion: Completion) -> tuple[int, int]:
        """The upstream's token counts, or our estimate where a cut-off stream brought none."""
        prompt = completion.prompt_tokens
        if prompt is None:
            prompt = sum(estimate_message_tokens(m) for m in exchange.context)
        answer = completion.completion_tokens
        if answer is None:
            answer = estimate_text_tokens(completion.text)
        return prompt, answer


def heartbeat_seconds(config: Mapping[str, Any]) -> float:
    """How often a live stream touches its rows: a quarter of the cut-off, at most 30 s.

    A stream is silent at most OPENAI_TIMEOUT between chunks (the SDK fails it after
    that), so its rows are never older than heartbeat + OPENAI_TIMEOUT, which the derived
    cut-off (OPENAI_TIMEOUT + at least 60 s) always exceeds.
    """
    return min(HEARTBEAT_MAX_SECONDS, config["ABANDON_AFTER_SECONDS"] / 4)


def keep_alive(chunks: Iterable[T], exchange_id: str, every: float, since: float) -> Iterator[T]:
    """Yield `chunks`, touching the exchange's pending rows each time `every` seconds have
    passed (time.perf_counter) since `since` or the last touch. A failed touch is logged
    and the stream goes on: the reply matters more than the heartbeat."""
    last = since
    iterator = iter(chunks)
    try:
        for chunk in iterator:
            if every > 0 and time.perf_counter() - last >= every:
                last = time.perf_counter()
                _touch(exchange_id)
            yield chunk
    finally:
        # Closed early (the client left): close the chunks as `yield from` would have.
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _touch(exchange_id: str) -> None:
    try:
        with unit_of_work() as session:
            touch_pending(session, exchange_id, datetime.now(UTC))
    except Exception as exc:  # the database is down: the stream itself may still finish
        log.warning("Could not mark exchange %s alive: %s", exchange_id, type(exc).__name__)


# Unit of work 2, kept safe ------------------------------------------------------------------
#
# How an exchange ends, recorded: unit of work 2, kept safe when the database cannot take it.
#
# An Ending is everything unit of work 2 writes: the reply row (or none, when the upstream
# failed before answering), the exchange's status, and the key's budget reservation
# settled with what the upstream spent. `ExchangeRecorder.record` writes it in one
# transaction, retried briefly; if the database still refuses (PostgreSQL gone, SQLite's
# disk full), the ending goes to the local journal (Journal, at the end of this module) and the client
# gets its answer all the same. A replayer thread applies the journal, in order, once
# writes succeed again: woken by the next successful write or by /readyz, else every
# REPLAY_SECONDS. Applying an ending is idempotent: an exchange no longer pending was
# recorded already (by an earlier try whose commit looked failed, or an earlier replay),
# so it is neither written nor charged again.


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
    settled; None charges nothing and only gives the reservation back.
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

    def as_entry(self) -> dict[str, Any]:
        """The ending as one JSON-ready journal entry."""
        held = self.reservation
        return {
            **{name: getattr(self, name) for name in ("exchange_id", "conversation_id", "client_key_id", "status")},
            "error": self.error,
            "reply": self.reply,
            "reservation": None if held is None else [held.client_key_id, held.day.isoformat(), held.tokens],
            "spent": None if self.spent is None else list(self.spent),
            "ended_at": self.ended_at.isoformat(),
        }

    def apply(self, session: Session, *, recheck: bool) -> None:
        apply_ending(session, self, recheck=recheck)

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Ending:
        """The ending a journal entry holds; KeyError, TypeError or ValueError if it holds none."""
        held = entry["reservation"]
        return cls(
            **{name: entry[name] for name in ("exchange_id", "conversation_id", "client_key_id", "status", "error")},
            reply=entry["reply"],
            reservation=None if held is None else Reservation(int(held[0]), date.fromisoformat(held[1]), int(held[2])),
            spent=None if entry["spent"] is None else (int(entry["spent"][0]), int(entry["spent"][1])),
            ended_at=datetime.fromisoformat(entry["ended_at"]),
        )


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
        return self.columns["exchange_id"]

    def as_entry(self) -> dict[str, Any]:
        return {
            "kind": "response",
            "columns": self.columns,
            "item_ids": self.item_ids,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> ResponseRecord:
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
        before = record_failure(session, ending.exchange_id, ending.error or "")
    else:
        reply = {**ending.reply, "timestamp": ending.ended_at}
        ids = (ending.exchange_id, ending.conversation_id, ending.client_key_id)
        before = record_reply(session, *ids, reply, ending.status, ending.error)
    if ending.reservation is not None:
        # An exchange the sweeper closed as abandoned while its call still ran (an
        # ABANDON_AFTER_SECONDS below the call's time) had its reservation given back then.
        held = ending.reservation if before != MessageStatus.ABANDONED else replace(ending.reservation, tokens=0)
        settle_reservation(session, held, ending.spent)


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
