"""Client authentication: with REQUIRE_API_KEY, every API route needs `Authorization: Bearer <key>`.

Health, readiness, metrics and the API documentation stay open (`public`), and so do
CORS preflights, which browsers send without credentials. The key found is `g.client_key`:
rate limits are counted per key, conversations belong to it, its budget is charged.
"""

from __future__ import annotations

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
from services.client_keys import ClientKey, find_active_key

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


def _presented_key() -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


@lru_cache(maxsize=8)
def _failure_limit(text: str) -> RateLimitItem:
    return parse(text)


def _refuse_guessers() -> RateLimitItem | None:
    """429 for an address over AUTH_FAILURE_LIMIT failed keys, before any database lookup.

    Failures are counted in the rate limit storage (Redis shared across processes and
    hosts, or memory), per client address; with rate limiting off, nothing is counted.
    Returns the limit to count a failure against, or None when nothing is counted.
    """
    if not limiter.enabled:
        return None
    item = _failure_limit(current_app.config["AUTH_FAILURE_LIMIT"])
    address = get_remote_address()
    if not limiter.limiter.test(item, "auth-failures", address):
        reset_at, _ = limiter.limiter.get_window_stats(item, "auth-failures", address)
        raise ApiError(
            429,
            "Too many failed API key attempts from this address; retry later",
            headers={"Retry-After": str(max(1, math.ceil(reset_at - time.time())))},
            code="too_many_failed_attempts",
        )
    return item


def register_authentication(app: Flask) -> None:
    """Check the client's key before anything else a request does (rate limits included)."""

    if not app.config["REQUIRE_API_KEY"] and app.config["APP_ENV"] == "production":
        app.logger.warning(
            "REQUIRE_API_KEY=false in production: anyone who can reach the service can spend the upstream key"
        )

    @app.before_request
    def authenticate() -> None:
        g.client_key = None
        if not current_app.config["REQUIRE_API_KEY"] or _is_public():
            return
        presented = _presented_key()
        if presented is None:
            raise ApiError(
                401,
                "An API key is required: send it as 'Authorization: Bearer <key>'",
                headers=_CHALLENGE,
                code="missing_api_key",
            )
        failures = _refuse_guessers()
        client_key = find_active_key(presented)
        if client_key is None:
            if failures is not None:
                limiter.limiter.hit(failures, "auth-failures", get_remote_address())
            raise ApiError(401, "Invalid or revoked API key", headers=_CHALLENGE, code="invalid_api_key")
        g.client_key = client_key
