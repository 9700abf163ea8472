"""PostgreSQL going away: a clear 503 before any upstream call, replies already on their way
kept (journaled, then recorded), and recovery by itself.

The app reaches the real PostgreSQL through a TCP relay the test can cut, which is what a
server restart or a network fault looks like from the service.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from fake_upstream import Status
from support import (
    EMPTY_ALL_TABLES,
    LiveServer,
    TcpProxy,
    all_rows,
    bearer,
    create_client_key,
    poll_until,
    replies_in_flight_while,
    rows_of,
    sse_events,
)

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


def test_replies_in_flight_when_the_database_goes_reach_the_client_and_are_recorded_once_it_is_back(
    postgres_url, app_factory, upstream
):
    """A plain and a streamed reply both in flight when PostgreSQL goes: each client gets its
    whole answer, the endings wait in the journal, and once the database is back they are
    recorded (both turns completed) and charged exactly once, with no one doing anything."""
    with _proxied_app(postgres_url, app_factory, REQUIRE_API_KEY=True) as (app, proxy):
        key = bearer(create_client_key(app, "journaled", "--daily-tokens", "100000"))
        server = LiveServer(app)
        try:
            plain, streamed = replies_in_flight_while(proxy.cut, server, upstream, key, "pg")
            assert server.wait_idle()
        finally:
            server.stop()
        assert plain == {
            "user_id": "pg-plain",
            "completion": "echo: plain in flight",
            "model": "fake-model",
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
        assert streamed == "echo: streamed in flight"
        journal = Path(app.config["JOURNAL_PATH"])
        journaled = journal.read_bytes()
        assert len(journaled.splitlines()) == 2
        ready = app.test_client().get("/readyz")
        assert (ready.status_code, ready.get_json()["database"]) == (503, "unavailable")

        proxy.restore()
        assert poll_until(lambda: _statuses(app) == EXPECTED_STATUSES), _statuses(app)
        assert _usage(app) == (2, 22, 14, 36, 0)  # requests, prompt, completion, total, reserved
        # The replayer rewrites the journal just after its last commit: ready once it has.
        assert poll_until(lambda: app.test_client().get("/readyz").get_json()["database"] == "ok")
        assert not journal.read_bytes()

        # The same entries again (a crash between a replay's commit and the journal's rewrite)
        # are recognised as recorded: no second charge, no second reply row.
        journal.write_bytes(journaled)
        assert app.extensions["exchange_recorder"].replay()
        assert _statuses(app) == EXPECTED_STATUSES
        assert _usage(app) == (2, 22, 14, 36, 0)


def test_an_upstream_failure_while_the_database_is_gone_is_recorded_later_and_frees_the_reservation(
    postgres_url, app_factory, upstream
):
    with _proxied_app(postgres_url, app_factory, REQUIRE_API_KEY=True) as (app, proxy):
        key = bearer(create_client_key(app, "journaled", "--daily-tokens", "2000"))
        upstream.on_request = lambda _received: proxy.cut()
        upstream.enqueue(Status(500, "upstream broke"))

        failed = app.test_client().post("/openai-completion", json={"prompt": "doomed", "user_id": "pg-4"}, headers=key)

        upstream.on_request = None
        assert failed.status_code == 502
        proxy.restore()
        assert poll_until(lambda: [r["status"] for r in rows_of(app, "pg-4")] == ["failed"])
        assert _usage(app) == (0, 0, 0, 0, 0)  # nothing charged, the reservation given back


EXPECTED_STATUSES = {
    "pg-plain": [("user", "completed"), ("assistant", "completed")],
    "pg-streamed": [("user", "completed"), ("assistant", "completed")],
}


@contextlib.contextmanager
def _proxied_app(postgres_url: str, app_factory, **overrides):
    """An app reaching the emptied test database through a relay the test can cut."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(EMPTY_ALL_TABLES))
    engine.dispose()
    url = sa.make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        yield app_factory(via_proxy, **overrides), proxy
    finally:
        proxy.close()


def _statuses(app) -> dict[str, list[tuple[str, str]]]:
    statuses: dict[str, list[tuple[str, str]]] = {}
    for row in rows_of(app):
        statuses.setdefault(row["user_id"], []).append((row["role"], row["status"]))
    return statuses


def _usage(app) -> tuple | None:
    rows = all_rows(app)["api_key_usage"]
    return rows[0][2:7] if rows else None


def test_with_keys_required_an_outage_answers_503_not_401(postgres_url, app_factory, upstream):
    """The key lookup is the first thing to need the database: an outage must not read as
    a bad key (401), nor as our failure (500)."""
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


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_response_answered_while_the_database_is_gone_can_be_retrieved_and_continued_once_it_is_back(
    postgres_url, app_factory, upstream, stream
):
    """/v1/responses: the response's own row waits in the journal behind its exchange's
    ending, so once PostgreSQL is back the response is retrievable by its id and a
    follow-up with previous_response_id gets its history (the row used to be lost)."""
    with _proxied_app(postgres_url, app_factory) as (app, proxy):
        client = app.test_client()
        upstream.on_request = lambda _received: proxy.cut()  # after unit of work 1
        ask = {"model": "fake-model", "input": "remember the number 42", "stream": stream}
        answered = client.post("/v1/responses", json=ask)
        upstream.on_request = None

        assert answered.status_code == 200
        if stream:
            completed = [json.loads(data) for name, data in sse_events(answered.text.splitlines())][-1]
            assert completed["type"] == "response.completed"
            body = completed["response"]
        else:
            body = answered.get_json()
        assert body["status"] == "completed"
        kinds = [
            json.loads(line).get("kind", "ending") for line in Path(app.config["JOURNAL_PATH"]).read_text().splitlines()
        ]
        assert kinds == ["ending", "response"]

        proxy.restore()
        assert poll_until(lambda: client.get(f"/v1/responses/{body['id']}").status_code == 200)
        assert client.get(f"/v1/responses/{body['id']}").get_json() == body
        follow_up = client.post(
            "/v1/responses", json={"model": "fake-model", "input": "which number?", "previous_response_id": body["id"]}
        )
        assert follow_up.status_code == 200
        sent = upstream.chat_requests()[-1]["messages"]
        assert [(m["role"], m["content"]) for m in sent] == [
            ("user", "remember the number 42"),
            ("assistant", "echo: remember the number 42"),
            ("user", "which number?"),
        ]
