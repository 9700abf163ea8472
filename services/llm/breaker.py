"""Circuit breakers: one per deployment, shared by every process through Redis when set.

A deployment's breaker opens after `failures` consecutive failures (a 5xx, a reset, a
timeout), or at once for an upstream's 429 (for its Retry-After) and a 401/403 (for the
auth cool-down). While open, the router sends the deployment nothing when it has
somewhere else to go. When the cool-down ends it is half open: one request (the probe,
whichever process takes the token first) tries it; a success closes it, a failure opens
it for another cool-down.

State lives in the Redis that the rate limits use (RATELIMIT_STORAGE_URI), so every
process and host sees one breaker per deployment. With memory:// it is each process's
own, as the limits are. When Redis does not answer, each process keeps its own state
until it does: `degraded` says so (in /readyz and the gauge), logged once per outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.llm.metrics import BREAKER_OPEN, BREAKERS_DEGRADED

log = logging.getLogger(__name__)

# After Redis failed, each process keeps to its memory this long before asking it again.
REDIS_RETRY_SECONDS = 5.0


@dataclass
class _State:
    failures: int = 0
    open_until: float = 0.0  # time.time() the breaker half-opens; 0: never opened
    probe_until: float = 0.0  # a probe is in flight until then


class MemoryBreakers:
    """Breaker state in this process's memory."""

    def __init__(self) -> None:
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def states(self, names: Iterable[str]) -> dict[str, tuple[int, float]]:
        with self._lock:
            return {n: (s.failures, s.open_until) for n in names if (s := self._states.get(n))}

    def failed(self, name: str, threshold: int, cooldown: float) -> int:
        with self._lock:
            state = self._states.setdefault(name, _State())
            state.failures += 1
            state.probe_until = 0.0
            if state.failures >= threshold:
                state.open_until = time.time() + cooldown
            return state.failures

    def open_for(self, name: str, seconds: float, threshold: int) -> None:
        with self._lock:
            state = self._states.setdefault(name, _State())
            state.failures = max(state.failures, threshold)
            state.open_until = max(state.open_until, time.time() + seconds)
            state.probe_until = 0.0

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._states.pop(name, None)

    def take_probe(self, name: str, seconds: float) -> bool:
        with self._lock:
            state = self._states.setdefault(name, _State())
            now = time.time()
            if state.probe_until > now:
                return False
            state.probe_until = now + seconds
            return True


class RedisBreakers:
    """Breaker state in Redis: per deployment a failure counter, an `open until` stamp and
    a probe token, each with an expiry so a forgotten breaker closes by itself."""

    _FAILED = """
local failures = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[3])
if failures >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
end
return failures
"""

    def __init__(self, url: str, timeout: float | None) -> None:
        import redis  # only where Redis is configured

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._failed = self._redis.register_script(self._FAILED)
        self._open_for = self._redis.register_script(self._OPEN_FOR)

    @staticmethod
    def _keys(name: str) -> list[str]:
        return [f"gateway:breaker:{name}:failures", f"gateway:breaker:{name}:open", f"gateway:breaker:{name}:probe"]

    def states(self, names: Iterable[str]) -> dict[str, tuple[int, float]]:
        names = list(names)
        keys = [k for n in names for k in self._keys(n)[:2]]
        values = self._redis.mget(keys) if keys else []
        found = {}
        for i, name in enumerate(names):
            failures, open_until = values[2 * i], values[2 * i + 1]
            if failures is not None or open_until is not None:
                found[name] = (int(failures or 0), float(open_until or 0.0))
        return found

    def failed(self, name: str, threshold: int, cooldown: float) -> int:
        keep = int(max(60.0, cooldown * 4))
        return self._failed(keys=self._keys(name), args=[threshold, time.time() + cooldown, keep])

    _OPEN_FOR = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('DEL', KEYS[3])
local until = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) > until then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
end
"""

    def open_for(self, name: str, seconds: float, threshold: int) -> None:
        """Open until now + `seconds`, or later if it is open longer already (a 401's
        cool-down is not cut short by a 429's Retry-After)."""
        keep = int(max(60.0, seconds * 4))
        self._open_for(keys=self._keys(name), args=[threshold, time.time() + seconds, keep])

    def succeeded(self, name: str) -> None:
        self._redis.delete(*self._keys(name))

    def take_probe(self, name: str, seconds: float) -> bool:
        return bool(self._redis.set(self._keys(name)[2], "1", nx=True, px=max(1, int(seconds * 1000))))


class Breakers:
    """Every deployment's breaker, in Redis (falling back to memory while it is down) or memory."""

    def __init__(self, threshold: int, cooldown: float, shared: RedisBreakers | None = None) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._shared = shared
        self._memory = MemoryBreakers()
        self._shared_down_until = 0.0
        self.degraded = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any], threshold: int, cooldown: float) -> Breakers:
        """Shared through the rate limits' Redis when RATELIMIT_STORAGE_URI names one."""
        uri = config.get("RATELIMIT_STORAGE_URI") or "memory://"
        shared = None
        if uri.startswith(("redis://", "rediss://", "redis+unix://")):
            shared = RedisBreakers(uri.replace("redis+unix://", "unix://"), config.get("RATELIMIT_STORAGE_TIMEOUT"))
        return cls(threshold, cooldown, shared)

    def _call(self, method: str, *args: Any) -> Any:
        """`method` on the shared store while it answers, else on this process's memory."""
        if self._shared is not None and time.monotonic() >= self._shared_down_until:
            try:
                result = getattr(self._shared, method)(*args)
            except Exception as exc:  # redis.RedisError, OSError: Redis is down
                self._shared_down_until = time.monotonic() + REDIS_RETRY_SECONDS
                if not self.degraded:
                    log.warning(
                        "circuit breakers: Redis unreachable (%s); each process keeps its own", type(exc).__name__
                    )
                self.degraded = True
                BREAKERS_DEGRADED.set(1)
            else:
                if self.degraded:
                    log.warning("circuit breakers: Redis answers again; breakers shared again")
                    BREAKERS_DEGRADED.set(0)
                self.degraded = False
                return result
        return getattr(self._memory, method)(*args)

    def states(self, names: Iterable[str]) -> dict[str, tuple[int, float]]:
        """(consecutive failures, open-until time) of the named breakers not closed and clean."""
        return self._call("states", list(names))

    def state_of(self, failures: int, open_until: float, now: float | None = None) -> str:
        """ "closed", "open" or "half_open" for a breaker's stored state."""
        if failures < self.threshold:
            return "closed"
        return "open" if (now or time.time()) < open_until else "half_open"

    def failed(self, name: str) -> bool:
        """One more consecutive failure; the breaker opens at the threshold (True then)."""
        failures = int(self._call("failed", name, self.threshold, self.cooldown) or 0)
        if failures >= self.threshold:
            BREAKER_OPEN.labels(deployment=name).set(1)
            log.warning("circuit breaker of deployment %s open for %.0f s (%d failures)", name, self.cooldown, failures)
        return failures >= self.threshold

    def open_for(self, name: str, seconds: float) -> None:
        """Open the breaker at once for `seconds` (a 429's Retry-After, a 401's cool-down)."""
        self._call("open_for", name, seconds, self.threshold)
        BREAKER_OPEN.labels(deployment=name).set(1)
        log.warning("circuit breaker of deployment %s open for %.0f s", name, seconds)

    def succeeded(self, name: str) -> None:
        """The deployment answered: its breaker closes (if it was not)."""
        self._call("succeeded", name)
        BREAKER_OPEN.labels(deployment=name).set(0)
        log.info("circuit breaker of deployment %s closed", name)

    def take_probe(self, name: str, seconds: float) -> bool:
        """True for the one caller that may try a half-open deployment now; the token lasts
        `seconds` (the probe's longest attempt), or until the probe's outcome is recorded."""
        return bool(self._call("take_probe", name, max(seconds, self.cooldown)))
