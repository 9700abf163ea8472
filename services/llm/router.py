"""The router: the service's one LLM client when an upstream is configured.

It maps the model a client names to a group (services/llm/routing.py), orders the
group's deployments by its strategy, and makes the call through a RoutedCall (call.py:
the retry loop, breakers, deadlines); a stream is relayed, and continued elsewhere when
its deployment fails mid-answer, by a RoutedStream (continuation.py). To the pipeline it
looks like any client: `complete`, `stream`, `default_model`, `describe`, `close`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from services.llm.breaker import Breakers
from services.llm.call import RoutedCall
from services.llm.continuation import RoutedStream
from services.llm.errors import UpstreamError, UpstreamRejected
from services.llm.metrics import BREAKER_OPEN
from services.llm.openai_client import OpenAIChat
from services.llm.routing import WILDCARD, RoutingFile
from services.llm.targets import Pool
from services.llm.types import ChatStream, Completion


class Router:
    """Routes each call to its group's deployments (see the module's docstring)."""

    offline = False

    def __init__(
        self,
        routing: RoutingFile,
        clients: Mapping[str, OpenAIChat],
        breakers: Breakers,
        default_model: str,
    ) -> None:
        self.routing = routing
        self.pool = Pool(routing, clients, breakers)
        self.default_model = default_model
        self.wildcard = WILDCARD in routing.groups
        self._names = {alias: name for name, group in routing.groups.items() for alias in (name, *group.aliases)}

    # -- what it serves ------------------------------------------------------------------
    def group_of(self, model: str | None) -> str | None:
        """The group serving `model` (None: the default model), or None for no group."""
        if self.wildcard:
            return WILDCARD
        return self._names.get(model or self.default_model)

    def serves(self, model: str) -> bool:
        return self.group_of(model) is not None

    def model_names(self) -> list[str] | None:
        """The model names clients may ask for: every group and alias; None for any name
        (the one-upstream configuration)."""
        return None if self.wildcard else list(self._names)

    def describe(self) -> str:
        """The upstreams in a few words, for the start-up log line."""
        targets = self.pool.deployments()
        if len(targets) == 1:
            return targets[0].chat.describe()
        return f"{len(targets)} deployments: " + ", ".join(f"{t.name} ({t.chat.describe()})" for t in targets)

    def close(self) -> None:
        for target in self.pool.deployments():
            target.chat.close()

    def breaker_states(self) -> dict[str, str]:
        """Each deployment's breaker: "closed", "open" or "half_open"."""
        names = [t.name for t in self.pool.deployments()]
        breakers = self.pool.breakers
        stored = breakers.states(names)
        states = {n: breakers.state_of(*stored.get(n, (0, 0.0))) for n in names}
        for name, state in states.items():
            BREAKER_OPEN.labels(deployment=name).set(0 if state == "closed" else 1)
        return states

    # -- calls ---------------------------------------------------------------------------
    def _call(self, model: str | None, messages: list[dict[str, Any]], params: dict[str, Any]) -> RoutedCall:
        group = self.group_of(model)
        if group is None:
            error = UpstreamRejected(f"The model {model!r} does not exist", param="model", code="model_not_found")
            error.status_code = 404
            raise error
        return RoutedCall(self.pool, group, model or self.default_model, messages, params)

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        deadline_seconds: float | None = None,
        **params: Any,
    ) -> Completion:
        """The whole reply from the first deployment that gives one (see RoutedCall), within
        `deadline_seconds` when that is sooner than the router's deadline (a background call's
        own bound: services/compactor.py)."""
        call = self._call(model, messages, params)
        if deadline_seconds is not None:
            call.deadline = min(call.deadline, time.monotonic() + deadline_seconds)
        pool = self.pool
        for target, left in call.tries():
            started = time.monotonic()
            pool.enter(target)
            try:
                completion = target.chat.complete(
                    messages,
                    model=target.upstream_model(model),
                    deployment=target.name,
                    attempts=call.attempts,  # the answering attempt joins it below
                    timeout=target.timeout(left, stream=False),
                    **params,
                )
            except UpstreamError as exc:
                call.attempt_failed(target, exc, started)
                continue
            finally:
                pool.leave(target)
            call.succeeded(target, started)
            return completion
        raise AssertionError("unreachable: tries() raises when it runs out")

    def stream(self, messages: list[dict[str, Any]], *, model: str | None = None, **params: Any) -> ChatStream:
        """A stream from the first deployment that opens one, continued elsewhere if it
        fails mid-answer (see RoutedStream). Raises when none opens."""
        routed = RoutedStream(self._call(model, messages, params))
        chunks = routed.open()
        routed.chat = ChatStream(chunks, model or self.default_model, close=routed.close)
        routed.chat.attempts = routed.call.attempts  # one list: each attempt seen as it is kept
        routed.chat.deployment = routed.target.name
        return routed.chat
