"""Operations: liveness, readiness and metrics. Exempt from rate limits and client keys."""

from __future__ import annotations

import logging

from flask import current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from auth import public, require_metrics_token
from extensions import db, limiter
from schemas import ErrorResponse, HealthResponse, ReadinessResponse
from telemetry import metrics_response

health_bp = APIBlueprint("health", __name__, abp_tags=[Tag(name="operations")])
log = logging.getLogger(__name__)


@health_bp.get("/healthz", responses={200: HealthResponse})
@public
def healthz():
    """Alive: the process answers. No I/O, so a slow database never restarts it."""
    return jsonify({"status": "ok"})


def _database_ready() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return False
    finally:
        db.session.close()


def _database_state() -> str:
    """The database's state: "ok"; "unavailable" when it does not answer; "unwritable" when
    it answers but exchanges it could not take wait in the journal (a full disk, a cut).

    The journal check is one stat; a journal found waiting wakes the replayer, so this
    answer turns "ok" as soon as the database takes writes again.
    """
    if not _database_ready():
        return "unavailable"
    recorder = current_app.extensions["exchange_recorder"]
    if recorder.journal.pending():
        recorder.wake()
        return "unwritable"
    return "ok"


def _limiter_storage_state() -> str:
    """The storage's state: "ok", or "degraded" while it is unreachable and each process counts on its own.

    Not a reason to leave the load balancer: requests are still served and limited.
    The limiter logs the outage once and sets gateway_ratelimit_degraded; nothing here logs.
    """
    if not limiter.enabled:
        return "ok"
    return "ok" if limiter.check_storage() else "degraded"


def _upstream_states() -> dict:
    """Each deployment's breaker and the breakers' storage (none for the offline model)."""
    llm = current_app.extensions["llm"]
    if llm.offline:
        return {}
    states = llm.breaker_states()
    return {"upstreams": states, "breaker_storage": "degraded" if llm.pool.breakers.degraded else "ok"}


@health_bp.get("/readyz", responses={200: ReadinessResponse, 503: ReadinessResponse})
@public
def readyz():
    """Ready: 200 while the database answers and takes writes, else 503; an unreachable rate
    limit storage only degrades."""
    checks = {
        "database": _database_state(),
        "ratelimit_storage": _limiter_storage_state(),
        **_upstream_states(),
    }
    if checks["database"] == "ok":
        return jsonify({"status": "ready", **checks})
    response = jsonify({"error": "Service not ready", **checks})
    response.status_code = 503
    return response


# 401 and 429 only with METRICS_TOKEN set (a missing or wrong token, too many wrong ones).
_METRICS_ANSWERS = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
    401: ErrorResponse,
    429: ErrorResponse,
}


@health_bp.get("/metrics", responses=_METRICS_ANSWERS)
@public
def metrics():
    """Prometheus metrics, summed over every gunicorn process (METRICS_TOKEN: its bearer only)."""
    require_metrics_token()
    llm = current_app.extensions["llm"]
    if not llm.offline:
        llm.breaker_states()  # the breakers' gauge as this process sees them now
    return metrics_response()
