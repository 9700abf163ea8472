"""Operations in one process: health, readiness, metrics, request logs, retention."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from fake_upstream import Status
from prometheus_client.parser import text_string_to_metric_families
from support import UPSTREAM_KEY, free_port, rows_of

from extensions import db
from logformat import JsonFormatter
from models import Message


def _samples(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def _value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_healthz_and_readyz_answer_and_are_not_rate_limited(make_app):
    client = make_app(RATELIMIT_ENABLED=True, RATELIMIT_APPLICATION="1 per hour").test_client()
    for _ in range(3):
        assert client.get("/healthz").get_json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.get_json() == {
            "status": "ready",
            "database": "ok",
            "ratelimit_storage": "ok",
            "upstreams": {"default": "closed"},
            "breaker_storage": "ok",
        }
        assert client.get("/metrics").status_code == 200
    # The API budget is untouched by the probes.
    assert client.post("/openai-completion", json={"prompt": "hi"}).status_code == 200
    assert client.post("/openai-completion", json={"prompt": "hi"}).status_code == 429


def test_readyz_is_503_when_the_database_is_unreachable(make_app, tmp_path):
    client = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}").test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {
        "error": "Service not ready",
        "database": "unavailable",
        "ratelimit_storage": "ok",
        "upstreams": {"default": "closed"},
        "breaker_storage": "ok",
    }
    assert client.get("/healthz").status_code == 200  # alive all the same


def test_readyz_stays_200_and_says_degraded_when_the_rate_limit_storage_is_unreachable(make_app):
    # Limits fall back to per-process counting: no reason to leave the load balancer
    # (tests/test_redis_outage.py kills a real Redis).
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    # The circuit breakers live in the same Redis: kept per process meanwhile, and said so.
    assert response.get_json() == {
        "status": "ready",
        "database": "ok",
        "ratelimit_storage": "degraded",
        "upstreams": {"default": "closed"},
        "breaker_storage": "degraded",
    }


def test_metrics_count_requests_latency_upstream_errors_and_tokens(make_app, upstream):
    client = make_app().test_client()
    before = _samples(client)
    client.post("/openai-completion", json={"prompt": "one"})
    client.post("/openai-completion", json={"prompt": "two"})
    upstream.enqueue(Status(500))
    client.post("/openai-completion", json={"prompt": "three"})
    client.post("/openai-completion", json={})
    after = _samples(client)

    def delta(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    route = "/openai-completion"
    assert delta("gateway_http_requests_total", route=route, method="POST", status="200") == 2
    assert delta("gateway_http_requests_total", route=route, method="POST", status="502") == 1
    assert delta("gateway_http_requests_total", route=route, method="POST", status="400") == 1
    assert delta("gateway_http_request_duration_seconds_count", route=route) == 4
    assert delta("gateway_upstream_request_duration_seconds_count", outcome="ok") == 2
    assert delta("gateway_upstream_errors_total", kind="UpstreamUnavailable") == 1
    assert delta("gateway_tokens_total", kind="prompt", model="fake-model") == 22
    assert delta("gateway_tokens_total", kind="completion", model="fake-model") == 14


def test_one_structured_log_line_per_request_with_its_id(make_app, request_log):
    client = make_app().test_client()

    response = client.post(
        "/openai-completion", json={"prompt": "secret plans", "user_id": "log-1"}, headers={"X-Request-ID": "abc-123"}
    )

    assert response.headers["X-Request-ID"] == "abc-123"
    assert len(request_log) == 1
    fields = request_log[0].fields
    assert fields["request_id"] == "abc-123"
    assert (fields["route"], fields["status"], fields["user_id"], fields["model"]) == (
        "/openai-completion",
        200,
        "log-1",
        "fake-model",
    )
    assert fields["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert fields["latency_ms"] >= fields["upstream_latency_ms"] > 0
    line = JsonFormatter().format(request_log[0])
    assert json.loads(line)["request_id"] == "abc-123"
    assert "secret plans" not in line  # prompts are not logged unless LOG_CONTENT=true


def test_prompt_text_is_logged_only_with_log_content(make_app, request_log):
    client = make_app(LOG_CONTENT=True).test_client()
    client.post("/openai-completion", json={"prompt": "visible on purpose"})
    assert request_log[0].fields["prompt_text"] == "visible on purpose"


def test_a_bad_request_id_is_replaced_and_errors_are_logged_too(make_app, request_log):
    client = make_app().test_client()
    response = client.post("/openai-completion", json={}, headers={"X-Request-ID": "bad id with spaces"})
    generated = response.headers["X-Request-ID"]
    assert len(generated) == 32 and generated.isalnum()
    assert request_log[0].fields["status"] == 400
    assert request_log[0].fields["request_id"] == generated


def test_json_formatter_removes_configured_secrets():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "key was %s", (UPSTREAM_KEY,), None)
    line = JsonFormatter((UPSTREAM_KEY,)).format(record)
    assert UPSTREAM_KEY not in line
    assert json.loads(line)["message"] == "key was [redacted]"


def _add_exchange(user_id: str, when: datetime) -> None:
    exchange_id = f"{user_id}-{when.timestamp():.0f}"
    db.session.add_all(
        [
            Message(
                user_id=user_id, exchange_id=exchange_id, role="user", content="q", status="completed", timestamp=when
            ),
            # The reply is a moment newer: the exchange is still deleted whole.
            Message(
                user_id=user_id,
                exchange_id=exchange_id,
                role="assistant",
                content="a",
                status="completed",
                timestamp=when + timedelta(seconds=30),
            ),
        ]
    )


def test_prune_deletes_old_exchanges_whole_in_batches(make_app):
    app = make_app(RETENTION_DAYS=30)
    now = datetime.now(UTC)
    with app.app_context():
        for days in (200, 120, 91):
            _add_exchange("old", now - timedelta(days=days))
        _add_exchange("boundary", now - timedelta(days=90, seconds=10))
        _add_exchange("recent", now - timedelta(days=10))
        db.session.commit()

    result = app.test_cli_runner().invoke(args=["messages", "prune", "--older-than", "90d", "--batch-size", "1"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Deleted 8 message rows older than ")
    assert [r["user_id"] for r in rows_of(app)] == ["recent", "recent"]

    default = app.test_cli_runner().invoke(args=["messages", "prune"])  # RETENTION_DAYS=30
    assert default.output.startswith("Deleted 0 message rows")


def test_prune_rejects_a_malformed_age(runner):
    result = runner.invoke(args=["messages", "prune", "--older-than", "ninety days"])
    assert result.exit_code != 0
    assert "is not an age such as 90d, 12h or 30m" in result.output


def test_every_response_forbids_content_sniffing(client):
    for response in (client.get("/healthz"), client.get("/nope"), client.post("/openai-completion", json={})):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Access-Control-Allow-Origin" not in client.get("/healthz").headers  # no CORS


def test_model_names_cannot_grow_the_metrics_without_bound(make_app, upstream):
    from fake_upstream import Reply

    client = make_app().test_client()
    names = [f"echoed-model-{i}" for i in range(40)]
    upstream.enqueue(*(Reply(model=name) for name in names))
    for name in names:
        body = {"model": name, "messages": [{"role": "user", "content": "x"}]}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    models = {dict(labels).get("model") for (name, labels) in _samples(client) if name == "gateway_tokens_total"}
    # Only configured models have labels of their own (tests/test_metrics_access.py).
    assert "other" in models and not any(name.startswith("echoed-model-") for name in models)
