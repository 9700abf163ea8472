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
   journaled and recorded when it is back (ExchangeRecorder, services/recorder.py): the
   client still gets its answer.

The pipeline takes what it needs as arguments (the turn with its client key, the
settings, the LLM client); it reads no request state, and it fills the ExchangeReport it
is given so the request's log line and metrics can say what happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from database import unit_of_work
from models import MessageStatus
from services.client_keys import Reservation, has_money_budget, reserve_budget
from services.exchanges import (
    new_conversation_id,
    new_exchange_id,
    record_turn,
    stored_columns,
    without_content,
)
from services.heartbeat import keep_alive
from services.history import History, HistoryLimits, HistoryTooLong, turn_history
from services.llm import ChatStream, Completion, OfflineChat, OpenAIChat, UpstreamError
from services.llm.types import Attempt
from services.prices import reply_cost
from services.recorder import Ending, ExchangeRecorder
from services.tokens import (
    completion_cap,
    estimate_message_tokens,
    estimate_prompt_tokens,
    estimate_text_tokens,
    prompt_characters,
    text_of,
)
from services.turns import ChatSettings, ChatTurn, CompactionJob, TurnRejected

if TYPE_CHECKING:
    from services.compactor import Compactor
    from telemetry import ExchangeReport

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Exchange:
    """A recorded turn: its ids, the context the model receives, its budget reservation."""

    exchange_id: str
    conversation_id: str
    client_key_id: int | None
    context: list[dict[str, Any]]
    store_content: bool = True
    reservation: Reservation | None = None
    # The model the client asked for (or the LLM's default): a failed exchange's rows name it.
    model: str | None = None
    max_tool_calls: int | None = None  # ChatTurn's
    # The turn's messages that are new (recorded, sent after the history).
    new_messages: list[dict[str, Any]] = field(default_factory=list)
    # The conversation to summarise once the reply is recorded (its history was trimmed).
    compaction: CompactionJob | None = None
    # The request's route and start (time.perf_counter()), for its request log row.
    route: str | None = None
    started: float | None = None

    def log_fields(self) -> dict[str, Any]:
        """The Ending's request log fields: the route, and the milliseconds since the request began."""
        latency = None if self.started is None else round((time.perf_counter() - self.started) * 1000)
        return {"route": self.route, "latency_ms": latency}


@dataclass
class ChatAnswer:
    """The answer to a turn: a whole `completion`, or `chunks` (OpenAI chunk dicts, then an
    UpstreamError if the upstream broke off) of which `sofar()` sums up what arrived."""

    conversation_id: str
    exchange_id: str
    completion: Completion | None = None
    chunks: Iterator[dict[str, Any] | UpstreamError] | None = None
    stream: ChatStream | None = None
    # The turn's messages that were new: those that do not repeat the history.
    new_messages: list[dict[str, Any]] = field(default_factory=list)

    def sofar(self) -> Completion:
        """The reply as far as it has arrived (all of it, for a plain answer)."""
        return self.completion if self.completion is not None else self.stream.completion()


class ChatPipeline:
    """One process's chat pipeline: the LLM client and the settings every turn uses."""

    def __init__(
        self,
        llm: OpenAIChat | OfflineChat,
        settings: ChatSettings,
        recorder: ExchangeRecorder,
        compactor: Compactor | None = None,
    ) -> None:
        self.llm = llm
        self.settings = settings
        self.recorder = recorder
        # Summarises a stored conversation's trimmed-off exchanges after the reply (None: never).
        self.compactor = compactor

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
        report.streamed, report.model = turn.stream, turn.model or getattr(self.llm, "default_model", None)
        exchange = self._start(turn, leading, report)
        answer = ChatAnswer(exchange.conversation_id, exchange.exchange_id, new_messages=exchange.new_messages)
        if turn.stream:
            opened = time.perf_counter()
            stream = self._call(exchange, report, lambda: self.llm.stream(exchange.context, **self._call_args(turn)))
            answer.stream, answer.chunks = stream, self._relay(exchange, stream, report, opened)
            return answer
        completion = self._call(exchange, report, lambda: self.llm.complete(exchange.context, **self._call_args(turn)))
        report.outcome, report.completion = "ok", completion
        self._finish(exchange, completion, MessageStatus.COMPLETED)
        self._compact_later(exchange)
        answer.completion = completion
        return answer

    def _compact_later(self, exchange: _Exchange) -> None:
        """Once the reply is recorded: a trimmed stored conversation is summarised in the
        background (services/compactor.py), ready for a later turn; the client does not wait."""
        if exchange.compaction is not None and self.compactor is not None:
            self.compactor.schedule(exchange.compaction)

    def prompt_tokens(self, turn: ChatTurn) -> int:
        """The prompt tokens of the call `turn` would make (leading messages, trimmed history, new
        messages, tools) as a budget estimates them; nothing written. Raises TurnRejected as answer does."""
        return estimate_prompt_tokens(self.context(turn)[0], turn.options)

    def context(self, turn: ChatTurn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The messages the call `turn` would make sends (leading, trimmed history, new) and the
        new ones among them, read in one read-only unit of work; nothing written. Raises
        TurnRejected as answer does."""
        leading = self._leading(turn)
        self._check(turn, leading)
        key_id = turn.client_key.id if turn.client_key else None
        with unit_of_work(write=False) as session:
            return self._context(session, turn, turn.conversation_id or "", key_id, leading)[:2]

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
        if turn.model is not None and not self.llm.serves(turn.model):
            raise TurnRejected(
                f"The model `{turn.model}` does not exist or you do not have access to it.",
                code="model_not_found",
                status=404,
            )
        # The client's own text counts (its system messages too); the configured prompt does not.
        own = turn.messages[turn.replayed :]
        counted = own if turn.leading is None else [*leading, *own]
        characters = prompt_characters(counted)
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
            context, new, history = self._context(session, turn, conversation_id, key_id, leading)
            prompt, cap = self._worst_case(context, turn)
            micros = self._worst_case_micros(turn, report.model, prompt, cap)
            reservation = reserve_budget(session, turn.client_key, prompt + cap, began.date(), micros)
            stored = new if turn.store_content else [without_content(m) for m in new]
            held = reservation.tokens if reservation is not None and reservation.tokens else None
            held_micros = reservation.micros if reservation is not None and reservation.micros else None
            record_turn(session, exchange_id, conversation_id, key_id, stored, held, began, held_micros)
        return _Exchange(
            exchange_id,
            conversation_id,
            key_id,
            context,
            turn.store_content,
            reservation,
            report.model,
            max_tool_calls=turn.max_tool_calls,
            new_messages=new,
            compaction=self._compaction(turn, conversation_id, key_id, history, context),
            route=report.route,
            started=report.started,
        )

    def _summarised(self, turn: ChatTurn) -> bool:
        """Whether the turn's history is a stored conversation's, summarised when trimmed: not a
        chain's, nor held in memory, nor sent untrimmed; and compaction is on."""
        stored = turn.history_exchanges is None and not turn.held_history and turn.trim_history
        return stored and self.compactor is not None and self.compactor.settings.enabled

    def _compaction(self, turn: ChatTurn, conversation_id: str, key_id: int | None, history: History, context: list):
        """The summarising job a turn whose stored history was trimmed leaves, or None."""
        if not (history.trimmed and self._summarised(turn) and turn.store_content):
            return None
        model = turn.model or getattr(self.llm, "default_model", None)
        return CompactionJob.of(conversation_id, key_id, model, self._limits(turn), context, history.messages)

    def _limits(self, turn: ChatTurn) -> HistoryLimits:
        """The turn's history limits (see ChatSettings.limits_for)."""
        cap = completion_cap(turn.options, self.settings.default_max_tokens)
        return self.settings.limits_for(self.llm, turn.model, cap)

    def _context(
        self, session: Any, turn: ChatTurn, conversation_id: str, key_id: int | None, leading: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], History]:
        """The messages the call sends (leading, history, new), the turn's new ones among them,
        and the history read."""
        history = self._history(session, turn, conversation_id, key_id, leading)
        # A client that sends its whole conversation each turn (LangChain does) repeats
        # what memory holds: only what is new is stored and sent after the history.
        new = turn.messages[history.repeated :]
        return [*leading, *history.messages, *new], new, history

    def _worst_case(self, context: list[dict[str, Any]], turn: ChatTurn) -> tuple[int, int]:
        """The most tokens the call may spend: the estimated prompt and the completion's cap."""
        prompt = estimate_prompt_tokens(context, turn.options)
        return prompt, completion_cap(turn.options, self.settings.default_max_tokens)

    def _worst_case_micros(self, turn: ChatTurn, model: str | None, prompt: int, cap: int) -> int:
        """What the call may cost at most (for a key with a money budget): its worst-case
        tokens at the dearest prices of the deployments that may answer; 0 when unpriced."""
        if not has_money_budget(turn.client_key):
            return 0
        group_of = getattr(self.llm, "group_of", None)
        price = self.settings.prices.of_request(group_of(turn.model) if group_of else None, model)
        return price.cost_micros(prompt, cap) if price is not None else 0

    def _history(
        self, session: Any, turn: ChatTurn, conversation_id: str, key_id: int | None, leading: list[dict[str, Any]]
    ) -> History:
        """The stored messages sent before the new ones (the turn's chain, or its
        conversation's), and how many of the turn's messages repeat them."""
        if turn.history_exchanges is None and turn.conversation_id is None and not turn.held_history:
            return History([])  # a conversation just made up has none
        limits = self._limits(turn) if turn.trim_history else None
        leading_tokens = sum(estimate_message_tokens(m) for m in leading)
        bound = self.settings.history_bound
        chain = turn.history_exchanges
        try:
            return turn_history(
                session,
                conversation_id,
                chain,
                key_id,
                limits,
                turn.messages,
                leading_tokens,
                bound,
                turn.held_history,
                self._summarised(turn),
            )
        except HistoryTooLong as exc:  # OpenAI's answer to an input that does not fit the model
            details = [{"field": "input", "message": f"history and input exceed {bound} tokens"}]
            raise TurnRejected(exc.message, details=details, code="context_length_exceeded") from None

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
            report.attempts = failure.attempts if failure else ()
            # The reservation is given back: a failed call is charged nothing, its attempts neither.
            self.recorder.record(
                Ending(
                    exchange.exchange_id,
                    exchange.conversation_id,
                    exchange.client_key_id,
                    MessageStatus.FAILED,
                    error,
                    reservation=exchange.reservation,
                    attempts=attempt_rows(report.attempts),
                    model=exchange.model,
                    **exchange.log_fields(),
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
                # The router's error holds every attempt, the one that broke off too.
                report.attempts = exc.attempts or tuple(stream.attempts)
                broke = f"stream broke off: {exc.message}"
                self._finish(exchange, stream.completion(), MessageStatus.FAILED, broke, report.attempts)
                yield exc
                return
            ended, report.outcome = True, "ok"
            self._finish(exchange, stream.completion(), MessageStatus.COMPLETED)
            self._compact_later(exchange)
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

    def _finish(
        self,
        exchange: _Exchange,
        completion: Completion,
        status: str,
        error: str | None = None,
        attempts: tuple[Attempt, ...] | None = None,
    ) -> None:
        """Unit of work 2: the reply recorded with `status`, its deployment and attempts (the
        completion's unless given; see _worth_a_row), the reservation settled to the tokens
        spent, once (journaled if the database cannot take it; see ExchangeRecorder).

        The key is charged even when the conversation was erased meanwhile (the reply is
        then not stored): the upstream spent the tokens either way.
        """
        attempts = _worth_a_row(completion.attempts if attempts is None else attempts)
        spent = self._tokens_spent(exchange, completion)
        tokens = (*spent, completion.cached_tokens or 0)
        cost = reply_cost(self.settings.prices, completion.deployment, completion.model, exchange.model, tokens)
        self.recorder.record(
            Ending(
                exchange.exchange_id,
                exchange.conversation_id,
                exchange.client_key_id,
                status,
                error,
                reply={**self._reply_row(exchange, completion), "cost_micros": cost.micros},
                reservation=exchange.reservation,
                spent=spent if exchange.reservation is not None else None,
                attempts=attempt_rows(attempts),
                model=exchange.model,
                spent_micros=cost.charged,
                **exchange.log_fields(),
            )
        )

    @staticmethod
    def _reply_row(exchange: _Exchange, completion: Completion) -> dict[str, Any]:
        """The reply's row: the message as stored (only the first `max_tool_calls` calls, so a
        continuation answers just the calls the client was shown), its completion and usage."""
        if exchange.max_tool_calls is not None and completion.tool_calls:
            completion = replace(completion, tool_calls=completion.tool_calls[: exchange.max_tool_calls])
        message = completion.message() if exchange.store_content else without_content(completion.message())
        return {
            **stored_columns(message),
            "completion_id": completion.completion_id,
            "model": completion.model,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.total_tokens,
            "deployment": completion.deployment,
        }

    @staticmethod
    def _tokens_spent(exchange: _Exchange, completion: Completion) -> tuple[int, int]:
        """The upstream's token counts, or our estimate where a cut-off stream brought none."""
        prompt = completion.prompt_tokens
        if prompt is None:
            prompt = estimate_prompt_tokens(exchange.context, {})
        answer = completion.completion_tokens
        if answer is None:
            answer = estimate_text_tokens(completion.text)
        return prompt, answer


def attempt_rows(attempts: Iterable[Attempt]) -> tuple[dict[str, Any], ...]:
    """The attempts as the Ending keeps them: JSON-ready columns, in order."""
    return tuple(attempt.as_row() for attempt in attempts)


def _worth_a_row(attempts: Sequence[Attempt]) -> Sequence[Attempt]:
    """The attempts the attempts table keeps: none for a reply its first attempt gave (the
    reply row names the deployment: the common case costs no insert), else every one."""
    return () if len(attempts) == 1 and attempts[0].outcome == "ok" else attempts
