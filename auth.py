"""Client authentication: with REQUIRE_API_KEY, every API route needs `Authorization: Bearer <key>`.

Health, readiness, metrics and the API documentation stay open (`public`), and so do
CORS preflights, which browsers send without credentials; METRICS_TOKEN closes /metrics
to all but the bearer of that token (require_metrics_token). The key found is `g.client_key`:
rate limits are counted per key, conversations belong to it, its budget is charged.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from flask import Blueprint, Flask, current_app, g, request
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse

from errors import ApiError
from extensions import limiter
from services.client_keys import ClientKey, KnownKeys, find_active_key

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="llm-gateway"'}


def public(view: Callable[..., Any]) -> Callable[..., Any]:
    """Open a view to anyone: no key needed, no rate limit spent (health, metrics, docs).

    Put it below the route decorator, so it marks the function the route wraps.
    """
    view.public = True
    return limiter.exempt(view)


def public_blueprint(blueprint: Blueprint) -> None:
    """Open every view of `blueprint` as `public` does one (the Swagger UI and its assets)."""
    blueprint.public = True
    limiter.exempt(blueprint)


def current_client_key() -> ClientKey | None:
    """The key this request was made with; None when keys are off (or for a public route)."""
    return g.get("client_key")


def current_client_key_id() -> int | None:
    """Whose conversations this request may see: its key's id, or None (keys off)."""
    client_key = current_client_key()
    return client_key.id if client_key else None


def _is_public() -> bool:
    if request.method == "OPTIONS" or request.routing_exception is not None:
        return True  # a preflight, or a 404/405 that no key would change
    view = current_app.view_functions.get(request.endpoint or "")
    blueprint = current_app.blueprints.get(request.blueprint or "")
    return getattr(view, "public", False) or getattr(blueprint, "public", False)


def presented_key() -> str | None:
    """The key this request presents (`Authorization: Bearer <key>`), or None."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


@lru_cache(maxsize=8)
def _failure_limit(text: str) -> RateLimitItem:
    return parse(text)


def _failure_limit_item() -> RateLimitItem | None:
    """The AUTH_FAILURE_LIMIT failures count against, or None when nothing is counted
    (rate limiting off). Failures are counted in the rate limit storage (Redis shared across
    processes and hosts, or memory), per client address."""
    return _failure_limit(current_app.config["AUTH_FAILURE_LIMIT"]) if limiter.enabled else None


def _too_many_failures(item: RateLimitItem) -> ApiError:
    reset_at, _ = limiter.limiter.get_window_stats(item, "auth-failures", get_remote_address())
    return ApiError(
        429,
        "Too many failed API key attempts from this address; retry later",
        headers={"Retry-After": str(max(1, math.ceil(reset_at - time.time())))},
        code="too_many_failed_attempts",
    )


def known_keys() -> KnownKeys:
    """This process's set of live keys (services/client_keys.KnownKeys) for the app."""
    return current_app.extensions["known_keys"]


def client_key_for(presented: str) -> ClientKey:
    """The live key `presented` is; 401 when it is none, 429 for an address over
    AUTH_FAILURE_LIMIT unless it is a key this process knows to be live.

    Over the limit, a key the set of live keys lacks is answered 429 with no database
    lookup (a guess costs nothing but a set membership test); a key the set holds is looked
    up as always (revocation is checked there), so a valid key behind a busy NAT or proxy
    is still served while its neighbour's guesses are refused.
    """
    known, failures = known_keys(), _failure_limit_item()
    if failures is not None:
        known.refresh_if_stale()  # served requests keep it fresh, so that guesses need not
    over = failures is not None and not limiter.limiter.test(failures, "auth-failures", get_remote_address())
    if over and not known.may_be_live(presented):
        raise _too_many_failures(failures)
    client_key = find_active_key(presented, known)
    if client_key is None:
        if failures is not None and not over:
            limiter.limiter.hit(failures, "auth-failures", get_remote_address())
        raise ApiError(401, "Invalid or revoked API key", headers=_CHALLENGE, code="invalid_api_key")
    return client_key


def require_metrics_token() -> None:
    """With METRICS_TOKEN set, /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`
    (compared in constant time): 401 otherwise, and wrong tokens count against
    AUTH_FAILURE_LIMIT as wrong keys do. Without it, /metrics is open."""
    expected = current_app.config.get("METRICS_TOKEN")
    if not expected:
        return
    presented = presented_key() or ""
    if hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8")):
        return
    failures = _failure_limit_item()
    if failures is not None and presented:
        if not limiter.limiter.test(failures, "auth-failures", get_remote_address()):
            raise _too_many_failures(failures)
        limiter.limiter.hit(failures, "auth-failures", get_remote_address())
    raise ApiError(
        401,
        "The metrics token is required: send it as 'Authorization: Bearer <METRICS_TOKEN>'",
        headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        code="invalid_metrics_token" if presented else "missing_metrics_token",
    )


def register_authentication(app: Flask) -> None:
    """Check the client's key before anything else a request does (rate limits included)."""

    if not app.config["REQUIRE_API_KEY"] and app.config["APP_ENV"] == "production":
        app.logger.warning(
            "REQUIRE_API_KEY=false in production: anyone who can reach the service can spend the upstream key"
        )
    app.extensions["known_keys"] = KnownKeys(app.config["AUTH_KEY_REFRESH_SECONDS"])

    @app.before_request
    def authenticate() -> None:
        g.client_key = None
        if not current_app.config["REQUIRE_API_KEY"] or _is_public():
            return
        presented = presented_key()
        if presented is None:
            raise ApiError(
                401,
                "An API key is required: send it as 'Authorization: Bearer <key>'",
                headers=_CHALLENGE,
                code="missing_api_key",
            )
        g.client_key = client_key_for(presented)
