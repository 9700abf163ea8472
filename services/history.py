"""Loading and trimming a conversation's history: the stored messages a turn is sent after.

Only completed exchanges are history (a failed or abandoned one is kept for audit, never
fed back), each message as it was stored, whole exchanges oldest first, trimmed to the
limits without ever splitting a tool round. Every function takes the session of the
caller's unit of work and never commits it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Integer, Select, bindparam, func, select
from sqlalchemy.orm import Session

from models import Message, MessageStatus
from services.exchanges import replayed
from services.ownership import owned_by
from services.summaries import Summary, latest_summary
from services.tokens import estimate_message_tokens, text_of

MESSAGES = Message.__table__


@dataclass(frozen=True)
class HistoryLimits:
    """How much stored history may be sent: messages, and an estimated token budget."""

    max_messages: int
    max_tokens: int


# No trimming at all: every stored exchange is sent.
UNLIMITED = HistoryLimits(max_messages=10**9, max_tokens=10**15)
# HISTORY_LOAD_MAX_TOKENS's default: the largest window of OpenAI's models, about 4 MB of text.
DEFAULT_BOUND = 1_048_576


def history_bound(config: Mapping[str, Any], llm: Any = None) -> int:
    """The most estimated tokens one request may send, history and turn together: what any
    configured model could take. HISTORY_LOAD_MAX_TOKENS, or less: the largest context
    window of the routing table's deployments (`llm.routing`) when every one declares one."""
    bound = config.get("HISTORY_LOAD_MAX_TOKENS", DEFAULT_BOUND)
    routing = getattr(llm, "routing", None)
    windows = [d.context_window for group in routing.groups.values() for d in group.deployments] if routing else []
    if windows and all(windows):
        return min(bound, max(windows))
    return bound


def completed_exchanges(conversation_id: str | BindParameter, client_key_id: int | BindParameter | None) -> Select:
    """The query of a conversation's completed exchanges: each one's id and the id of its
    first row (`first_id`, their order), for the caller to order and limit."""
    return (
        select(MESSAGES.c.exchange_id, func.min(MESSAGES.c.id).label("first_id"))
        .where(
            MESSAGES.c.user_id == conversation_id,
            owned_by(client_key_id),
            MESSAGES.c.status == MessageStatus.COMPLETED,
        )
        .group_by(MESSAGES.c.exchange_id)
    )


def _newest_first_rows(chain: bool, keyless: bool) -> Select:
    """The rows of completed exchanges of one key (`:key`, or of no key), newest exchange
    first, each exchange's rows together and in order: of the conversation `:conversation`
    (its `:newest` most recent exchanges), or of the exchanges `:exchanges` (a chain); only
    exchanges whose first row is past `:after` (what the conversation's summary covers is
    not; 0: no summary). One statement, built once per kind and only bound after that; its
    rows are read a few at a time, so a caller can stop before the oldest are ever fetched."""
    owner = None if keyless else bindparam("key")
    completed = MESSAGES.c.status == MessageStatus.COMPLETED
    if chain:
        scope = MESSAGES.c.exchange_id.in_(bindparam("exchanges", expanding=True))
    else:
        scope = MESSAGES.c.user_id == bindparam("conversation")
    recent = (
        select(MESSAGES.c.exchange_id, func.min(MESSAGES.c.id).label("first_id"))
        .where(scope, owned_by(owner), completed)
        .group_by(MESSAGES.c.exchange_id)
        .having(func.min(MESSAGES.c.id) > bindparam("after", type_=Integer))
        .order_by(func.min(MESSAGES.c.id).desc())
        .limit(bindparam("newest", type_=Integer))
        .subquery()
    )
    return (
        select(MESSAGES.c.exchange_id, MESSAGES.c.role, MESSAGES.c.content, MESSAGES.c.message_fields)
        .join(recent, MESSAGES.c.exchange_id == recent.c.exchange_id)
        .where(scope, owned_by(owner), completed)
        .order_by(recent.c.first_id.desc(), MESSAGES.c.id)
        .execution_options(yield_per=ROWS_PER_FETCH)
    )


# Rows fetched from the database at a time while history is read, newest first.
ROWS_PER_FETCH = 16
_NEWEST_FIRST_ROWS = {
    (chain, keyless): _newest_first_rows(chain, keyless) for chain in (True, False) for keyless in (True, False)
}


class HistoryTooLong(Exception):
    """The stored history and the turn need more than `bound` estimated tokens, and the
    history may not be trimmed (the Responses API's truncation "disabled")."""

    # What OpenAI's Responses API answers an input that does not fit the model's window.
    message = "Your input exceeds the context window of this model. Please adjust your input and try again."

    def __init__(self, bound: int) -> None:
        super().__init__(f"the history and the turn exceed {bound} tokens")
        self.bound = bound


@dataclass(frozen=True)
class _Read:
    """Whole exchanges as read, oldest first, the estimated tokens of each and of all, and
    whether every exchange in scope was read (False: reading stopped at its budget, older
    ones unread)."""

    exchanges: list[list[dict[str, Any]]]
    costs: list[int]
    tokens: int
    complete: bool


def _read_newest(session: Session, query: Select, values: dict[str, Any], budget: int, ceiling: int) -> _Read:
    """Exchanges of `query` (_newest_first_rows), newest first, until the tokens read pass
    `budget` at the end of a unit trimming keeps whole (an exchange that does not answer
    the tool calls of the one before it), or pass `ceiling` anywhere. Rows come a few at a
    time and the result is closed once it stops: what lies past the budget is never fetched."""
    newest_first: list[list[dict[str, Any]]] = []
    costs: list[int] = []
    tokens, current = 0, None
    result = session.execute(query, values)
    try:
        for exchange_id, role, content, fields in result:
            if exchange_id != current:
                whole_unit = bool(newest_first) and newest_first[-1][0].get("role") != "tool"
                if (tokens > budget and whole_unit) or tokens > ceiling:
                    return _Read(newest_first[::-1], costs[::-1], tokens, complete=False)
                newest_first.append([])
                costs.append(0)
                current = exchange_id
            message = replayed(role, content, fields)
            newest_first[-1].append(message)
            cost = estimate_message_tokens(message)
            costs[-1] += cost
            tokens += cost
    finally:
        result.close()
    return _Read(newest_first[::-1], costs[::-1], tokens, complete=True)


def _tool_rounds(exchanges: list[list[dict[str, Any]]], costs: list[int]) -> list[tuple[list[dict[str, Any]], int]]:
    """Exchanges glued into units that trimming keeps or drops whole, each with its cost (the
    sum of its exchanges' `costs`): an exchange whose first message is a `tool` message
    answers the tool calls of the exchange before it, so the two (and any further such
    exchanges) form one unit. A unit that still starts with a tool message lost its call
    (trimmed or failed) and is never sent."""
    units: list[tuple[list[dict[str, Any]], int]] = []
    for exchange, cost in zip(exchanges, costs, strict=True):
        if units and exchange and exchange[0].get("role") == "tool":
            units[-1] = (units[-1][0] + exchange, units[-1][1] + cost)
        else:
            units.append((list(exchange), cost))
    return [(unit, cost) for unit, cost in units if unit and unit[0].get("role") != "tool"]


def trim_exchanges(
    exchanges: list[list[dict[str, Any]]],
    limits: HistoryLimits,
    always_sent_tokens: int,
    keep_newest: bool = False,
    costs: list[int] | None = None,
) -> list[list[dict[str, Any]]]:
    """The newest whole exchanges that fit the limits, oldest first.

    `always_sent_tokens` is what the messages always sent (system prompts and the new turn)
    already cost; history gets what is left of `limits.max_tokens`. Walking from newest to
    oldest, the first exchange that does not fit ends the history, so no gap is left. A
    tool round (an assistant's tool calls and the tool messages answering them) is never
    split: exchanges that answer tool calls stay with the exchange that made them.
    `keep_newest` keeps the newest unit even over the limits. `costs`: each exchange's
    estimated tokens, when the caller has them already.
    """
    if costs is None:
        costs = [sum(estimate_message_tokens(m) for m in exchange) for exchange in exchanges]
    kept: list[list[dict[str, Any]]] = []
    messages = 0
    tokens = always_sent_tokens
    for unit, cost in reversed(_tool_rounds(exchanges, costs)):
        over = messages + len(unit) > limits.max_messages or tokens + cost > limits.max_tokens
        if over and not (keep_newest and not kept):
            break
        kept.append(unit)
        messages += len(unit)
        tokens += cost
    kept.reverse()
    return kept


@dataclass(frozen=True)
class History:
    """The stored messages a turn is sent after, and how many of the turn's own leading
    messages repeat stored ones (a client that resends its conversation: not new)."""

    messages: list[dict[str, Any]]
    repeated: int = 0
    # Whether trimming left out completed exchanges (newer than the summary, when there is one):
    # what a summary could stand for (services/compactor.py).
    trimmed: bool = False
    # The conversation's summary the history starts with, if any.
    summary: Summary | None = None


def rebuild_history(
    session: Session,
    conversation_id: str,
    client_key_id: int | None,
    limits: HistoryLimits | None,
    turn: Sequence[dict[str, Any]] = (),
    always_sent_tokens: int = 0,
    bound: int | None = None,
    summarised: bool = False,
) -> History:
    """The stored conversation to send the model before `turn`: whole completed exchanges,
    oldest first, each message as it was, trimmed to `limits` after `always_sent_tokens` (what
    is always sent) and the turn's new messages are counted; the newest exchange is kept
    whatever it costs when the turn answers its tool calls. `summarised` (and trimmed): the
    conversation's newest summary first (services/summaries.py), then only exchanges after it.

    Exchanges are read newest first and no further than trimming or `bound` (the most
    estimated tokens one request may send) needs. `limits` None sends the history
    untrimmed: HistoryTooLong when it and the turn exceed `bound`."""
    if limits is not None and limits.max_messages <= 0:
        return History([])
    summary = latest_summary(session, conversation_id, client_key_id) if summarised and limits else None
    if summary is not None:  # it is sent first, and counts as one stored message
        always_sent_tokens += summary.tokens
        limits = HistoryLimits(max(limits.max_messages - 1, 0), limits.max_tokens)
    values = {"conversation": conversation_id, "key": client_key_id, "after": summary.through if summary else 0}
    # A row is at least one message: `max_messages` exchanges hold every message trimming keeps.
    values["newest"] = limits.max_messages if limits is not None else MAX_EXCHANGES
    read = _read(session, _NEWEST_FIRST_ROWS[False, client_key_id is None], values, limits, bound, always_sent_tokens)
    history = _fitted(read, turn, limits, bound, always_sent_tokens)
    if summary is None:
        return history
    return History([summary.message(), *history.messages], history.repeated, history.trimmed, summary)


def chain_history(
    session: Session,
    exchange_ids: tuple[str, ...],
    client_key_id: int | None,
    limits: HistoryLimits | None,
    turn: Sequence[dict[str, Any]] = (),
    always_sent_tokens: int = 0,
    bound: int | None = None,
    held: Sequence[list[dict[str, Any]]] = (),
) -> History:
    """The completed exchanges `exchange_ids` (a chain, oldest first) as history, each
    message as it was, then the exchanges the caller `held` in memory (each a list of chat
    messages: the newest), read and trimmed as rebuild_history reads and trims a conversation."""
    if (not exchange_ids and not held) or (limits is not None and limits.max_messages <= 0):
        return History([])
    kept = [list(exchange) for exchange in held]
    kept_costs = [sum(estimate_message_tokens(m) for m in exchange) for exchange in kept]
    read = _Read([], [], 0, complete=True)
    if exchange_ids:
        newest = min(len(exchange_ids), limits.max_messages) if limits is not None else len(exchange_ids)
        values = {"exchanges": list(exchange_ids), "key": client_key_id, "newest": newest, "after": 0}
        query = _NEWEST_FIRST_ROWS[True, client_key_id is None]
        read = _read(session, query, values, limits, bound, always_sent_tokens + sum(kept_costs))
    both = _Read([*read.exchanges, *kept], [*read.costs, *kept_costs], read.tokens + sum(kept_costs), read.complete)
    return _fitted(both, turn, limits, bound, always_sent_tokens)


def turn_history(
    session: Session,
    conversation_id: str,
    exchange_ids: tuple[str, ...] | None,
    client_key_id: int | None,
    limits: HistoryLimits | None,
    turn: Sequence[dict[str, Any]],
    always_sent_tokens: int,
    bound: int | None,
    held: Sequence[list[dict[str, Any]]] = (),
    summarised: bool = False,
) -> History:
    """The history of a turn: the chain `exchange_ids` and the exchanges `held` in memory
    after it (chain_history), or when both are missing the conversation's (rebuild_history,
    from its summary when `summarised`), read and trimmed (or bounded) as they do."""
    if exchange_ids is not None or held:
        chain = exchange_ids or ()
        return chain_history(session, chain, client_key_id, limits, turn, always_sent_tokens, bound, held)
    return rebuild_history(session, conversation_id, client_key_id, limits, turn, always_sent_tokens, bound, summarised)


# More exchanges than any conversation has: the untrimmed read's limit (its bound is in tokens).
MAX_EXCHANGES = 2**31 - 1


def _read(
    session: Session,
    query: Select,
    values: dict[str, Any],
    limits: HistoryLimits | None,
    bound: int | None,
    always_sent_tokens: int,
) -> _Read:
    """The exchanges trimming (or the untrimmed bound) may need, newest first, read no further."""
    ceiling = bound if bound is not None else UNLIMITED.max_tokens
    if limits is None:  # untrimmed: past the bound it is refused, so reading stops there
        ceiling = max(ceiling - always_sent_tokens, 0)
        return _read_newest(session, query, values, ceiling, ceiling)
    # Trimming keeps no more than max_tokens of history: older exchanges are never sent.
    return _read_newest(session, query, values, min(limits.max_tokens, ceiling), ceiling)


def _fitted(
    read: _Read,
    turn: Sequence[dict[str, Any]],
    limits: HistoryLimits | None,
    bound: int | None,
    always_sent_tokens: int,
) -> History:
    """The exchanges read, trimmed to what the window leaves once the turn's new messages
    are counted; which of the turn's messages are new is decided against everything read,
    before trimming, so a resent conversation longer than the window is still recognised.
    Untrimmed (`limits` None), HistoryTooLong when the history, or it and the turn, pass `bound`."""
    exchanges = read.exchanges
    repeated = already_stored([m for exchange in exchanges for m in exchange], list(turn))
    new = turn[repeated:]
    reserved = always_sent_tokens + sum(estimate_message_tokens(m) for m in new)
    if limits is None:
        if bound is not None and (not read.complete or read.tokens + reserved > bound):
            raise HistoryTooLong(bound)
        limits = UNLIMITED
    # A turn that answers the newest exchange's tool calls needs that exchange, whatever it costs.
    keep_newest = bool(new) and new[0].get("role") == "tool"
    kept = trim_exchanges(exchanges, limits, reserved, keep_newest=keep_newest, costs=read.costs)
    messages = [message for exchange in kept for message in exchange]
    trimmed = not read.complete or len(messages) < sum(len(exchange) for exchange in exchanges)
    return History(messages, repeated, trimmed)


def _sameness(message: dict[str, Any]) -> tuple:
    """What makes two chat messages the same turn, whatever their spelling (null or "" content)."""
    calls = tuple(call.get("id") for call in message.get("tool_calls") or [] if isinstance(call, dict))
    return message.get("role"), text_of(message.get("content")), calls, message.get("tool_call_id")


def already_stored(history: list[dict[str, Any]], messages: list[dict[str, Any]]) -> int:
    """How many leading `messages` repeat the stored `history` a client sent again.

    Either they are the history's last ones (a client resending what it has), or the whole
    history appears in them, after older turns that trimming no longer sends. At least the
    last message is always new: a one-message turn is never taken for a repeat.
    """
    seen, sent = [_sameness(m) for m in history], [_sameness(m) for m in messages]
    for overlap in range(min(len(seen), len(sent) - 1), 0, -1):
        if sent[:overlap] == seen[-overlap:]:
            return overlap
    for end in range(len(sent) - 1, len(seen) - 1, -1):
        if seen and sent[end - len(seen) : end] == seen:
            return end
    return 0
