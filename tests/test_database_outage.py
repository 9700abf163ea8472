"""PostgreSQL going away: at most a clear 503 for requests in flight, then recovery by itself.

The app reaches the real PostgreSQL through a TCP relay the test can cut, which is what a
server restart or a network fault looks like from the service.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from support import TcpProxy, rows_of

UNAVAILABLE = {"error": "The database is unavailable; retry shortly"}


@pytest.fixture
def proxied(postgres_url, app_factory):
    url = sa.make_url(postgres_url)
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE messages RESTART IDENTITY"))
    engine.dispose()
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app = app_factory(via_proxy)
    yield app, proxy
    proxy.close()


def test_terminated_connections_are_replaced_without_an_error(proxied, postgres_url, upstream):
    app, _proxy = proxied
    client = app.test_client()
    assert client.post("/openai-completion", json={"prompt": "before", "user_id": "pg-1"}).status_code == 200

    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'llm-gateway' AND datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    admin.dispose()
    assert killed >= 1

    response = client.post("/openai-completion", json={"prompt": "after", "user_id": "pg-1"})

    assert response.status_code == 200
    assert [r["content"] for r in rows_of(app, "pg-1") if r["role"] == "user"] == ["before", "after"]


def test_database_down_answers_503_before_calling_the_upstream_then_recovers(proxied, upstream):
    app, proxy = proxied
    client = app.test_client()
    assert client.post("/openai-completion", json={"prompt": "warm", "user_id": "pg-2"}).status_code == 200
    calls_before = len(upstream.chat_requests())

    proxy.cut()
    down = client.post("/openai-completion", json={"prompt": "during outage", "user_id": "pg-2"})
    payload_down = client.post("/process-payload/", json={"messages": [{"role": "user", "content": "x"}]})
    ready = client.get("/readyz")

    assert down.status_code == 503
    assert down.get_json() == UNAVAILABLE
    assert down.headers["Retry-After"] == "1"
    assert payload_down.status_code == 503
    assert ready.status_code == 503 and ready.get_json()["database"] == "unavailable"
    assert len(upstream.chat_requests()) == calls_before  # no upstream call wasted

    proxy.restore()
    back = client.post("/openai-completion", json={"prompt": "after outage", "user_id": "pg-2"})

    assert back.status_code == 200
    assert client.get("/readyz").status_code == 200
    assert [r["content"] for r in rows_of(app, "pg-2") if r["role"] == "user"] == ["warm", "after outage"]


def test_database_lost_during_the_upstream_call_costs_only_that_request(proxied, upstream):
    app, proxy = proxied
    client = app.test_client()
    upstream.on_request = lambda _received: proxy.cut()

    lost = client.post("/openai-completion", json={"prompt": "in flight", "user_id": "pg-3"})

    upstream.on_request = None
    proxy.restore()
    assert lost.status_code == 503
    assert lost.get_json() == UNAVAILABLE

    after = client.post("/openai-completion", json={"prompt": "next", "user_id": "pg-3"})
    assert after.status_code == 200
    # The interrupted exchange stays pending: kept, but never sent to the model as context.
    assert upstream.chat_requests()[-1]["messages"] == [{"role": "user", "content": "next"}]
    statuses = [(r["content"], r["status"]) for r in rows_of(app, "pg-3")]
    assert statuses == [("in flight", "pending"), ("next", "completed"), ("echo: next", "completed")]


def test_with_keys_required_an_outage_answers_503_not_401(postgres_url, app_factory, upstream):
    """The key lookup is the first thing to need the database: an outage must not read as
    a bad key (401), nor as our failure (500)."""
    from support import bearer, create_client_key

    url = sa.make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        app = app_factory(via_proxy, REQUIRE_API_KEY=True)
        key = bearer(create_client_key(app, "outage"))
        client = app.test_client()
        assert client.get("/conversations", headers=key).status_code == 200

        proxy.cut()
        down = client.post("/openai-completion", json={"prompt": "x"}, headers=key)
        assert (down.status_code, down.get_json(), down.headers["Retry-After"]) == (503, UNAVAILABLE, "1")
        assert upstream.chat_requests() == []

        proxy.restore()
        assert client.post("/openai-completion", json={"prompt": "x"}, headers=key).status_code == 200
    finally:
        proxy.close()
