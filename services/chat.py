"""One chat exchange end to end: record the turn, call the model, record the outcome."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flask import current_app

from services.conversation import Exchange, HistoryLimits, record_failure, record_reply, start_exchange
from services.llm import Completion, UpstreamError, get_llm
from telemetry import note_upstream_call


@dataclass(frozen=True)
class ChatResult:
    exchange: Exchange
    completion: Completion


def history_limits() -> HistoryLimits:
    """The history limits of the current app's configuration."""
    config = current_app.config
    return HistoryLimits(max_messages=config["HISTORY_MAX_MESSAGES"], max_tokens=config["HISTORY_MAX_TOKENS"])


def configured_system_messages() -> list[dict[str, Any]]:
    """The SYSTEM_PROMPT as a leading system message, or nothing when it is unset."""
    prompt = current_app.config.get("SYSTEM_PROMPT")
    return [{"role": "system", "content": prompt}] if prompt else []


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

    Raises UpstreamError (after recording the exchange as failed) when the model fails.
    The database is not touched while the model is working.
    """
    exchange = start_exchange(user_id, leading, new_messages, history_limits(), new_conversation=new_conversation)
    started = time.perf_counter()
    try:
        completion = get_llm().complete(exchange.context, model=model, **params)
    except UpstreamError as exc:
        note_upstream_call(time.perf_counter() - started, type(exc).__name__)
        record_failure(exchange, exc.message)
        raise
    except Exception:
        note_upstream_call(time.perf_counter() - started, "InternalError")
        record_failure(exchange, "internal error while calling the language model")
        raise
    note_upstream_call(time.perf_counter() - started, "ok", completion)
    record_reply(exchange, completion)
    return ChatResult(exchange=exchange, completion=completion)
