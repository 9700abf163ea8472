"""One routed call: the router's retry loop, the only one (the SDK's retries are off).

A RoutedCall tries deployments in the order its group's strategy gives, then its
fallback groups', each attempt bounded by the deployment's timeouts and the call's
deadline, until one answers. What each failure means:

- a 5xx, a reset, a reply we cannot use, a 429: the same deployment again after a pause
  (the upstream's Retry-After, else a doubling backoff with jitter), at most
  `retries_per_deployment` times, then the next deployment; a 429 with a Retry-After
  goes to the next deployment at once when there is one;
- a timeout (silence): never the same deployment again in this call;
- a 401/403: the deployment's breaker opens for the auth cool-down; the next one;
- `context_length_exceeded`: never the same model again; the context-window fallbacks;
- any other 4xx (a content policy refusal among them): the client's answer, at once.

Every attempt is kept as an Attempt. When nothing answers, the failure the call ended on
(the last deployment's, a 401 aside) is raised, with the attempts, and `should_retry` False unless the
upstream said when to come back (its Retry-After). A breaker's cool-down is not offered
as one: the call tried the deployment anyway, and a client told to wait would only
multiply the attempts the router has already made.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from services.llm.errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.llm.types import Attempt

if TYPE_CHECKING:
    from services.llm.targets import Pool, Target


class RoutedCall:
    """The state of one client call across its attempts (see the module's docstring)."""

    def __init__(self, pool: Pool, group: str, model: str | None, messages: list[dict[str, Any]], params: dict):
        self.pool = pool
        self.settings = pool.routing.router
        self.deadline = time.monotonic() + self.settings.deadline_seconds
        self.requested = model
        self.messages = messages
        self.params = params
        self.needs = pool.needs(messages, params)
        self.groups = pool.chain(group)
        if pool.has_context_fallback(group) and not pool.fits_somewhere(self.groups, self.needs):
            self.groups = pool.context_chain(group)  # no window of the group holds the prompt
        self.attempts: list[Attempt] = []
        self.tries_of: Counter[str] = Counter()
        self.spent: set[str] = set()  # deployments not to be tried again in this call
        self.errors: list[UpstreamError] = []
        self.rate_limited = 0  # 429s without a Retry-After so far
        self._retry_same: Target | None = None

    def left(self) -> float:
        """Seconds left before the call's deadline."""
        return self.deadline - time.monotonic()

    def tries(self, *, continuing: bool = False) -> Iterator[tuple[Target, float]]:
        """The deployments to try, one at a time, with the seconds left for each: the
        caller makes the attempt and reports how it went (`attempt_failed`, `succeeded`),
        which decides the next one. Raises the final UpstreamError when none is left
        (see `final_error`); `continuing` offers only deployments that continue a stream."""
        while len(self.attempts) < self.settings.max_attempts and self.left() > 0:
            target = self._retry_same or self._pick(continuing)
            self._retry_same = None
            if target is None:
                break
            self.tries_of[target.name] += 1
            yield target, self.left()
        raise self.final_error()

    def attempt_failed(self, target: Target, exc: UpstreamError, started: float, *, continuing: bool = False) -> None:
        """Keep the failed attempt, and decide what comes next (may raise the final error)."""
        self.failed(target, exc, started)
        self.after_failure(target, exc, continuing=continuing)

    def failed(self, target: Target, exc: UpstreamError, started: float, outcome: str | None = None) -> None:
        """Keep the failed attempt and tell the breaker (a rejection is the request's fault)."""
        self.attempts.append(self._attempt(target, started, outcome or type(exc).__name__, exc))
        self.errors.append(exc)
        breakers = self.pool.breakers
        if isinstance(exc, UpstreamAuthFailed):
            breakers.open_for(target.name, self.settings.breaker.auth_cooldown_seconds)
        elif isinstance(exc, UpstreamRateLimited) and exc.retry_after:
            breakers.open_for(target.name, exc.retry_after)
        elif not isinstance(exc, UpstreamRejected):
            if breakers.failed(target.name):
                self.spent.add(target.name)  # its breaker opened: nothing more in this call either
        else:
            return
        self.pool.dirty.add(target.name)

    def ended(self, target: Target, started: float, outcome: str) -> None:
        """Keep an attempt that ended neither answered nor failed (the client left)."""
        self.attempts.append(self._attempt(target, started, outcome))

    def succeeded(self, target: Target, started: float) -> None:
        """Keep the answering attempt; a breaker that had failures closes."""
        self.attempts.append(self._attempt(target, started, "ok"))
        if target.name in self.pool.dirty:
            self.pool.dirty.discard(target.name)
            self.pool.breakers.succeeded(target.name)

    def _attempt(self, target: Target, started: float, outcome: str, exc: UpstreamError | None = None) -> Attempt:
        return Attempt(
            deployment=target.name,
            model=target.upstream_model(self.requested),
            outcome=outcome,
            latency_ms=round((time.monotonic() - started) * 1000),
            status_code=exc.upstream_status if exc is not None else 200,
            error=exc.message[:500] if exc is not None else None,
        )

    def after_failure(self, target: Target, exc: UpstreamError, *, continuing: bool = False) -> None:
        """What the failure means for the next attempt (see the module's docstring). A
        deployment that refuses a continuation is passed over: its 400 is not the answer."""
        if isinstance(exc, UpstreamRejected):
            if continuing:
                self.spent.add(target.name)
                return
            if exc.code == "context_length_exceeded" and self.pool.has_context_fallback(self.groups[0]):
                self.groups = self.pool.context_chain(self.groups[0])
                self.spent.add(target.name)
                return
            raise self.final_error(exc)
        if isinstance(exc, (UpstreamTimeout, UpstreamAuthFailed)):
            self.spent.add(target.name)
            return
        if target.name in self.spent and self._has_other(target):
            return  # its breaker opened with this failure
        self.spent.discard(target.name)
        if exc.retry_after:  # a 429's or a 503's: the upstream said when
            self._after_retry_after(target, exc.retry_after)
            return
        if isinstance(exc, UpstreamRateLimited):
            # No Retry-After: the whole call backs off, whichever deployment comes next, so
            # limited deployments are not hammered in turn (at most 4 attempts in 3 s).
            self.rate_limited += 1
            wait = self._backoff(self.rate_limited)
        else:
            wait = self._backoff(self.tries_of[target.name])
        if wait >= self.left():
            self.spent.add(target.name)
            return
        again = self.tries_of[target.name] <= self.settings.retries_per_deployment
        if again or (isinstance(exc, UpstreamRateLimited) and self._has_other(target)):
            time.sleep(wait)
        if again:
            self._retry_same = target
        else:
            self.spent.add(target.name)

    def _after_retry_after(self, target: Target, seconds: int) -> None:
        """A 429 or 503 that says when: another deployment at once, else wait that long and
        retry (when it is short enough and the retries and the deadline allow)."""
        short = seconds <= self.settings.max_retry_after_seconds and seconds < self.left()
        again = self.tries_of[target.name] <= self.settings.retries_per_deployment
        if self._has_other(target) or not (short and again):
            self.spent.add(target.name)
            return
        time.sleep(seconds)
        self._retry_same = target

    def _backoff(self, count: int) -> float:
        """The pause after the count-th failure: doubling from backoff_seconds, jittered."""
        base = self.settings.backoff_seconds * 2 ** max(0, count - 1)
        return min(self.settings.max_backoff_seconds, base) * random.uniform(0.5, 1.0)

    def _has_other(self, target: Target) -> bool:
        return any(t.name != target.name for t in self._candidates(False))

    def _candidates(self, continuing: bool) -> Iterator[Target]:
        """The deployments still worth trying, in order: each group's, by its strategy."""
        for group in self.groups:
            for target in self.pool.ordered(group):
                if target.name in self.spent or not target.serves(self.needs):
                    continue
                if continuing and not target.spec.continues:
                    continue
                yield target

    def _pick(self, continuing: bool) -> Target | None:
        """The first candidate whose breaker lets it through; if every one is open, the one
        that closes first (a call is never refused for breakers alone)."""
        candidates = list(self._candidates(continuing))
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        states = self.pool.breakers.states(t.name for t in candidates)
        now = time.time()
        for target in candidates:
            failures, open_until = states.get(target.name, (0, 0.0))
            state = self.pool.breakers.state_of(failures, open_until, now)
            if state != "closed":
                self.pool.dirty.add(target.name)
            longest = target.spec.timeouts.connect + target.spec.timeouts.first_token
            if state == "closed" or (state == "half_open" and self.pool.breakers.take_probe(target.name, longest)):
                return target
        return min(candidates, key=lambda t: states.get(t.name, (0, 0.0))[1])

    def final_error(self, error: UpstreamError | None = None) -> UpstreamError:
        """The error the client gets: `error`, else the original failure, with the attempts;
        told not to retry unless waiting would help."""
        if error is None:
            error = self._original() or self._nothing_to_try()
        error.attempts = tuple(self.attempts)
        error.should_retry = error.retry_after is not None
        return error

    def _original(self) -> UpstreamError | None:
        """The failure the client is told of: the last deployment's (where the call ended:
        with every deployment rate limited but a dead first one, a 429, not a 502), but not
        a 401, which hides the real trouble, nor a too-long prompt a context-window fallback
        then failed on its own."""
        telling = [e for e in self.errors if not isinstance(e, UpstreamAuthFailed)]
        later = [e for e in telling if e.code != "context_length_exceeded"]
        return (later or telling or self.errors or [None])[-1]

    def _nothing_to_try(self) -> UpstreamError:
        if self.left() <= 0:
            return UpstreamTimeout("The language model did not answer in time")
        if self.pool.at_capacity(self.groups, self.needs):
            busy = UpstreamUnavailable(
                "Every deployment of this model has as many calls in flight as it takes; retry shortly",
                retry_after=1,
            )
            busy.status_code = 503
            return busy
        if not self.pool.fits_somewhere(self.groups, self.needs):
            return UpstreamRejected(
                "The prompt and max_tokens exceed the context window of every deployment of this model",
                code="context_length_exceeded",
                param="messages",
            )
        return UpstreamRejected(
            f"No deployment of this model supports what the request needs ({', '.join(sorted(self.needs.features))})",
            code="unsupported_feature",
        )
