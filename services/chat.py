"""One chat exchange end to end: record the turn, call the model, record the outcome."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app, g

from auth import current_client
from models import MessageStatus
from services.conversation import Exchange, HistoryLimits, record_failure, record_reply, start_exchange
from services.llm import ChatStream, Completion, UpstreamError, get_llm
from telemetry import note_upstream_call

T = TypeVar("T")


@dataclass(frozen=True)
class ChatResult:
    exchange: Exchange
    completion: Completion


def history_limits() -> HistoryLimits:
    """The history limits of the current app's configuration."""
    config = current_app.config
    return HistoryLimits(max_messages=config["HISTORY_MAX_MESSAGES"], max_tokens=config["HISTORY_MAX_TOKENS"])


def _record_turn(
    user_id: str, leading: list[dict[str, Any]], new_messages: list[dict[str, Any]], new_conversation: bool
) -> Exchange:
    """Transaction 1 for this request: its key's budget checked, its turn recorded."""
    return start_exchange(
        user_id, leading, new_messages, history_limits(), client=current_client(), new_conversation=new_conversation
    )


def configured_system_messages() -> list[dict[str, Any]]:
    """The SYSTEM_PROMPT as a leading system message, or nothing when it is unset."""
    prompt = current_app.config.get("SYSTEM_PROMPT")
    return [{"role": "system", "content": prompt}] if prompt else []


def _ask(exchange: Exchange, call: Callable[[], T]) -> tuple[T, float]:
    """Run one upstream call for `exchange`; a failure is counted, recorded, and re-raised."""
    started = time.perf_counter()
    try:
        return call(), started
    except UpstreamError as exc:
        note_upstream_call(time.perf_counter() - started, type(exc).__name__)
        record_failure(exchange, exc.message)
        raise
    except Exception:
        note_upstream_call(time.perf_counter() - started, "InternalError")
        record_failure(exchange, "internal error while calling the language model")
        raise


def complete_exchange(
    user_id: str,
    leading: list[dict[str, Any]],
    new_messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    new_conversation: bool = False,
    **params: Any,
) -> ChatResult:
    """Record the new turn, ask the model with the trimmed history, record the reply.

    The exchange belongs to the request's client key, which is charged for the tokens.
    Raises BudgetSpent (nothing recorded, nothing sent) when the key's daily budget is
    used up, and UpstreamError (after recording the exchange as failed) when the model
    fails. The database is not touched while the model is working.
    """
    exchange = _record_turn(user_id, leading, new_messages, new_conversation)
    completion, started = _ask(exchange, lambda: get_llm().complete(exchange.context, model=model, **params))
    note_upstream_call(time.perf_counter() - started, "ok", completion)
    record_reply(exchange, completion)
    return ChatResult(exchange=exchange, completion=completion)


@dataclass
class StreamedExchange:
    """A recorded user turn and the open upstream stream answering it."""

    exchange: Exchange
    stream: ChatStream
    started: float


def start_streamed_exchange(
    user_id: str,
    leading: list[dict[str, Any]],
    new_messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    new_conversation: bool = False,
    **params: Any,
) -> StreamedExchange:
    """Record the new turn and open the upstream stream. Raises UpstreamError (recorded as
    failed) when the stream cannot be opened, before any byte goes to the client."""
    exchange = _record_turn(user_id, leading, new_messages, new_conversation)
    g.streaming = True
    stream, started = _ask(exchange, lambda: get_llm().stream(exchange.context, model=model, **params))
    return StreamedExchange(exchange=exchange, stream=stream, started=started)


def relay_stream(streamed: StreamedExchange) -> Iterator[dict[str, Any] | UpstreamError]:
    """Yield the upstream's chunks; record the outcome however the stream ends.

    Ends normally: the whole reply is recorded with its usage. The upstream breaks off:
    the UpstreamError is yielded (for an error event) and the partial reply recorded as
    failed. The client goes away (the server closes this generator): the upstream stream
    is closed and the partial reply recorded as disconnected. Nothing is lost either way.
    """
    stream, exchange = streamed.stream, streamed.exchange
    outcome = "ok"
    recorded = False
    try:
        try:
            yield from stream
        except UpstreamError as exc:
            outcome = type(exc).__name__
            record_reply(exchange, stream.completion(), MessageStatus.FAILED, f"stream broke off: {exc.message}")
            recorded = True
            yield exc
            return
        record_reply(exchange, stream.completion())
        recorded = True
    except GeneratorExit:
        if not recorded:  # the client left before the end
            outcome = "ClientDisconnected"
            stream.close()
            record_reply(
                exchange, stream.completion(), MessageStatus.DISCONNECTED, "the client disconnected mid-stream"
            )
        raise
    finally:
        note_upstream_call(time.perf_counter() - streamed.started, outcome, stream.completion())
