"""The console's guards, through Flask's test client on each database backend (issue 25):
off unless configured, admins made by the CLI and stored as slow hashes, client keys kept
out, CSRF on every POST, sign-in failures limited, strict headers, every action audited.
tests/test_console_browser.py drives the same pages in Chromium."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from console_support import SECRET_KEY, csrf_token
from support import all_rows, bearer, create_client_key

from app import create_app
from config import ConfigError
from extensions import db

CONSOLE = {"CONSOLE_ENABLED": True, "SECRET_KEY": SECRET_KEY}
PASSWORD = "correct horse battery staple"


@pytest.fixture
def console_app(make_app):
    return make_app(**CONSOLE)


def make_admin(app, name: str = "ops", password: str = PASSWORD) -> None:
    result = app.test_cli_runner().invoke(args=["admins", "create", name, "--password-stdin"], input=password + "\n")
    assert result.exit_code == 0, result.output


def https_client(app):
    """A test client on https:// (the session cookie is Secure)."""
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    return client


def signed_in(app, name: str = "ops", password: str = PASSWORD):
    client = https_client(app)
    token = csrf_token(client.get("/console/sign-in").text)
    answer = client.post("/console/sign-in", data={"name": name, "password": password, "csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/overview", answer.text
    return client


def audit(app) -> list[tuple]:
    with app.app_context():
        return [tuple(row) for row in db.session.execute(sa.text("SELECT actor, action, target FROM audit_log"))]


def test_the_console_is_off_unless_configured(make_app):
    assert make_app().test_client().get("/console/sign-in").status_code == 404
    assert https_client(make_app(**CONSOLE)).get("/console/sign-in").status_code == 200


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"CONSOLE_ENABLED": True}, "CONSOLE_ENABLED=true needs SECRET_KEY"),
        ({**CONSOLE, "APP_ENV": "production", "SECRET_KEY": "short", "LLM_OFFLINE": True}, "at least 32"),
        ({**CONSOLE, "CONSOLE_SIGN_IN_LIMIT": "often"}, "CONSOLE_SIGN_IN_LIMIT must be a rate limit"),
    ],
)
def test_a_console_without_a_proper_secret_key_refuses_to_start(settings, message):
    with pytest.raises(ConfigError, match=message):
        create_app({"APP_ENV": "testing", "LLM_OFFLINE": True, "SQLALCHEMY_DATABASE_URI": "sqlite://", **settings})


def test_admins_are_made_by_the_cli_and_only_a_slow_hash_is_kept(console_app):
    runner = console_app.test_cli_runner()
    made = runner.invoke(args=["admins", "create", "ops"])
    assert made.exit_code == 0, made.output
    password = made.stdout.strip()
    assert len(password) >= 20
    stored = all_rows(console_app)["admins"]
    assert password not in str(stored)
    assert stored[0][2].startswith("scrypt:")
    assert runner.invoke(args=["admins", "create", "ops"]).exit_code != 0  # the name is taken
    too_short = runner.invoke(args=["admins", "create", "ana", "--password-stdin"], input="short\n")
    assert too_short.exit_code != 0 and "at least 12" in too_short.output
    assert runner.invoke(args=["admins", "list"]).stdout.split("\t")[0] == "ops"
    signed_in(console_app, "ops", password)
    assert runner.invoke(args=["admins", "delete", "ops"]).exit_code == 0
    assert runner.invoke(args=["admins", "list"]).stdout == ""
    assert [entry[1] for entry in audit(console_app)] == ["admin.create", "console.sign_in", "admin.delete"]


def test_a_deleted_admins_session_ends(console_app):
    make_admin(console_app)
    client = signed_in(console_app)
    assert client.get("/console/keys").status_code == 200
    console_app.test_cli_runner().invoke(args=["admins", "delete", "ops"])
    assert client.get("/console/keys").headers["Location"] == "/console/sign-in"


def test_a_client_key_cannot_reach_the_console(make_app):
    app = make_app(**CONSOLE, REQUIRE_API_KEY=True)
    key = create_client_key(app)
    client = https_client(app)
    answer = client.get("/console/keys", headers=bearer(key))
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/sign-in"
    token = csrf_token(client.get("/console/sign-in").text)
    forged = client.post("/console/keys", data={"name": "via-key", "csrf_token": token}, headers=bearer(key))
    assert forged.status_code == 302 and forged.headers["Location"] == "/console/sign-in"
    assert len(all_rows(app)["api_keys"]) == 1


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(console_app):
    make_admin(console_app)
    client = signed_in(console_app)
    answer = client.post("/console/keys", data={"name": "forged"})
    assert answer.status_code == 400 and "CSRF token is missing" in answer.text
    stale = client.post("/console/keys", data={"name": "forged", "csrf_token": "not-a-token"})
    assert stale.status_code == 400
    assert all_rows(console_app)["api_keys"] == []


def test_failed_sign_ins_are_limited_per_address(make_app):
    app = make_app(**CONSOLE, RATELIMIT_ENABLED=True, CONSOLE_SIGN_IN_LIMIT="3 per minute")
    make_admin(app)
    client = https_client(app)
    token = csrf_token(client.get("/console/sign-in").text)
    for _ in range(3):
        wrong = client.post("/console/sign-in", data={"name": "ops", "password": "guess-guess!", "csrf_token": token})
        assert wrong.status_code == 401
    right = client.post("/console/sign-in", data={"name": "ops", "password": PASSWORD, "csrf_token": token})
    assert right.status_code == 429 and int(right.headers["Retry-After"]) >= 1
    assert client.get("/console/keys").headers["Location"] == "/console/sign-in"


def test_a_failed_sign_in_audits_only_a_name_that_is_an_admins(make_app):
    """A password typed into the name field is never written to the audit table."""
    app = make_app(**CONSOLE)
    make_admin(app)
    client = https_client(app)
    token = csrf_token(client.get("/console/sign-in").text)
    for name in ("ops", PASSWORD):
        wrong = client.post("/console/sign-in", data={"name": name, "password": "guess-guess!", "csrf_token": token})
        assert wrong.status_code == 401
    failed = [row[0] for row in audit(app) if row[1] == "console.sign_in_failed"]
    assert failed == ["ops", "(unknown name)"]
    assert PASSWORD not in repr(all_rows(app))


@pytest.mark.parametrize("path", ["/console", "/console/sign-in", "/console/static/console.css", "/console/keys"])
def test_every_console_answer_has_a_strict_content_security_policy(console_app, path):
    answer = https_client(console_app).get(path)
    answer.close()  # the stylesheet is a file
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in console_app.test_client().get("/healthz").headers


def test_create_limits_and_revoke_are_audited_without_the_key(console_app):
    make_admin(console_app)
    client = signed_in(console_app)
    token = csrf_token(client.get("/console/keys").text)
    created = client.post("/console/keys", data={"name": "team", "daily_tokens": "500", "csrf_token": token})
    assert created.status_code == 201
    key = created.text.split('id="new-key">')[1].split("<")[0]
    key_id = all_rows(console_app)["api_keys"][0][0]
    limits = {"rate_limit": "10 per minute", "daily_tokens": "", "csrf_token": token}
    assert client.post(f"/console/keys/{key_id}/limits", data=limits).status_code == 302
    bad = client.post(f"/console/keys/{key_id}/limits", data={**limits, "rate_limit": "lots"})
    assert "Limits not changed" in client.get(bad.headers["Location"]).text
    assert client.post(f"/console/keys/{key_id}/revoke", data={"csrf_token": token}).status_code == 302
    with console_app.app_context():
        stored = db.session.execute(sa.text("SELECT rate_limit, daily_tokens, revoked_at FROM api_keys")).one()
    assert tuple(stored[:2]) == ("10 per minute", None) and stored.revoked_at is not None
    prefix = key[:12]
    actions = [("ops", action, prefix) for action in ("key.create", "key.limits", "key.revoke")]
    assert audit(console_app)[2:] == actions  # after admin.create (the CLI) and console.sign_in
    assert key not in str(all_rows(console_app)["audit_log"])


def test_the_keys_page_shows_a_hundred_keys_and_links_to_the_next(console_app):
    for number in range(1, 103):
        create_client_key(console_app, f"team-{number:03d}")
    make_admin(console_app)
    client = signed_in(console_app)
    first = client.get("/console/keys").text
    names = re.findall(r'<td class="name">(team-\d+)</td>', first)
    assert names == [f"team-{number:03d}" for number in range(1, 101)]
    hundredth = all_rows(console_app)["api_keys"][99][0]
    assert f'href="/console/keys?after={hundredth}"' in first
    second = client.get(f"/console/keys?after={hundredth}").text
    assert re.findall(r'<td class="name">(team-\d+)</td>', second) == ["team-101", "team-102"]
    assert "Newer keys" not in second
