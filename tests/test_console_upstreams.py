"""The console's upstreams page (issue 25), through Flask's test client on each backend,
over real local upstreams: a routing file of two deployments, one failing until its
breaker opens; each deployment's host (never its key), breaker, recent errors, latency;
the test button (one small chat completion, CSRF-checked, audited, charged to no key);
the one upstream without a routing file; breakers shared through Redis."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import openai
import pytest
import sqlalchemy as sa
from console_support import SECRET_KEY, csrf_token
from fake_upstream import Reply
from fault_upstream import server_error
from support import UPSTREAM_KEY, all_rows, create_client_key, deployment, routing_key
from test_console import audit, make_admin, signed_in

from extensions import db
from models import AuditEntry, UpstreamAttempt
from services.console.upstreams import endpoint_host, percentile, recent_stats

CONSOLE = {"CONSOLE_ENABLED": True, "SECRET_KEY": SECRET_KEY}
ROUTER = {"retries_per_deployment": 0, "backoff_seconds": 0.01, "breaker": {"failures": 2, "cooldown_seconds": 600}}


def _row(page: str, name: str) -> str:
    """The table row of deployment `name` on the upstreams page."""
    match = re.search(rf'<tr class="upstream" data-deployment="{re.escape(name)}">(.*?)</tr>', page, re.S)
    assert match, f"no row for {name}"
    return match.group(1)


@pytest.fixture
def two_deployments(routed, fault_upstreams):
    """A group of two deployments by priority: a primary answering 500 and a healthy
    secondary; the console on, an admin made."""
    primary_server, secondary_server = fault_upstreams(2)
    primary_server.default = server_error()
    secondary_server.default = Reply(text="answered by the secondary")
    primary = deployment(primary_server, "primary", priority=0)
    secondary = deployment(secondary_server, "secondary", priority=1)
    app, server = routed({"fake-model": {"deployments": [primary, secondary]}}, ROUTER, **CONSOLE)
    make_admin(app)
    return app, server, primary, secondary


def _ask(server, times: int) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        for _ in range(times):
            answer = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
            assert answer.choices[0].message.content == "answered by the secondary"


def test_each_deployment_shows_its_host_breaker_errors_and_latency_never_its_key(two_deployments):
    app, server, primary, secondary = two_deployments
    _ask(server, 3)  # the primary fails twice (its breaker opens), then is passed over
    page = signed_in(app).get("/console/upstreams")
    assert page.status_code == 200
    html = page.text
    first, second = _row(html, primary.name), _row(html, secondary.name)
    assert f"127.0.0.1:{primary.server.port}" in first and f"127.0.0.1:{secondary.server.port}" in second
    assert "primary-model" in first and "fake-model" in first
    assert '<span class="breaker-state">open</span>' in first and "2 consecutive failures" in first
    assert '<td class="health health-down">down</td>' in first
    assert "UpstreamUnavailable" in first and "HTTP 500" in first
    assert "0 replies, 2 failed attempts" in first and "100.0% errors" in first
    assert re.search(r"\d+ / \d+ ms", first), "the primary's failed attempts have a latency"
    assert '<span class="breaker-state">closed</span>' in second and "health-healthy" in second
    assert "3 replies, 0 failed attempts" in second and "0.0% errors" in second
    assert "none in the last day" in second
    assert "each process&#39;s memory" in html  # RATELIMIT_STORAGE_URI is memory://
    for key in (routing_key(primary.server), routing_key(secondary.server), UPSTREAM_KEY):
        assert key not in html


def test_the_test_button_sends_one_small_request_shows_its_outcome_and_is_audited_not_charged(two_deployments):
    app, _, primary, secondary = two_deployments
    create_client_key(app, "team")
    client = signed_in(app)
    token = csrf_token(client.get("/console/upstreams").text)
    before = all_rows(app)

    answered = client.post(f"/console/upstreams/{secondary.name}/test", data={"csrf_token": token})
    assert answered.status_code == 200
    assert re.search(
        r'<span class="probe-outcome">answered \(ok, HTTP 200\)</span>\s*in <span class="probe-latency">\d+ ms',
        answered.text,
    )
    (sent,) = secondary.server.chat_requests()
    assert sent["max_completion_tokens"] == 16 and sent["model"] == "secondary-model" and len(sent["messages"]) == 1

    failed = client.post(f"/console/upstreams/{primary.name}/test", data={"csrf_token": token})
    assert failed.status_code == 200
    assert '<span class="probe-outcome">failed (UpstreamUnavailable, HTTP 500)</span>' in failed.text
    assert routing_key(primary.server) not in failed.text

    after = all_rows(app)
    for table in ("messages", "upstream_attempts", "api_key_usage", "api_key_monthly_spend"):
        assert after[table] == before[table], f"a test request touched {table}"
    assert ("ops", "upstream.test", secondary.name) in audit(app) and ("ops", "upstream.test", primary.name) in audit(
        app
    )
    with app.app_context():
        tests = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "upstream.test").order_by("id"))
        assert [(entry.detail["ok"], entry.detail["status_code"]) for entry in tests] == [(True, 200), (False, 500)]


def test_the_test_button_needs_the_csrf_token_and_a_deployment(two_deployments):
    app, _, _, secondary = two_deployments
    client = signed_in(app)
    refused = client.post(f"/console/upstreams/{secondary.name}/test", data={})
    assert refused.status_code == 400 and secondary.server.chat_requests() == []
    token = csrf_token(client.get("/console/upstreams").text)
    assert client.post("/console/upstreams/nowhere/test", data={"csrf_token": token}).status_code == 404
    signed_out = https_anonymous(app).post(f"/console/upstreams/{secondary.name}/test", data={"csrf_token": token})
    assert signed_out.status_code in (302, 400) and secondary.server.chat_requests() == []


def https_anonymous(app):
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    return client


def test_without_a_routing_file_the_page_shows_the_one_upstream(make_app, upstream):
    app = make_app(**CONSOLE)
    make_admin(app)
    client = signed_in(app)
    html = client.get("/console/upstreams").text
    row = _row(html, "default")
    assert f"127.0.0.1:{upstream.port}" in row and "any model (no routing file)" in row
    assert UPSTREAM_KEY not in html
    token = csrf_token(html)
    tested = client.post("/console/upstreams/default/test", data={"csrf_token": token})
    assert "answered (ok, HTTP 200)" in tested.text
    assert upstream.chat_requests()[-1]["max_completion_tokens"] == 16


def test_the_offline_model_is_one_deployment_answering_in_process(make_app):
    app = make_app(**CONSOLE, LLM_OFFLINE=True)
    make_admin(app)
    client = signed_in(app)
    html = client.get("/console/upstreams").text
    assert "none (answers in process)" in _row(html, "offline")
    tested = client.post("/console/upstreams/offline/test", data={"csrf_token": csrf_token(html)})
    assert "answered (ok, HTTP 200)" in tested.text


def test_breakers_shared_through_redis_are_read_from_it(routed, fault_upstreams, redis_url):
    (only,) = fault_upstreams(1)
    only.default = server_error()
    failing = deployment(only, "lonely")
    app, server = routed({"fake-model": {"deployments": [failing]}}, ROUTER, RATELIMIT_STORAGE_URI=redis_url, **CONSOLE)
    make_admin(app)
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        for _ in range(2):
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    html = signed_in(app).get("/console/upstreams").text
    assert "shared through Redis" in html
    assert '<span class="breaker-state">open</span>' in _row(html, failing.name)


def test_recent_stats_are_over_the_last_hour_and_percentiles_by_nearest_rank(app):
    now = datetime.now(UTC)
    rows = [("a", "ok", 100, now - timedelta(minutes=1)), ("a", "UpstreamTimeout", 900, now - timedelta(minutes=2))]
    rows += [("a", "ok", latency, now - timedelta(minutes=3)) for latency in (200, 300, 400)]
    rows += [("a", "UpstreamUnavailable", 5, now - timedelta(hours=3))]  # past the hour, within the day
    rows += [("a", "UpstreamUnavailable", 5, now - timedelta(days=2))]  # past both
    rows += [("b", "ok", 50, now)]
    with app.app_context():
        for number, (name, outcome, latency, at) in enumerate(rows):
            db.session.add(
                UpstreamAttempt(
                    exchange_id=f"x{number}", attempt=1, deployment=name, model="m", outcome=outcome,
                    latency_ms=latency, error=None if outcome == "ok" else "boom", created_at=at,
                )
            )  # fmt: skip
        db.session.commit()
        stats = recent_stats(db.session, ["a", "b", "c"], now)
    assert stats["a"]["attempts"] == 5 and stats["a"]["failed"] == 1
    assert (stats["a"]["p50_ms"], stats["a"]["p95_ms"]) == (300, 900)
    assert [e["outcome"] for e in stats["a"]["errors"]] == ["UpstreamTimeout", "UpstreamUnavailable"]
    assert stats["a"]["error_rate"] == 1.0  # no reply rows: every try in the hour failed
    assert stats["c"] == {**stats["c"], "attempts": 0, "p50_ms": None, "error_rate": None, "errors": []}
    assert percentile([], 0.5) is None and percentile([7], 0.95) == 7


@pytest.mark.parametrize(
    ("url", "host"),
    [
        (None, "api.openai.com"),
        ("http://127.0.0.1:8080/v1", "127.0.0.1:8080"),
        ("https://user:hunter2hunter2@proxy.example.com/v1?api-key=abc", "proxy.example.com"),
        ("https://[::1]:9000/v1", "[::1]:9000"),
    ],
)
def test_an_endpoint_shows_as_its_host_only(url, host):
    assert endpoint_host(url) == host


def test_no_database_connection_is_held_while_the_test_request_runs(make_app, upstream):
    app = make_app(**CONSOLE)
    make_admin(app)
    client = signed_in(app)
    token = csrf_token(client.get("/console/upstreams").text)
    checked_out = []

    def during_upstream_call(_received):
        with app.app_context():
            checked_out.append(db.engine.pool.checkedout())

    upstream.on_request = during_upstream_call
    tested = client.post("/console/upstreams/default/test", data={"csrf_token": token})
    assert "answered (ok, HTTP 200)" in tested.text
    assert checked_out == [0]
