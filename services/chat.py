"""One chat exchange end to end: record the turn, call the model, record the outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from services.conversation import Exchange, HistoryLimits, record_failure, record_reply, start_exchange
from services.llm import Completion, UpstreamError, get_llm


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
    **params: Any,
) -> ChatResult:
    """Record the new turn, ask the model with the trimmed history, record the reply.

    Raises UpstreamError (after recording the exchange as failed) when the model fails.
    The database is not touched while the model is working.
    """
    exchange = start_exchange(user_id, leading, new_messages, history_limits())
    try:
        completion = get_llm().complete(exchange.context, model=model, **params)
    except UpstreamError as exc:
        record_failure(exchange, exc.message)
        raise
    except Exception:
        record_failure(exchange, "internal error while calling the language model")
        raise
    record_reply(exchange, completion)
    return ChatResult(exchange=exchange, completion=completion)
