"""Client API keys: the CLI that issues them, Bearer authentication, and revocation."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3

import openai
import pytest
import requests
from support import (
    COMPACTION_KEY,
    LiveServer,
    Served,
    all_rows,
    bearer,
    create_client_key,
    rows_of,
    run_flask,
    service_env,
)

from models import ApiKey
from services.client_keys import hash_key

PUBLIC_PATHS = ["/healthz", "/readyz", "/metrics", "/openapi.json"]


@pytest.fixture
def keyed_app(make_app):
    return make_app(REQUIRE_API_KEY=True)


def test_keys_create_prints_the_key_once_and_stores_only_its_hash(keyed_app):
    result = keyed_app.test_cli_runner().invoke(
        args=["keys", "create", "--name", "acme", "--rate", "100 per minute", "--daily-tokens", "5000"]
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("gw_") and len(key) == 46
    assert "cannot be shown again" in result.stderr

    with keyed_app.app_context():
        from extensions import db

        stored = db.session.scalars(db.select(ApiKey)).one()
        assert (stored.name, stored.rate_limit, stored.daily_tokens) == ("acme", "100 per minute", 5000)
        assert stored.prefix == key[:12]
        assert stored.key_hash == hash_key(key)
    assert not any(key in str(value) for row in all_rows(keyed_app)["api_keys"] for value in row)

    listed = keyed_app.test_cli_runner().invoke(args=["keys", "list"])
    assert listed.exit_code == 0
    assert key[:12] in listed.output and "acme" in listed.output and "active" in listed.output
    assert key not in listed.output
    as_json = [
        json.loads(line)
        for line in keyed_app.test_cli_runner().invoke(args=["keys", "list", "--json"]).stdout.splitlines()
    ]
    assert [(k["prefix"], k["rate_limit"], k["daily_tokens"], k["revoked_at"]) for k in as_json] == [
        (key[:12], "100 per minute", 5000, None)
    ]


def test_each_created_key_is_different(keyed_app):
    keys = {create_client_key(keyed_app, f"k{i}") for i in range(5)}
    assert len(keys) == 5
    assert len({k[:12] for k in keys}) == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--rate", "lots"], "is not a rate limit"),
        (["--daily-tokens", "0"], "0 is not in the range x>=1"),
        (["--daily-tokens", "many"], "'many' is not a valid integer"),
    ],
)
def test_keys_create_rejects_bad_options_and_stores_nothing(keyed_app, options, message):
    result = keyed_app.test_cli_runner().invoke(args=["keys", "create", "--name", "acme", *options])
    assert result.exit_code == 2
    assert message in result.output
    assert all_rows(keyed_app)["api_keys"] == []


def test_a_route_without_a_key_answers_401_and_records_nothing(keyed_app, upstream):
    client = keyed_app.test_client()
    response = client.post("/openai-completion", json={"prompt": "hi", "user_id": "alice"})
    assert response.status_code == 401
    assert response.get_json() == {
        "error": "An API key is required: send it as 'Authorization: Bearer <key>'",
        "code": "missing_api_key",
    }
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert rows_of(keyed_app) == []
    assert upstream.chat_requests() == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer gw_" + "x" * 43,  # key-shaped, never issued
        "Bearer sk-notours",
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer ",
        "gw_" + "x" * 43,  # no scheme
    ],
)
def test_a_bad_key_answers_401_on_every_protected_route(keyed_app, authorization):
    create_client_key(keyed_app)  # a real key exists; the one presented is not it
    client = keyed_app.test_client()
    headers = {"Authorization": authorization}
    requests = [
        client.post("/openai-completion", json={"prompt": "hi"}, headers=headers),
        client.post("/process-payload/", json={"messages": [{"role": "user", "content": "hi"}]}, headers=headers),
        client.get("/conversations", headers=headers),
        client.get("/conversations/alice", headers=headers),
        client.get("/conversations/alice/usage", headers=headers),
        client.delete("/conversations/alice", headers=headers),
        client.get("/v1/models", headers=headers),
    ]
    for response in requests:
        assert response.status_code == 401, response.request.path
        body = response.get_json()
        # OpenAI's error shape under /v1, so its SDKs raise AuthenticationError.
        code = body["error"]["code"] if response.request.path.startswith("/v1/") else body["code"]
        assert code in ("missing_api_key", "invalid_api_key")
        presented = authorization.rpartition(" ")[2]
        assert not presented or presented not in response.get_data(as_text=True)
    assert rows_of(keyed_app) == []


def test_health_metrics_and_docs_need_no_key(keyed_app):
    client = keyed_app.test_client()
    for path in PUBLIC_PATHS:
        assert client.get(path).status_code == 200, path
    assert client.get("/docs", follow_redirects=True).status_code == 200


def test_a_valid_key_is_served_and_its_conversation_recorded(keyed_app):
    key = create_client_key(keyed_app)
    client = keyed_app.test_client()
    response = client.post("/openai-completion", json={"prompt": "hi", "user_id": "alice"}, headers=bearer(key))
    assert response.status_code == 200
    assert client.get("/conversations/alice", headers=bearer(key)).status_code == 200
    assert [r["role"] for r in rows_of(keyed_app, "alice")] == ["user", "assistant"]


def test_the_openai_sdk_gets_its_authentication_error_and_works_with_a_key(keyed_app):
    key = create_client_key(keyed_app)
    server = LiveServer(keyed_app)
    try:
        wrong = openai.OpenAI(api_key="gw_" + "y" * 43, base_url=server.url + "/v1", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as raised:
            wrong.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
        assert raised.value.status_code == 401
        assert raised.value.body["code"] == "invalid_api_key"
        wrong.close()

        right = openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0)
        reply = right.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content
        assert [m.id for m in right.models.list()] == ["fake-model"]
        right.close()
    finally:
        server.stop()


def test_a_revoked_key_is_refused_from_the_next_request(keyed_app):
    key = create_client_key(keyed_app, "leaver")
    other = create_client_key(keyed_app, "stayer")
    client = keyed_app.test_client()
    assert client.get("/conversations", headers=bearer(key)).status_code == 200

    result = keyed_app.test_cli_runner().invoke(args=["keys", "revoke", key[:12]])
    assert result.exit_code == 0, result.output
    assert f"Revoked key {key[:12]}" in result.output

    refused = client.post("/openai-completion", json={"prompt": "still there?"}, headers=bearer(key))
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "Invalid or revoked API key"
    assert client.get("/conversations", headers=bearer(other)).status_code == 200
    listed = keyed_app.test_cli_runner().invoke(args=["keys", "list"]).output
    assert "revoked" in [line for line in listed.splitlines() if line.startswith(key[:12])][0]


def test_revoking_an_unknown_prefix_fails(keyed_app):
    result = keyed_app.test_cli_runner().invoke(args=["keys", "revoke", "gw_nosuchkey"])
    assert result.exit_code == 1
    assert "No key with prefix 'gw_nosuchkey'" in result.output


def test_keys_off_ignore_authorization_so_the_documented_examples_work(make_app):
    app = make_app(REQUIRE_API_KEY=False)
    client = app.test_client()
    # The OpenAI SDK always sends some key; in keyless mode it does not matter which.
    for headers in ({}, {"Authorization": "Bearer anything"}):
        assert (
            client.post("/openai-completion", json={"prompt": "hi", "user_id": "dev"}, headers=headers).status_code
            == 200
        )
    assert len(rows_of(app, "dev")) == 4


def test_require_api_key_follows_app_env_unless_set(app_factory, database_url, caplog):
    assert app_factory(database_url, APP_ENV="production").config["REQUIRE_API_KEY"] is True
    assert app_factory(database_url, APP_ENV="development").config["REQUIRE_API_KEY"] is False
    with caplog.at_level(logging.WARNING):
        open_production = app_factory(database_url, APP_ENV="production", REQUIRE_API_KEY=False)
    assert open_production.config["REQUIRE_API_KEY"] is False
    assert "REQUIRE_API_KEY=false in production" in caplog.text


def test_on_sqlite_a_key_lookup_and_a_read_do_not_wait_for_a_writer(app_factory, sqlite_template, tmp_path):
    """Readers begin deferred: in WAL mode they read while a writer holds the lock, where a
    BEGIN IMMEDIATE would queue every authenticated request behind every write."""
    path = tmp_path / "chat_history.db"
    shutil.copy(sqlite_template, path)
    app = app_factory(f"sqlite:///{path}", REQUIRE_API_KEY=True)
    key = bearer(create_client_key(app))
    client = app.test_client()
    assert client.post("/openai-completion", json={"prompt": "hi", "user_id": "alice"}, headers=key).status_code == 200

    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process is mid-write and holds the lock
    writer.execute("DELETE FROM messages WHERE user_id = 'nobody'")
    try:
        read = client.get("/conversations/alice", headers=key)
        listed = client.get("/conversations", headers=key)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert read.status_code == 200 and len(read.get_json()["messages"]) == 2
    assert [c["user_id"] for c in listed.get_json()["conversations"]] == ["alice"]


def test_a_revocation_reaches_every_gunicorn_worker_at_once(tmp_path, upstream):
    """No worker caches keys: revoked from the CLI, refused by whichever process answers."""
    env = service_env(
        tmp_path,
        APP_ENV="production",
        OPENAI_API_KEY="sk-" + "serve" * 5,
        OPENAI_BASE_URL=upstream.base_url,
        COMPACTION_KEY=COMPACTION_KEY,  # production needs one
        WEB_CONCURRENCY="3",
    )
    served = Served(env)  # migrates first
    try:
        served.wait_for("LLM upstream: OpenAI at", count=3)

        def flask(*args: str) -> str:
            done = run_flask(env, *args)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        key = flask("keys", "create", "--name", "roaming")

        def statuses() -> list[int]:
            # A fresh connection per request, so the kernel hands them to any of the workers.
            return [
                requests.get(served.url + "/conversations", headers=bearer(key), timeout=10).status_code
                for _ in range(12)
            ]

        assert statuses() == [200] * 12
        flask("keys", "revoke", key[:12])
        assert statuses() == [401] * 12
        answered_by = {line["pid"] for line in served.request_lines() if line["route"] == "/conversations"}
        assert len(answered_by) >= 2, "the requests were not spread over several workers"
    finally:
        served.stop()
