"""What the chat pipeline (services/chat.py) takes: its settings, read from the app's
configuration once, and one turn of any chat route; and the rejection of a turn that breaks
a limit every chat route shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.heartbeat import heartbeat_seconds
from services.history import DEFAULT_BOUND, HistoryLimits, history_bound
from services.prices import PriceBook
from services.tokens import estimate_message_tokens

if TYPE_CHECKING:
    from services.client_keys import ClientKey


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
    # The most estimated tokens one request may send (its history read no further): see history_bound.
    history_bound: int = DEFAULT_BOUND
    # What tokens cost (services/prices.py): each reply's cost, and money budgets' reservations.
    prices: PriceBook = field(default_factory=lambda: PriceBook({}))
    # Whether HISTORY_MAX_TOKENS was set: unset, a routed group's window sizes history (limits_for).
    history_tokens_set: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any], llm: Any = None) -> ChatSettings:
        """The settings of a Flask configuration (see config.py), for the LLM client `llm` (the
        prices with its routing file's overrides, when there is one)."""
        return cls(
            system_prompt=config.get("SYSTEM_PROMPT") or "",
            history=HistoryLimits(config["HISTORY_MAX_MESSAGES"], config["HISTORY_MAX_TOKENS"]),
            max_prompt_chars=config["MAX_PROMPT_CHARS"],
            allowed_models=tuple(config.get("ALLOWED_MODELS") or ()),
            heartbeat_seconds=heartbeat_seconds(config),
            default_max_tokens=config.get("BUDGET_DEFAULT_MAX_TOKENS", 1024),
            history_bound=history_bound(config, llm),
            prices=PriceBook.from_config(config, getattr(llm, "routing", None)),
            history_tokens_set=config.get("HISTORY_MAX_TOKENS_SET", True),
        )

    def limits_for(self, llm: Any, model: str | None, reply_cap: int) -> HistoryLimits:
        """The history limits of a turn for `model`: HISTORY_MAX_TOKENS when it is set (or
        routing knows no window for the model's group), else the group's context window less
        the reply's cap (`reply_cap`)."""
        window = None if self.history_tokens_set else group_window(llm, model)
        if window is None:
            return self.history
        return HistoryLimits(self.history.max_messages, max(window - reply_cap, 1))


def group_window(llm: Any, model: str | None) -> int | None:
    """The context window of the routing group serving `model`: the smallest `context_window`
    of its deployments when every one declares one; None without routing or a declared window."""
    routing, group_of = getattr(llm, "routing", None), getattr(llm, "group_of", None)
    name = group_of(model) if routing is not None and group_of is not None else None
    group = routing.groups.get(name) if name is not None else None
    windows = [deployment.context_window for deployment in group.deployments] if group else []
    return min(windows) if windows and all(windows) else None


@dataclass(frozen=True)
class CompactionJob:
    """A stored conversation to summarise (services/compactor.py): whose, the model its turn
    used, the history limits it was trimmed to, and the tokens always sent with it (leading
    messages and the turn's own)."""

    conversation_id: str
    client_key_id: int | None
    model: str | None
    limits: HistoryLimits
    always_sent_tokens: int

    @classmethod
    def of(
        cls,
        conversation_id: str,
        client_key_id: int | None,
        model: str | None,
        limits: HistoryLimits,
        context: list[dict[str, Any]],
        history: list[dict[str, Any]],
    ) -> CompactionJob:
        """The job of a turn whose `context` (what it sent) holds the trimmed `history`."""
        tokens = estimate_message_tokens
        always_sent = sum(tokens(m) for m in context) - sum(tokens(m) for m in history)
        return cls(conversation_id, client_key_id, model, limits, always_sent)


class TurnRejected(Exception):
    """The turn breaks a limit every chat route shares: a 400 (or `status`), with nothing
    stored or sent."""

    def __init__(
        self, message: str, *, details: list[dict[str, str]] | None = None, code: str | None = None, status: int = 400
    ):
        super().__init__(message)
        self.message = message
        self.details = details
        self.code = code
        self.status = status


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
    # History the caller holds in memory (a WebSocket's last response), after history_exchanges.
    held_history: tuple[list[dict[str, Any]], ...] = ()
    # False: send the whole history, untrimmed (the Responses API's truncation "disabled"),
    # or refuse the turn when it does not fit the history bound (ChatSettings.history_bound).
    trim_history: bool = True
    # False: record the turn and reply without their content (usage and status only).
    store_content: bool = True
    # The reply keeps (is recorded with) its first this many tool calls; the rest are dropped
    # (the Responses API's max_tool_calls). None: all of them.
    max_tool_calls: int | None = None
    # How many leading `messages` are history this service replays as the turn's own (held or
    # compacted, or a summariser's transcript): not the client's text, so not held to
    # MAX_PROMPT_CHARS (the history bound holds them).
    replayed: int = 0
