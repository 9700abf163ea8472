"""A live stream's heartbeat: its pending rows are touched while it is relayed, so that the
sweeper (services/sweeper.py) takes only a stream whose process died for abandoned."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from database import unit_of_work
from services.exchanges import touch_pending

T = TypeVar("T")
log = logging.getLogger(__name__)

# A stream's rows are touched at most this often (and at least every quarter cut-off).
HEARTBEAT_MAX_SECONDS = 30.0


def heartbeat_seconds(config: Mapping[str, Any]) -> float:
    """How often a live stream touches its rows: a quarter of the cut-off, at most 30 s.

    A stream is silent at most its deployment's first-token or silence timeout (the
    router's stall detector ends it after that), so its rows are never older than
    heartbeat + that timeout, which the derived cut-off (the call's deadline + 60 s)
    exceeds for the defaults.
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
