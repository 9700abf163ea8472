"""The deployments a call chooses from: each with its client, settings and calls in
flight (Target), in the order a group's strategy tries them, with the fallback chains,
the breakers, and what a request needs of a deployment (Pool)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2

from services.llm.breaker import Breakers
from services.llm.metrics import MALFORMED_CHUNKS
from services.llm.openai_client import OpenAIChat
from services.llm.routing import WILDCARD, Deployment, RoutingFile
from services.tokens import completion_cap, estimate_message_tokens


@dataclass(frozen=True)
class Needs:
    """What a request asks of a deployment: features, and room for its prompt and answer."""

    features: frozenset[str]
    prompt_tokens: int
    max_tokens: int


class Target:
    """A deployment as the router calls it: its settings, its client, its calls in flight."""

    def __init__(self, spec: Deployment, chat: OpenAIChat, wildcard: bool) -> None:
        self.spec = spec
        self.name = spec.name
        self.chat = chat
        self.wildcard = wildcard
        self.in_flight = 0
        t = spec.timeouts
        self._full = {
            stream: httpx2.Timeout(
                t.first_token if stream else min(t.first_token, t.total), connect=t.connect, pool=t.connect
            )
            for stream in (False, True)
        }

    def upstream_model(self, requested: str | None) -> str:
        """The model name sent upstream: the deployment's (or, for the one-upstream
        configuration, whatever the client asked for)."""
        return requested if self.wildcard and requested else self.spec.model

    def serves(self, needs: Needs) -> bool:
        """True when the deployment has the features, the room and the capacity for the call."""
        return self.fits(needs) and self.has_room()

    def fits(self, needs: Needs) -> bool:
        """True when the deployment has the features and the room (window, output) for the call."""
        caps = self.spec.capabilities
        if ("tools" in needs.features and not caps.tools) or ("images" in needs.features and not caps.images):
            return False
        if "json_schema" in needs.features and not caps.json_schema:
            return False
        window, cap = self.spec.context_window, self.spec.max_output_tokens
        if window is not None and needs.prompt_tokens + needs.max_tokens > window:
            return False
        return cap is None or needs.max_tokens <= cap  # else it cannot write what the request allows

    def has_room(self) -> bool:
        """True while the deployment has fewer calls in flight than its max_in_flight."""
        limit = self.spec.max_in_flight
        return limit is None or self.in_flight < limit

    def timeout(self, left: float, *, stream: bool) -> httpx2.Timeout:
        """The HTTP timeouts of one attempt with `left` seconds of the call's deadline (the
        deployment's own, made once, while the deadline is further off than they reach)."""
        t = self.spec.timeouts
        wait = t.first_token if stream else min(t.first_token, t.total)
        if left >= max(wait, t.connect):
            return self._full[stream]
        return httpx2.Timeout(min(wait, left), connect=min(t.connect, left), pool=min(t.connect, left))

    def count_malformed(self) -> None:
        """One stream event of this deployment skipped for not being JSON."""
        MALFORMED_CHUNKS.labels(deployment=self.name).inc()


class Pool:
    """Every deployment of the routing table, their breakers and their calls in flight:
    what a RoutedCall chooses from."""

    def __init__(self, routing: RoutingFile, clients: Mapping[str, OpenAIChat], breakers: Breakers) -> None:
        self.routing = routing
        self.breakers = breakers
        self.targets: dict[str, list[Target]] = {
            name: [Target(d, clients[d.name], name == WILDCARD) for d in group.deployments]
            for name, group in routing.groups.items()
        }
        self._lock = threading.Lock()
        self.windows = any(t.spec.context_window for t in self.deployments())
        # Deployments whose breaker this process saw or made dirty: a success resets them.
        self.dirty: set[str] = set()

    def deployments(self) -> list[Target]:
        return [t for targets in self.targets.values() for t in targets]

    def chain(self, group: str) -> list[str]:
        """`group`, then its fallback groups (theirs too), each once."""
        ordered: list[str] = []
        pending = [group]
        while pending:
            name = pending.pop(0)
            if name not in ordered:
                ordered.append(name)
                pending.extend(self.routing.groups[name].fallbacks)
        return ordered

    def has_context_fallback(self, group: str) -> bool:
        return bool(self.routing.groups[group].context_window_fallbacks)

    def context_chain(self, group: str) -> list[str]:
        """The context-window fallbacks of `group`, each with its own fallbacks."""
        ordered: list[str] = []
        for fallback in self.routing.groups[group].context_window_fallbacks:
            ordered.extend(n for n in self.chain(fallback) if n not in ordered)
        return ordered

    def ordered(self, group: str) -> list[Target]:
        """The group's deployments in the order its strategy tries them."""
        targets = self.targets[group]
        if len(targets) == 1:
            return targets
        strategy = self.routing.groups[group].strategy
        if strategy == "weighted":  # a weighted random order (Efraimidis-Spirakis keys)
            return sorted(targets, key=lambda t: random.random() ** (1.0 / t.spec.weight), reverse=True)
        if strategy == "least_busy":
            return sorted(targets, key=lambda t: (t.in_flight, random.random()))
        return sorted(targets, key=lambda t: (t.spec.priority, t.in_flight))

    def enter(self, target: Target) -> None:
        """Count a call to `target` as in flight (until `leave`)."""
        with self._lock:
            target.in_flight += 1

    def leave(self, target: Target) -> None:
        with self._lock:
            target.in_flight -= 1

    def take(self, target: Target) -> Callable[[], None]:
        """Count a call to `target` as in flight until the returned function is called
        (once; later calls do nothing): a stream counts for as long as it is relayed."""
        with self._lock:
            target.in_flight += 1
        released = []

        def release() -> None:
            with self._lock:
                if not released:
                    released.append(True)
                    target.in_flight -= 1

        return release

    def needs(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> Needs:
        """What the call asks of a deployment. The prompt's tokens are estimated only when
        some deployment has a context window to hold them to (else 0)."""
        features = set()
        if params.get("tools") or params.get("functions"):
            features.add("tools")
        if (params.get("response_format") or {}).get("type") == "json_schema":
            features.add("json_schema")
        for message in messages:
            content = message.get("content")
            if isinstance(content, list) and any(
                isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in content
            ):
                features.add("images")
                break
        prompt = sum(estimate_message_tokens(m) for m in messages) if self.windows else 0
        return Needs(frozenset(features), prompt, completion_cap(params, 0))

    def at_capacity(self, groups: list[str], needs: Needs) -> bool:
        """True when a deployment of `groups` would serve the call but for its max_in_flight."""
        return any(t.fits(needs) and not t.has_room() for g in groups for t in self.targets[g])

    def fits_somewhere(self, groups: list[str], needs: Needs) -> bool:
        """True when some deployment of `groups` has the room for the call (capacity aside)."""
        return any(
            t.spec.context_window is None or needs.prompt_tokens + needs.max_tokens <= t.spec.context_window
            for g in groups
            for t in self.targets[g]
        )
