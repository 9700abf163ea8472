"""The rate limiter's behaviour: whom a request counts against, its limits, and a storage
outage survived in memory and made visible. extensions.py holds the one instance.

The key and limit functions read `g.client_key`, which auth.authenticate sets before the
limiter runs; Flask-Limiter calls them on each request.
"""

import logging
import threading
from urllib.parse import urlsplit

import flask_limiter
from flask import Flask, current_app, g, request
from flask_limiter.util import get_remote_address

from telemetry import RATELIMIT_DEGRADED

log = logging.getLogger(__name__)


def _own_rate_limit() -> str | None:
    client_key = g.get("client_key")  # set by auth.authenticate, which runs before the limiter
    return client_key.rate_limit if client_key is not None else None


def application_limit() -> str:
    """One budget over every route: the client key's own limit, else RATELIMIT_DEFAULT."""
    return _own_rate_limit() or current_app.config["RATELIMIT_APPLICATION"]


def completion_limit() -> str:
    """The completion routes' limit: the client key's own limit, else RATELIMIT_COMPLETION."""
    return _own_rate_limit() or current_app.config["RATELIMIT_COMPLETION"]


def rate_limit_key() -> str:
    """Whom a request counts against: its client key, or its address when keys are off.

    The address is the peer's unless TRUSTED_PROXIES lets ProxyFix believe X-Forwarded-For.
    """
    client_key = g.get("client_key")
    return f"key:{client_key.id}" if client_key is not None else f"ip:{get_remote_address()}"


# Flask-Limiter's own messages for the two switches; GatewayLimiter logs its own instead.
_SWITCH_MESSAGES = frozenset(
    {"Rate limit storage unreachable - falling back to in-memory storage", "Rate limit storage recovered"}
)


class GatewayLimiter(flask_limiter.Limiter):
    """Flask-Limiter's Limiter that survives its shared storage going away, and says so.

    With RATELIMIT_IN_MEMORY_FALLBACK_ENABLED, Flask-Limiter answers a storage error by
    setting its `_storage_dead` flag and counting the same limits in this process's memory;
    while the flag is set, requests ping the storage (1, 2, 4, ... 32 seconds apart, then 1
    again) and the first ping that answers clears it. This class makes each switch of that
    flag visible: one warning per outage and one per recovery, and the
    `gateway_ratelimit_degraded` gauge; /readyz probes through `check_storage`.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._storage_down = False
        self._switch_lock = threading.Lock()
        self._storage_location = "memory"
        super().__init__(*args, **kwargs)
        self.logger.addFilter(lambda record: record.getMessage() not in _SWITCH_MESSAGES)

    @property
    def _storage_dead(self) -> bool:
        # Flask-Limiter reads and writes this flag; a property sees every switch, whichever
        # of its code paths (the limit check, the headers, the recovery ping) makes it.
        return self._storage_down

    @_storage_dead.setter
    def _storage_dead(self, dead: bool) -> None:
        with self._switch_lock:
            switched = dead != self._storage_down
            self._storage_down = dead
        if not switched:
            return
        RATELIMIT_DEGRADED.set(1 if dead else 0)
        if dead:
            log.warning(
                "Rate limit storage %s is unreachable: limits are counted per process until it answers again",
                self._storage_location,
            )
        else:
            log.warning("Rate limit storage %s answers again: limits are shared again", self._storage_location)

    def init_app(self, app: Flask) -> None:
        """Bind to `app` and its storage, which starts out presumed healthy."""
        with self._switch_lock:
            self._storage_down = False
        RATELIMIT_DEGRADED.set(0)
        uri = urlsplit(app.config.get("RATELIMIT_STORAGE_URI") or "memory://")
        # Scheme, host and port only: the URI's password must never reach a log line.
        self._storage_location = f"{uri.scheme}://{uri.hostname or ''}{f':{uri.port}' if uri.port else ''}"
        super().init_app(app)

    def check_storage(self) -> bool:
        """Ping the storage now; an unanswered ping switches to per-process counting, an answer back."""
        healthy = bool(self.storage.check())  # limits' check() answers False on any error
        if self._in_memory_fallback_enabled:
            self._storage_dead = not healthy
        return healthy

    @property
    def limiter(self):
        """The rate limiting strategy in use, on the storage or, while it is down, in memory."""
        strategy = super().limiter
        if strategy is self._fallback_limiter:
            return strategy
        return _FinishInMemoryAfterSwitch(self, strategy)


class _FinishInMemoryAfterSwitch:
    """The shared-storage strategy, for a request that may straddle the switch to memory.

    A request already talking to the storage when another thread finds it dead and switches
    gets its own error after the switch; Flask-Limiter then raises it (a 500), as it only
    falls back on the first failure. Here that request's call is done in memory instead.
    """

    def __init__(self, owner: GatewayLimiter, strategy) -> None:
        self._owner = owner
        self._strategy = strategy

    def __getattr__(self, name: str):
        method = getattr(self._strategy, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except Exception:
                fallback = self._owner._fallback_limiter
                if not (self._owner._storage_down and fallback is not None):
                    raise  # Flask-Limiter switches (once) on this one
                return getattr(fallback, name)(*args, **kwargs)

        return call


def is_preflight() -> bool:
    """True for a CORS preflight: it carries no key and asks nothing of the API, so it never spends a budget."""
    return request.method == "OPTIONS"
