"""Token estimates, for trimming history and reserving budgets, without a tokenizer download.

tiktoken fetches its encoding files on first use, which fails on a machine without
network access, so the service estimates instead: one token per 4 bytes of UTF-8 text
(about right for English, and never far under for other scripts, whose characters take
more bytes), plus 4 tokens of framing per message, as OpenAI's own counting guide does.
An image part counts as 85 tokens, OpenAI's price of a low-detail image; the function tools
a request defines count as their JSON text.

Recorded usage always comes from the upstream's own counts; these only decide what is sent,
what is reserved before the upstream has answered, and what POST /v1/responses/input_tokens
answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 85


def text_of(content: Any) -> str:
    """The text of a message's content: the string itself, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def prompt_characters(messages: Iterable[dict[str, Any]]) -> int:
    """The characters a client wrote in `messages`, as MAX_PROMPT_CHARS counts them: each
    one's text, and the names and arguments of the tool calls it carries."""
    return sum(len(text_of(m.get("content"))) + len(_calls_text(m)) for m in messages)


def _calls_text(message: dict[str, Any]) -> str:
    return "".join(
        str((call.get("function") or {}).get("name", "")) + str((call.get("function") or {}).get("arguments", ""))
        for call in message.get("tool_calls") or []
        if isinstance(call, dict)
    )


def estimate_message_tokens(message: dict[str, Any]) -> int:
    """An estimate of the tokens `message` costs in a chat request."""
    content = message.get("content")
    images = 0
    if isinstance(content, list):
        images = sum(1 for part in content if isinstance(part, dict) and part.get("type") != "text")
    text = text_of(content) + _calls_text(message)
    return TOKENS_PER_MESSAGE + estimate_text_tokens(text) + images * TOKENS_PER_IMAGE


def estimate_prompt_tokens(messages: Iterable[dict[str, Any]], options: dict[str, Any]) -> int:
    """An estimate of a chat request's whole prompt: its messages, and the function tools its
    `options` define (top level, or in the `extra_body` a pass-through route puts them in),
    whose definitions the model reads as part of its prompt (their JSON text, estimated as text)."""
    tools = {**(options.get("extra_body") or {}), **options}.get("tools")
    defined = estimate_text_tokens(json.dumps(tools, ensure_ascii=False, separators=(",", ":"))) if tools else 0
    return sum(estimate_message_tokens(m) for m in messages) + defined


def estimate_text_tokens(text: str) -> int:
    """An estimate of the tokens of a bare text (a reply): one per 4 bytes of UTF-8."""
    return math.ceil(len(text.encode("utf-8")) / 4)


def completion_cap(options: dict[str, Any], default: int) -> int:
    """The most completion tokens a request's options let the model write: its
    `max_completion_tokens` or `max_tokens` (top level, or in the `extra_body` a
    pass-through route puts them in), `default` when the client set neither; times its
    `n` choices."""
    fields = {**(options.get("extra_body") or {}), **options}
    cap = _count(fields.get("max_completion_tokens"))
    if cap is None:
        cap = _count(fields.get("max_tokens"))
    return (default if cap is None else cap) * (_count(fields.get("n")) or 1)


def _count(value: Any) -> int | None:
    """`value` when it is a whole number of tokens (not a bool, not negative), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
