"""Compaction of stored conversations: the exchanges trimming leaves out are summarised, off the
request's path, into a summary row the next turns start from (services/summaries.py).

After a turn's reply is recorded (unit of work 2), a turn whose history was trimmed hands its
conversation to this process's Compactor, which returns at once. One background worker (a
thread; a greenlet under gevent) takes the jobs in turn: it takes the conversation's lease in
the database (so no two processes or hosts summarise one conversation at once), reads the
previous summary and the oldest exchanges after it that the next turns would not keep, gives
them to the summarising model (COMPACTION_MODEL, by default the conversation's own) with no
database connection held, and stores the summary as a row of the conversation, charged to its
key. The summary is incremental: the previous one and the exchanges that newly fell out make
the next, so a conversation costs one bounded call now and then, never one per request.

A summary that is empty, cut off or not shorter than what it replaces is refused, as
/v1/responses/compact refuses one (services/responses/compaction.py); a failing or slow
summariser leaves the conversation as it was, and its turns are trimmed as before. Every
outcome is logged and counted (gateway_compactions_total). Jobs not run when the process stops
are dropped: nothing was written for them, and their leases expire.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from prometheus_client import Counter

from database import unit_of_work
from errors import ApiError
from models import MessageStatus
from services.client_keys import Reservation, settle_reservation
from services.exchanges import new_exchange_id, record_attempts
from services.history import HistoryLimits
from services.llm import UpstreamError
from services.llm.errors import UpstreamTimeout
from services.prices import PriceBook, reply_cost
from services.request_log import ended_row, log_exchange
from services.responses.compaction import SUMMARISER_PROMPT, _accepted, transcript
from services.summaries import (
    Summary,
    Unit,
    covered_rows_remain,
    drop_lease,
    hold_lease,
    kept_from,
    latest_summary,
    lease_name,
    lock_lease,
    oldest_pending,
    record_summary,
    take_lease,
    to_summarise,
)
from services.turns import CompactionJob as Job
from services.turns import group_window

log = logging.getLogger(__name__)

COMPACTIONS = Counter(
    "gateway_compactions_total",
    "Summaries of stored conversations, by outcome: made, nothing (nothing to summarise), busy "
    "(another process held the lease), failed, timeout, empty, cut_off, not_shorter, erased "
    "(the conversation went meanwhile), dropped (the queue was full), error",
    ["outcome"],
)
# Jobs waiting in one process; past this a trimmed turn's job is dropped (the next one asks again).
QUEUE_SIZE = 64
# Tokens the summariser's own prompt and framing take, besides the transcript.
PROMPT_OVERHEAD = 256


@dataclass(frozen=True)
class CompactorSettings:
    """The settings of stored conversations' compaction (config.py's compaction block)."""

    enabled: bool
    model: str | None
    summary_max_tokens: int
    input_max_tokens: int
    timeout: float
    # After a summary failed or was refused: the conversation's lease is kept this long.
    retry_seconds: float
    prices: PriceBook

    @classmethod
    def from_config(cls, config: Mapping[str, Any], prices: PriceBook) -> CompactorSettings:
        """The settings of a Flask configuration, with the pipeline's prices."""
        return cls(
            enabled=bool(config.get("COMPACTION", True)) and bool(config.get("COMPACTION_HISTORY", True)),
            model=config.get("COMPACTION_MODEL") or None,
            summary_max_tokens=config.get("COMPACTION_SUMMARY_MAX_TOKENS", 2048),
            input_max_tokens=config.get("COMPACTION_INPUT_MAX_TOKENS", 8192),
            timeout=config.get("COMPACTION_TIMEOUT") or 60.0,
            retry_seconds=config.get("COMPACTION_RETRY_SECONDS", 300.0),
            prices=prices,
        )


class Compactor:
    """One process's summariser of stored conversations: a bounded queue and one worker."""

    def __init__(self, app: Flask, llm: Any, settings: CompactorSettings) -> None:
        self.app = app
        self.llm = llm
        self.settings = settings
        self._jobs: queue.Queue[Job] = queue.Queue(QUEUE_SIZE)
        self._lock = threading.Condition()
        self._waiting: set[str] = set()  # lease names queued or running here
        self._worker: threading.Thread | None = None

    def schedule(self, job: Job) -> None:
        """Summarise `job`'s conversation in the background; returns at once. A conversation
        already queued here is not queued twice; a full queue drops the job (counted)."""
        if not self.settings.enabled:
            return
        name = lease_name(job.conversation_id, job.client_key_id)
        with self._lock:
            if name in self._waiting:
                return
            try:
                self._jobs.put_nowait(job)
            except queue.Full:
                _counted("dropped", job, "the queue is full")
                return
            self._waiting.add(name)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="compactor", daemon=True)
                self._worker.start()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every job queued here has run (tests, and a clean stop); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._waiting, timeout)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                with self.app.app_context():
                    self.run(job)
            except Exception:  # the worker must outlive any one job
                log.exception("compaction of a conversation failed")
            finally:
                with self._lock:
                    self._waiting.discard(lease_name(job.conversation_id, job.client_key_id))
                    self._lock.notify_all()

    def run(self, job: Job) -> str:
        """Summarise `job`'s conversation now, under its lease; the outcome (counted and logged)."""
        name, holder = lease_name(job.conversation_id, job.client_key_id), secrets.token_hex(16)
        with unit_of_work() as session:
            taken = take_lease(session, name, holder, self.settings.timeout + 60)
        if not taken:
            return _counted("busy", job, "another process is summarising it")
        outcome, detail = "error", "stopped"
        try:
            outcome, detail = self._summarise(job, (name, holder))
        except Exception as exc:
            log.exception("summarising conversation %s failed", job.conversation_id)
            outcome, detail = "error", type(exc).__name__
        finally:
            with unit_of_work() as session:
                if outcome in RETRY_LATER:  # not again for a while, in any process: trimming meanwhile
                    hold_lease(session, name, holder, self.settings.retry_seconds)
                else:
                    drop_lease(session, name, holder)
        return _counted(outcome, job, detail)

    def _summarise(self, job: Job, lease: tuple[str, str]) -> tuple[str, str]:
        """Read what falls out, have it summarised (no connection held), store the summary."""
        cap = self.summary_cap(job.limits)
        model = self.settings.model or job.model
        with unit_of_work(write=False) as session:
            previous = latest_summary(session, job.conversation_id, job.client_key_id)
            units = self._falling_out(session, job, previous, cap, self.input_cap(model, cap))
        if not units:
            return "nothing", "everything after its summary fits"
        messages = [message for unit in units for message in unit.messages]
        replaced = sum(unit.tokens for unit in units) + (previous.tokens if previous else 0)
        started = time.perf_counter()
        try:
            completion = self.llm.complete(self._request(previous, messages, model), model=model, **self._options(cap))
        except UpstreamError as exc:
            return ("timeout" if isinstance(exc, UpstreamTimeout) else "failed"), exc.message
        refusal = _refusal(completion, replaced, cap)
        latency_ms = round((time.perf_counter() - started) * 1000)
        if refusal is not None:
            self._charge_refused(job, completion, model, latency_ms, refusal[1])
            return refusal
        return self._store(job, lease, units, completion, model, (len(messages), replaced, latency_ms))

    def _charge_refused(self, job: Job, completion: Any, model: str | None, latency_ms: int, reason: str) -> None:
        """A refused summary's call: charged to the key (its tokens were spent) and in the
        request log as failed, with why."""
        with unit_of_work() as session:
            cost = self._charge(session, job, completion, model)
            row = _log_row(job, new_exchange_id(), completion, model, cost, latency_ms)
            log_exchange(session, {**row, "status": MessageStatus.FAILED, "error": reason}, replace=False)

    def _store(self, job: Job, lease: tuple, units: list[Unit], completion: Any, model: str | None, sizes: tuple):
        """Charge the call and store the summary, unless its rows went meanwhile: the outcome.
        The call is in the request log (route "compaction") and the console's rollups, as any
        exchange is; `sizes` are the messages and tokens it replaced, and its milliseconds.
        The lease, locked first, orders it with an erasure (which deletes the lease first):
        either the erasure comes after and takes the summary too, or the lease is gone."""
        count, replaced, latency_ms = sizes
        with unit_of_work() as session:
            cost = self._charge(session, job, completion, model)
            first, through = units[0].first_ids[0], units[-1].first_ids[-1]
            held = lock_lease(session, *lease)  # (name, holder), as run() took it
            through_id = held and covered_rows_remain(session, job.conversation_id, job.client_key_id, first, through)
            if not through_id:
                return "erased", "its rows were erased (or its lease lost) while the model wrote the summary"
            exchange_id = new_exchange_id()
            record_summary(
                session,
                exchange_id,
                job.conversation_id,
                job.client_key_id,
                _summary_row(completion, through, through_id, cost),
            )
            attempts = completion.attempts if len(completion.attempts) > 1 else ()
            record_attempts(session, exchange_id, [attempt.as_row() for attempt in attempts], datetime.now(UTC))
            log_exchange(session, _log_row(job, exchange_id, completion, model, cost, latency_ms), replace=False)
        return "made", f"{count} messages ({replaced} tokens) into {completion.completion_tokens} tokens"

    def _falling_out(self, session: Any, job: Job, previous: Summary | None, cap: int, input_cap: int) -> list[Unit]:
        """The oldest exchanges after `previous` that the next turns would not keep, as many as
        one call may read: what the new summary adds."""
        after = previous.through if previous else 0
        keep_tokens = max((job.limits.max_tokens - cap - job.always_sent_tokens) // 2, 0)
        keep_messages = max((job.limits.max_messages - 1) // 2, 1)
        before = kept_from(session, job.conversation_id, job.client_key_id, after, keep_tokens, keep_messages)
        if before is None:
            return []
        # Not past an exchange still in flight: it would complete behind the summary, in neither.
        pending = oldest_pending(session, job.conversation_id, job.client_key_id)
        before = before if pending is None else min(before, pending)
        budget = input_cap - (previous.tokens if previous else 0)
        return to_summarise(session, job.conversation_id, job.client_key_id, after, before, max(budget, 1))

    def summary_cap(self, limits: HistoryLimits) -> int:
        """The most tokens a summary may take: COMPACTION_SUMMARY_MAX_TOKENS, or a quarter of
        the history's budget when that is less (the summary must leave room for turns)."""
        return max(min(self.settings.summary_max_tokens, limits.max_tokens // 4), 16)

    def input_cap(self, model: str | None, cap: int) -> int:
        """The most tokens one summarising call reads: COMPACTION_INPUT_MAX_TOKENS, less when
        routing knows the summarising model's window (that window less the summary and prompt)."""
        window = group_window(self.llm, model)
        bound = self.settings.input_max_tokens
        return max(min(bound, window - cap - PROMPT_OVERHEAD), 1) if window else bound

    @staticmethod
    def _request(previous: Summary | None, messages: list[dict[str, Any]], model: str | None) -> list[dict[str, Any]]:
        """The summarising call's messages: the summariser's prompt, then the transcript (the
        previous summary first, so the new one keeps what it said)."""
        earlier = f"(Summary of what came before: {previous.text})\n\n" if previous else ""
        text = earlier + transcript(messages, None)
        return [{"role": "system", "content": SUMMARISER_PROMPT}, {"role": "user", "content": text}]

    def _options(self, cap: int) -> dict[str, Any]:
        """The call's parameters: the summary's cap, and its time bound (the router's deadline,
        or the client's timeout where there is no router)."""
        options: dict[str, Any] = {"max_completion_tokens": cap}
        bound = "deadline_seconds" if getattr(self.llm, "routing", None) is not None else "timeout"
        options[bound] = self.settings.timeout
        return options

    def _charge(self, session: Any, job: Job, completion: Any, model: str | None) -> int | None:
        """Charge the call to the conversation's key (the tokens were spent, summary kept or not);
        its cost in micro-dollars (None: unpriced)."""
        prompt, answer = completion.prompt_tokens or 0, completion.completion_tokens or 0
        tokens = (prompt, answer, completion.cached_tokens or 0)
        cost = reply_cost(self.settings.prices, completion.deployment, completion.model, model, tokens)
        if job.client_key_id is not None:
            held = Reservation(job.client_key_id, datetime.now(UTC).date(), 0)
            settle_reservation(session, held, (prompt, answer), cost.charged)
        return cost.micros


# Outcomes after which a conversation is not summarised again for COMPACTION_RETRY_SECONDS: the
# same exchanges would most likely fail the same way, and each try is a charged call.
RETRY_LATER = frozenset({"failed", "timeout", "empty", "cut_off", "not_shorter", "error"})
# The request log's route of a summarising call: no client route, the service's own.
SUMMARY_ROUTE = "compaction"


def _log_row(job: Job, exchange_id: str, completion: Any, model: str | None, cost: int | None, latency_ms: int):
    """The request log row of a summarising call whose summary was stored."""
    return ended_row(
        exchange_id=exchange_id,
        api_key_id=job.client_key_id,
        user_id=job.conversation_id,
        status=MessageStatus.COMPLETED,
        created_at=datetime.now(UTC),
        route=SUMMARY_ROUTE,
        model=model,
        answered_model=completion.model,
        deployment=completion.deployment,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        cost_micros=cost,
        latency_ms=latency_ms,
    )


def _summary_row(completion: Any, through: int, through_id: str, cost: int | None) -> dict[str, Any]:
    """The summary row's columns: its text, what it covers (row `through`, public id
    `through_id`), and the call's model, usage and cost."""
    return {
        "content": (completion.text or "").strip(),
        "compacts_through": through,
        "message_fields": {"compacts_through": through_id},
        "completion_id": completion.completion_id,
        "model": completion.model,
        "deployment": completion.deployment,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.total_tokens,
        "cost_micros": cost,
    }


def _refusal(completion: Any, replaced: int, cap: int) -> tuple[str, str] | None:
    """Why the summary is refused (outcome, reason), by /v1/responses/compact's rules; None: accepted."""
    try:
        _accepted(completion, [], replaced, cap)
    except ApiError as exc:
        if not (completion.text or "").strip():
            return "empty", exc.message
        return ("cut_off" if completion.finish_reason == "length" else "not_shorter"), exc.message
    return None


def _counted(outcome: str, job: Job, detail: str) -> str:
    """Count and log one outcome; the outcome."""
    COMPACTIONS.labels(outcome=outcome).inc()
    level = logging.INFO if outcome in ("made", "nothing", "busy") else logging.WARNING
    log.log(level, "compaction of conversation %s: %s (%s)", job.conversation_id, outcome, detail)
    return outcome
