"""OpenAI's compaction over any upstream: a conversation summarised by the model, sealed into
a `compaction` item only this service can read, and opened again when it comes back as input.

A compaction keeps the conversation's user messages as they were and stands for everything
else with one summary, which the model writes (an exchange of the chat pipeline: recorded,
charged to the key, no database connection held across the call). The item's
`encrypted_content` is the summary and the kept messages, sealed with the server's
COMPACTION_KEY (Fernet: AES-128-CBC and HMAC-SHA256, with the time it was made): a client
keeping its own history (`store: false`, Codex) sends the item back and it becomes the
history again; an item altered, sealed by another server (or with a retired key), made for
another API key or older than COMPACTION_MAX_AGE_DAYS is refused with a 400 naming it,
before anything is sent upstream.

An item stands for everything before it: the input items before the newest compaction item,
and the history of the chain or conversation, are not sent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from errors import ApiError
from services.chat import ChatPipeline, ChatTurn
from services.client_keys import ClientKey
from services.llm import Completion
from services.responses.items import Item, items_to_chat_messages, new_id
from services.tokens import estimate_message_tokens, estimate_prompt_tokens, text_of

if TYPE_CHECKING:
    from telemetry import ExchangeReport

log = logging.getLogger(__name__)

# The summary goes back to the model as an assistant message: its own words, between the kept
# user messages and the next one (so the roles still alternate, which some templates need).
SUMMARY_PREFIX = "Summary of the conversation so far (earlier turns were compacted):\n"
SUMMARISER_PROMPT = (
    "You compact a conversation so that it can go on in a smaller context. Write a summary of the "
    "conversation below that keeps everything needed to continue it: the user's goals and every fact "
    "they stated (names, numbers, preferences), decisions made, what the assistant answered and what "
    "its tool calls returned that still matters, and what remains to be done. Be concise; write only "
    "the summary."
)
_FORMAT = 1  # the sealed payload's version


@dataclass(frozen=True)
class Compaction:
    """What a compaction item holds: the user messages kept (chat messages) and the summary."""

    kept: list[dict[str, Any]]
    summary: str

    def messages(self) -> list[dict[str, Any]]:
        """The chat messages the item stands for: the kept user messages, then the summary."""
        return [*self.kept, {"role": "assistant", "content": SUMMARY_PREFIX + self.summary}]


class Sealer:
    """Seals and opens compaction items with the COMPACTION_KEY keys (the first seals, any opens)."""

    def __init__(
        self,
        keys: Sequence[str],
        *,
        enabled: bool = True,
        max_age_seconds: int | None = None,
        summary_max_tokens: int = 2048,
    ) -> None:
        self.enabled = enabled
        self.max_age_seconds = max_age_seconds
        self.summary_max_tokens = summary_max_tokens
        self._fernet = MultiFernet([Fernet(key) for key in keys]) if keys else None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sealer:
        """The sealer of a Flask configuration (see config.py's compaction block)."""
        keys = [key.strip() for key in (config.get("COMPACTION_KEY") or "").split(",") if key.strip()]
        days = config.get("COMPACTION_MAX_AGE_DAYS", 30)
        return cls(
            keys,
            enabled=config.get("COMPACTION", True),
            max_age_seconds=days * 86400 if days else None,
            summary_max_tokens=config.get("COMPACTION_SUMMARY_MAX_TOKENS", 2048),
        )

    @property
    def can_seal(self) -> bool:
        """Whether items can be sealed: compaction is on and a key is configured."""
        return self.enabled and self._fernet is not None

    def require(self) -> MultiFernet:
        """The keys; a 400 when compaction is off, a 503 when no key is configured."""
        if not self.enabled:
            raise ApiError(400, "Compaction is turned off on this service (COMPACTION=off)", code="compaction_disabled")
        if self._fernet is None:
            raise unavailable("Compaction is not configured on this service: it has no COMPACTION_KEY")
        return self._fernet

    def seal(self, compaction: Compaction, client_key_id: int | None) -> str:
        """The encrypted_content of an item holding `compaction`, readable for this key only."""
        payload = {"v": _FORMAT, "key": client_key_id, "kept": compaction.kept, "summary": compaction.summary}
        return self.require().encrypt(json.dumps(payload, separators=(",", ":")).encode()).decode()

    def open(self, item: Mapping[str, Any], client_key_id: int | None, field: str) -> Compaction:
        """The compaction an item holds; a 400 naming the item (`field`) when it cannot be read,
        was made for another key, or has expired."""
        fernet = self.require()
        token = item["encrypted_content"].encode()
        name = f"{field} (compaction item '{item.get('id') or 'without an id'}')"
        try:
            payload = json.loads(fernet.decrypt(token))
            kept, summary, owner = payload["kept"], payload["summary"], payload["key"]
        except (InvalidToken, ValueError, KeyError, TypeError):
            raise _unreadable(
                field,
                f"{name} cannot be read: its encrypted_content was altered, or sealed by another "
                "server or with a key this service no longer has",
            ) from None
        if owner != client_key_id:
            raise _unreadable(field, f"{name} was made for another API key")
        if self.max_age_seconds is not None and time.time() - fernet.extract_timestamp(token) > self.max_age_seconds:
            raise _unreadable(field, f"{name} has expired (older than COMPACTION_MAX_AGE_DAYS); compact again")
        return Compaction(list(kept), str(summary))


def unavailable(message: str) -> ApiError:
    """The 503 of a service that cannot compact: a setting missing, which a retry does not
    bring, so the SDKs are told not to retry (they would on a bare 503)."""
    return ApiError(503, message, headers={"x-should-retry": "false"}, code="compaction_unavailable")


def sealed_summaries(items: list[Item], sealer: Sealer | None, client_key_id: int | None) -> list[Item]:
    """Items read from a stored conversation, each `compaction` item (a summary row, whose
    encrypted_content row_items left as the summary's text) sealed as /v1/responses/compact
    seals one: a client may send it back as input. Without a COMPACTION_KEY its
    encrypted_content is "" (the summary is never shown in the clear under that name)."""
    for item in items:
        if item.get("type") == "compaction":
            usable = sealer is not None and sealer.can_seal
            summary = Compaction([], item["encrypted_content"])
            item["encrypted_content"] = sealer.seal(summary, client_key_id) if usable else ""
    return items


def _unreadable(field: str, message: str) -> ApiError:
    details = [{"field": field, "message": "unreadable compaction item"}]
    return ApiError(400, message, details=details, code="invalid_encrypted_content")


def app_sealer(app: Any) -> Sealer:
    """The app's sealer, made from its configuration the first time it is asked for."""
    sealer = app.extensions.get("compaction")
    if sealer is None:
        sealer = app.extensions["compaction"] = Sealer.from_config(app.config)
    return sealer


def expand(items: list[Item], sealer: Sealer | None, client_key_id: int | None) -> tuple[list[dict] | None, list[Item]]:
    """(the chat messages the newest compaction item stands for, the items after it); (None,
    `items`) when there is none. Every compaction item is opened (so each bad one is refused),
    before anything is sent upstream."""
    found = [index for index, item in enumerate(items) if item.get("type") == "compaction"]
    if not found:
        return None, items
    if sealer is None:
        raise unavailable("Compaction is not available here")
    opened = [sealer.open(items[index], client_key_id, f"input[{index}]") for index in found]
    return opened[-1].messages(), items[found[-1] + 1 :]


def compaction_item(encrypted_content: str) -> Item:
    """A `compaction` output item (id cmp_...)."""
    return {"id": new_id("cmp"), "type": "compaction", "encrypted_content": encrypted_content}


def threshold(request: Any) -> int | None:
    """The token count past which `request`'s context_management compacts its input, or None."""
    for entry in getattr(request, "context_management", None) or ():
        if entry.type == "compaction":
            return entry.compact_threshold if entry.compact_threshold is not None else 0
    return None


# -- the summary --------------------------------------------------------------------------------


def transcript(messages: Sequence[Mapping[str, Any]], instructions: str | None) -> str:
    """The conversation as the summariser reads it: one paragraph per message, tool calls too."""
    lines = [f"(The assistant's instructions: {instructions})"] if instructions else []
    for message in messages:
        role, text = message.get("role"), text_of(message.get("content"))
        if role == "tool":
            lines.append(f"Tool result ({message.get('tool_call_id')}): {text}")
            continue
        if text:
            lines.append(f"{str(role).capitalize()}: {text}")
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            lines.append(f"Assistant called {function.get('name')}({function.get('arguments')}) [{call.get('id')}]")
    return "\n\n".join(lines)


def _compaction_failed(message: str) -> ApiError:
    # The summariser's answer was refused: the SDKs are told not to send it again (each try
    # is a charged summarising call, and the same input most likely fails the same way).
    return ApiError(
        502,
        f"Compaction failed: {message}; nothing was compacted",
        headers={"x-should-retry": "false"},
        code="compaction_failed",
    )


@dataclass(frozen=True)
class Compacted:
    """A compaction made: what it holds, its item, and the summarising call's completion."""

    compaction: Compaction
    item: Item
    completion: Completion


def compact(
    pipeline: ChatPipeline,
    sealer: Sealer | None,
    messages: Sequence[Mapping[str, Any]],
    *,
    instructions: str | None,
    model: str | None,
    client_key: ClientKey | None,
    report: ExchangeReport,
) -> Compacted:
    """Compact `messages` (chat messages, oldest first): the model summarises them through the
    pipeline (an exchange of its own, recorded without its content, charged to the key), the user
    messages are kept. A summary that is empty, cut off (finish_reason "length") or not shorter
    than the messages it replaces is refused (502 compaction_failed); so is a failing call (the
    pipeline's UpstreamError). Nothing else is stored."""
    if sealer is None:
        raise unavailable("Compaction is not available here")
    sealer.require()
    summary_max_tokens = sealer.summary_max_tokens
    kept = [dict(message) for message in messages if message.get("role") == "user"]
    replaced = estimate_prompt_tokens([m for m in messages if m.get("role") != "user"], {})
    turn = ChatTurn(
        conversation_id=None,
        messages=[{"role": "user", "content": transcript(messages, instructions)}],
        leading=[{"role": "system", "content": SUMMARISER_PROMPT}],
        model=model,
        options={"max_completion_tokens": summary_max_tokens},
        client_key=client_key,
        store_content=False,
        replayed=1,  # the transcript is the history being summarised, not a prompt of the client's
    )
    completion = pipeline.answer(turn, report).completion
    compaction = _accepted(completion, kept, replaced, summary_max_tokens)
    log.info("compacted %d messages: %d tokens into a summary", len(messages), replaced)
    key_id = client_key.id if client_key else None
    return Compacted(compaction, compaction_item(sealer.seal(compaction, key_id)), completion)


def _accepted(completion: Any, kept: list[dict[str, Any]], replaced: int, summary_max_tokens: int) -> Compaction:
    """The compaction the summarising call's `completion` makes; 502 compaction_failed for a
    summary that is empty, cut off, or not shorter than the `replaced` tokens."""
    summary = (completion.text or "").strip()
    if not summary:
        raise _compaction_failed("the model wrote an empty summary")
    if completion.finish_reason == "length":
        raise _compaction_failed(f"the summary was cut off at COMPACTION_SUMMARY_MAX_TOKENS ({summary_max_tokens})")
    compaction = Compaction(kept, summary)
    written = estimate_message_tokens(compaction.messages()[-1])
    if written >= replaced:
        raise _compaction_failed(
            f"the summary ({written} tokens) is not shorter than what it replaces ({replaced} tokens)"
        )
    return compaction


def over_threshold(
    pipeline: ChatPipeline,
    sealer: Sealer | None,
    request: Any,
    turn: ChatTurn,
    items: list[Item],
    report: ExchangeReport,
) -> tuple[Compacted, list[Item]] | None:
    """`context_management`: when the call `turn` would make passes the request's threshold,
    everything before the input's newest user message (the history, earlier input items) is
    compacted; (the compaction, the input items it leaves to send after it), or None (under
    the threshold, or nothing before that message to compact: the turn is sent as it is)."""
    context, new = pipeline.context(turn)
    if estimate_prompt_tokens(context, turn.options) <= (threshold(request) or 0):
        return None
    users = [i for i, item in enumerate(items) if item["type"] == "message" and item["role"] == "user"]
    history = context[len(turn.leading or ()) : len(context) - len(new)]
    earlier = [*history, *items_to_chat_messages(items[: users[-1]])] if users else []
    if not earlier:
        return None
    made = compact(
        pipeline,
        sealer,
        earlier,
        instructions=request.instructions,
        model=request.model,
        client_key=turn.client_key,
        report=report,
    )
    return made, items[users[-1] :]
