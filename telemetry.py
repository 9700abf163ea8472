"""What every response carries: a request id, the headers clients act on (nosniff,
Retry-After, an event stream's no-cache), one structured (JSON) log line, and Prometheus
metrics; and the report of a chat exchange (ExchangeReport) that the line includes.

Metrics work across gunicorn's processes through prometheus_client's multiprocess mode:
gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before the workers start, and /metrics
then adds up every process's files. Without it (tests, `flask run`) the process's own
registry is served.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from services.llm import Completion
    from services.llm.types import Attempt

# In multiprocess mode a metric writes its file when it is made, here at import. gunicorn's
# on_starting makes the folder, but a CLI command (flask db upgrade) may run first.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

REQUEST_ID_HEADER = "X-Request-ID"
# Flask-Limiter writes its window here (auth.py), and the response hook makes it Retry-After on a 429.
LIMITER_RETRY_AFTER = "X-Limiter-Retry-After"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_log = logging.getLogger("gateway.request")

REQUESTS = Counter("gateway_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
REQUEST_LATENCY = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
UPSTREAM_LATENCY = Histogram(
    "gateway_upstream_request_duration_seconds",
    "Time the LLM upstream took to answer, retries included",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "LLM upstream failures by kind", ["kind"])
# Every call the router made to a deployment, by how it ended ("ok", "cut", an error's kind).
# Deployments are named in the routing file and outcomes are few: the labels stay bounded.
UPSTREAM_ATTEMPTS = Counter(
    "gateway_upstream_attempts_total", "Calls made to LLM deployments, by outcome", ["deployment", "outcome"]
)
TOKENS = Counter("gateway_tokens_total", "Tokens used, as the upstream reported them", ["kind", "model"])
# 1 while a process counts rate limits in its own memory because the shared storage
# (Redis) is unreachable. livemax: the scrape says 1 while any live worker is degraded,
# and a worker that exits takes its sample with it (gunicorn.conf.py marks it dead).
RATELIMIT_DEGRADED = Gauge(
    "gateway_ratelimit_degraded",
    "1 while rate limits are counted per process because their shared storage is unreachable",
    multiprocess_mode="livemax",
)


def _route_label() -> str:
    # The rule, not the path: paths carry ids and would explode the label space.
    return route_rule() or "unmatched"


def route_rule() -> str | None:
    """The URL rule of this request ("/v1/chat/completions"), or None when none matched."""
    return request.url_rule.rule if request.url_rule is not None else None


def register_request_telemetry(app: Flask) -> None:
    """Give every request an id, a metrics sample and one JSON log line."""

    @app.before_request
    def start_request_clock() -> None:
        g.started = time.perf_counter()
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = offered if _REQUEST_ID.match(offered) else uuid.uuid4().hex

    @app.after_request
    def log_request(response: Response) -> Response:
        set_client_headers(response)
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers[REQUEST_ID_HEADER] = request_id
        request_fields = {
            "event": "request",
            "request_id": request_id,
            "method": request.method,
            "route": _route_label(),
            "path": request.path,
            "status": response.status_code,
            "log_content": current_app.config.get("LOG_CONTENT", False),
        }
        models = metric_models()
        if response.is_streamed:
            # A stream's latency, upstream time and usage are known only when it ends:
            # write its line then (the WSGI server closes the response last).
            request_globals = g._get_current_object()
            response.call_on_close(lambda: _finish_request(request_fields, request_globals, models))
        else:
            _finish_request(request_fields, g._get_current_object(), models)
        return response


@dataclass
class ExchangeReport:
    """What the request's log line and metrics say of its exchange, filled in as it runs."""

    conversation_id: str | None = None
    prompt_text: str = ""
    streamed: bool = False
    upstream_seconds: float | None = None
    # "ok", "ClientDisconnected", or the failure's kind (an UpstreamError class name).
    outcome: str | None = None
    completion: Completion | None = None
    # The model the client asked for (or the default), and the router's attempts when the
    # exchange failed (an answer's are its completion's).
    model: str | None = None
    attempts: tuple[Attempt, ...] = ()
    # The URL rule the client called and when its request began (time.perf_counter()), for
    # the request log (services/request_log.py).
    route: str | None = None
    started: float | None = None


def exchange_report() -> ExchangeReport:
    """A new report of this request's exchange, which its log line reads when it closes."""
    g.exchange = ExchangeReport(route=route_rule(), started=g.get("started"))
    return g.exchange


def finish_message(status: int, exchange: ExchangeReport | None, started: float) -> None:
    """Count one message of this request's WebSocket connection (a `response.create`) as a
    request of its own: metrics and one log line, method "WEBSOCKET", with its exchange and
    the status its answer (an error event's, else 200) has; `started` is its time.perf_counter()."""
    fields = {
        "event": "request",
        "request_id": g.get("request_id") or uuid.uuid4().hex,
        "method": "WEBSOCKET",
        "route": _route_label(),
        "path": request.path,
        "status": status,
        "log_content": current_app.config.get("LOG_CONTENT", False),
    }
    message_globals = SimpleNamespace(started=started, exchange=exchange, client_key=g.get("client_key"))
    _finish_request(fields, message_globals, metric_models())


def set_client_headers(response: Response) -> None:
    """The headers clients act on, set in one place whatever produced the answer."""
    # JSON and event streams only: never let a browser sniff them into something else.
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Retry-After makes SDK clients wait before their automatic retries: it belongs on
    # a 429 (our limit's window, or the budget's reset) and a 503 (the upstream's
    # value, or the database's), and nowhere else.
    window = response.headers.pop(LIMITER_RETRY_AFTER, None)
    # An upstream's 429 (X-Upstream-Error) keeps the upstream's Retry-After, or none: our
    # window's reset says nothing of when the upstream takes calls again.
    ours = "X-Upstream-Error" not in response.headers
    if response.status_code == 429 and "Retry-After" not in response.headers and window is not None and ours:
        response.headers["Retry-After"] = window
    elif response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    if response.mimetype == "text/event-stream":
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events through unbuffered
    if response.status_code == 204 or (request.method == "OPTIONS" and not response.content_length):
        response.headers.pop("Content-Type", None)  # no body, no type


def _finish_request(fields: dict[str, Any], request_globals: Any, models: frozenset[str]) -> None:
    """Count the request in the metrics and write its one log line."""
    seconds = time.perf_counter() - getattr(request_globals, "started", time.perf_counter())
    route = fields["route"]
    if route != "/metrics":
        REQUESTS.labels(route=route, method=fields["method"], status=str(fields["status"])).inc()
        REQUEST_LATENCY.labels(route=route).observe(seconds)
    log_content = fields.pop("log_content")
    fields = {**fields, "latency_ms": round(seconds * 1000, 3)}
    exchange = getattr(request_globals, "exchange", None)
    if exchange is not None:
        fields.update(_exchange_fields(exchange, log_content, models))
    client_key = getattr(request_globals, "client_key", None)
    if client_key is not None:
        fields["client_key"] = client_key.prefix
    access_log.info("%s %s %s", fields["method"], fields["path"], fields["status"], extra={"fields": fields})


_STREAM_OUTCOMES = {"ok": "completed", "ClientDisconnected": "disconnected"}
OTHER_MODEL = "other"


def metric_models() -> frozenset[str]:
    """The model names the app is configured to serve, which alone label the metrics: the
    routing file's groups and aliases, ALLOWED_MODELS and the default model. Each label
    value is a time series kept forever and seen by whoever reads /metrics, so a name a
    client made up is neither a series of its own nor shown to anyone: it counts as "other"."""
    models = current_app.extensions.get("metric_models")
    if models is None:
        llm = current_app.extensions["llm"]
        names = {*(llm.model_names() or ()), *(current_app.config.get("ALLOWED_MODELS") or ())}
        models = current_app.extensions["metric_models"] = frozenset({*names, llm.default_model} - {None})
    return models


def model_label(model: str | None, models: frozenset[str]) -> str:
    """The `model` label for the model a request named: itself when configured, else "other"."""
    return model if model in models else OTHER_MODEL


def _exchange_fields(exchange: Any, log_content: bool, models: frozenset[str]) -> dict[str, Any]:
    """The upstream metrics of a chat exchange (ExchangeReport), and its log fields."""
    fields: dict[str, Any] = {"user_id": exchange.conversation_id}
    completion, outcome = exchange.completion, exchange.outcome
    if exchange.upstream_seconds is not None:
        UPSTREAM_LATENCY.labels(outcome=outcome or "InternalError").observe(exchange.upstream_seconds)
        fields["upstream_latency_ms"] = round(exchange.upstream_seconds * 1000, 3)
    if outcome not in (None, "ok", "ClientDisconnected"):
        UPSTREAM_ERRORS.labels(kind=outcome).inc()
    elif completion is not None:
        for kind in ("prompt", "completion"):
            used = getattr(completion, f"{kind}_tokens", None)
            if used:
                TOKENS.labels(kind=kind, model=model_label(exchange.model, models)).inc(used)
    if completion is not None:
        fields["usage"] = completion.usage()
    fields.update(_routing_fields(exchange))
    if log_content:
        fields["prompt_text"] = exchange.prompt_text
    if exchange.streamed and outcome is not None:
        fields["stream_outcome"] = _STREAM_OUTCOMES.get(outcome, "failed")
    return fields


def _routing_fields(exchange: ExchangeReport) -> dict[str, Any]:
    """The log fields of where an exchange went: the model asked for, the deployment that
    answered (when one did), how many attempts it took; each attempt counted in the metrics."""
    completion = exchange.completion
    attempts = exchange.attempts or (completion.attempts if completion is not None else ())
    for attempt in attempts:
        UPSTREAM_ATTEMPTS.labels(deployment=attempt.deployment, outcome=attempt.outcome).inc()
    fields: dict[str, Any] = {"attempts": len(attempts)}
    model = exchange.model or (completion.model if completion is not None else None)
    if model is not None:
        fields["model"] = model
    if completion is not None and completion.deployment is not None:
        fields["deployment"] = completion.deployment
    return fields


def metrics_response() -> Response:
    """The Prometheus exposition of every process's metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
