"""One JSON error envelope for every failure: {"error": "<sentence>", ...details}."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app, g, has_request_context, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from models import usd
from request_body import BodyRejected
from schemas import rejection_of
from services.chat import TurnRejected
from services.client_keys import BudgetSpent
from services.llm import UpstreamError, UpstreamRateLimited
from services.prices import CURRENCY

log = logging.getLogger(__name__)

# Werkzeug's default descriptions are HTML-page prose; these read as API answers.
_MESSAGES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body is too large",
    415: "Content-Type must be application/json",
}


class ApiError(Exception):
    """A client error raised by a route: answered as `status` with the envelope."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra


def _openai_error(status: int, message: str, extra: dict[str, Any]) -> dict[str, Any]:
    # OpenAI's own error shape, so that its SDKs raise their usual exceptions.
    kind = "rate_limit_error" if status == 429 else "api_error" if status >= 500 else "invalid_request_error"
    details = extra.get("details") or []
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": details[0]["field"] if details else None,
            "code": extra.get("code"),
        }
    }


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any):
    """A JSON error response: our envelope, or OpenAI's under /v1/."""
    if has_request_context() and request.path.startswith("/v1/"):
        response = jsonify(_openai_error(status, message, extra))
    else:
        response = jsonify({"error": message, **extra})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def reject_invalid(exc: ValidationError):
    """Raise the 400 for a request that its schema (schemas/) rejects, in the words the
    model chooses. flask-openapi3 calls this for every view parameter it validates; it
    raises rather than returns, so the answer goes through the one ApiError handler."""
    message, details = rejection_of(exc)
    raise ApiError(400, message, **({"details": details} if details else {}))


def _turn_rejected(exc: TurnRejected):
    extra = {k: v for k, v in (("details", exc.details), ("code", exc.code)) if v}
    return error_response(exc.status, exc.message, **extra)


def _body_rejected(exc: BodyRejected):
    return error_response(exc.status, exc.message, **({"details": exc.details} if exc.details else {}))


def _api_error(exc: ApiError):
    return error_response(exc.status, exc.message, exc.headers, **exc.extra)


def _upstream_error(exc: UpstreamError):
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
    if not exc.retry_after:
        # The router has spent its attempts and waiting would not help: the SDKs must not
        # multiply them with their own retries (they honour x-should-retry).
        headers["x-should-retry"] = "false"
    if isinstance(exc, UpstreamRateLimited):  # told from our own limiter's 429 (README: Routing)
        headers["X-Upstream-Error"] = "rate_limited"
    log.warning("upstream failure answered %s: %s", exc.status_code, exc.message)
    # A request the upstream rejected names its bad field as the upstream did.
    extra = {"details": [{"field": exc.param, "message": "rejected by the model"}]} if exc.param else {}
    if exc.code:
        extra["code"] = exc.code
    return error_response(exc.status_code, exc.message, headers, **extra)


def _budget_spent(exc: BudgetSpent):
    resets_at = exc.resets_at.isoformat()
    wait = max(1, math.ceil((exc.resets_at - datetime.now(UTC)).total_seconds()))
    if exc.budget != "daily_tokens":
        return _money_budget_spent(exc, resets_at, wait)
    budget = exc.client_key.daily_tokens
    return error_response(
        429,
        f"Daily token budget of {budget} tokens for this API key cannot cover this request: {exc.used} used and "
        f"{exc.reserved} reserved by requests in progress today, and this request may take up to {exc.needed} "
        f"(its prompt and max_tokens); it resets at {resets_at}",
        {"Retry-After": str(wait)},
        code="daily_token_budget_exceeded",
        budget={
            "daily_tokens": budget,
            "used_today": exc.used,
            "reserved_today": exc.reserved,
            "request_worst_case": exc.needed,
            "resets_at": resets_at,
        },
    )


def _money_budget_spent(exc: BudgetSpent, resets_at: str, wait: int):
    """The 429 of a budget in currency: the token budget's shape, its amounts in USD."""
    period, when = ("Monthly", "this_month") if exc.budget == "monthly_usd" else ("Daily", "today")
    limit, used, held, needed = (usd(amount) for amount in (exc.limit, exc.used, exc.reserved, exc.needed))
    return error_response(
        429,
        f"{period} budget of {limit} {CURRENCY} for this API key cannot cover this request: {used} {CURRENCY} used "
        f"and {held} {CURRENCY} reserved by requests in progress {when.replace('_', ' ')}, and this request may "
        f"cost up to {needed} {CURRENCY} (its prompt and max_tokens at the model's prices); it resets at {resets_at}",
        {"Retry-After": str(wait)},
        code=f"{exc.budget}_budget_exceeded",
        budget={
            exc.budget: limit,
            "currency": CURRENCY,
            f"used_{when}": used,
            f"reserved_{when}": held,
            "request_worst_case": needed,
            "resets_at": resets_at,
        },
    )


def _http_exception(exc: HTTPException):
    status = exc.code or 500
    if status == 429:
        message = f"Rate limit exceeded: {exc.description}"
    elif status == 413:
        message = f"Request body is too large (limit {current_app.config['MAX_CONTENT_LENGTH']} bytes)"
    else:
        message = _MESSAGES.get(status) or exc.name
    response = error_response(status, message)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _database_error(exc: SQLAlchemyError):
    # Connection-level failures are transient: tell the client to retry. The exception
    # text can hold SQL and parameters, so it is logged, never returned.
    log.error("database error: %s", type(exc).__name__, exc_info=current_app.debug)
    # A pool timeout (every connection busy for pool_timeout seconds) is overload: retry too.
    if isinstance(exc, (OperationalError, PoolTimeout)) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return error_response(503, "The database is unavailable; retry shortly", {"Retry-After": "1"})
    return error_response(500, "Internal server error")


def _unexpected(exc: Exception):
    log.exception("unhandled error")
    # The request id lets an operator find the logged trace; nothing else is said.
    return error_response(500, "Internal server error", request_id=g.get("request_id"))


_HANDLERS = (
    (TurnRejected, _turn_rejected),
    (BodyRejected, _body_rejected),
    (ApiError, _api_error),
    (UpstreamError, _upstream_error),
    (BudgetSpent, _budget_spent),
    (HTTPException, _http_exception),
    (SQLAlchemyError, _database_error),
    (Exception, _unexpected),
)


def register_error_handlers(app: Flask) -> None:
    """Answer every error as JSON; never a stack trace, SQL or a credential."""
    for exception, handler in _HANDLERS:
        app.register_error_handler(exception, handler)
