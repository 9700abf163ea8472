"""The upstreams page's test button: one small chat completion sent to one deployment.

The probe goes to that deployment alone (not through the router: no retries, no failover)
with its own timeouts, asks for a few tokens, and is no exchange: nothing is stored in
`messages` or `upstream_attempts`, no client key is charged, and the breaker is left as
it is (the probe is the operator's look, not traffic). The console's audit log keeps who
sent it and how it went. The caller holds no database connection while it runs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from services.llm.errors import UpstreamError

PROBE_MESSAGES = [{"role": "user", "content": "Reply with the single word: ok"}]
PROBE_MAX_TOKENS = 16


@dataclass(frozen=True)
class ProbeOutcome:
    """How one test request to a deployment went."""

    deployment: str
    ok: bool
    latency_ms: int
    outcome: str  # "ok", or the UpstreamError kind ("UpstreamTimeout", ...)
    status_code: int | None = None
    model: str | None = None
    detail: str = ""  # the reply's first words, or the error's message (never a credential)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe(llm: Any, name: str) -> ProbeOutcome | None:
    """Send the test request to the deployment called `name`; None when there is none."""
    if getattr(llm, "offline", False):
        if name != "offline":
            return None
        return _timed(name, lambda: llm.complete(PROBE_MESSAGES, max_completion_tokens=PROBE_MAX_TOKENS))
    target = next((t for t in llm.pool.deployments() if t.name == name), None)
    if target is None:
        return None
    timeout = target.timeout(target.spec.timeouts.total, stream=False)  # its own, whole
    model = target.upstream_model(None)
    return _timed(
        name,
        lambda: target.chat.complete(
            PROBE_MESSAGES, model=model, deployment=name, timeout=timeout, max_completion_tokens=PROBE_MAX_TOKENS
        ),
    )


def _timed(name: str, call) -> ProbeOutcome:
    started = time.monotonic()
    try:
        completion = call()
    except UpstreamError as exc:
        latency = round((time.monotonic() - started) * 1000)
        return ProbeOutcome(name, False, latency, type(exc).__name__, exc.upstream_status, detail=exc.message[:300])
    latency = round((time.monotonic() - started) * 1000)
    reply = (completion.text or completion.finish_reason or "")[:100]
    return ProbeOutcome(name, True, latency, "ok", 200, completion.model, reply)
