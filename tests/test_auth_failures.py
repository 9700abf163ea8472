"""Failed authentication is limited per address: over AUTH_FAILURE_LIMIT wrong keys, an
address is answered 429 before any database lookup, and other addresses are unaffected. A
valid key from that address is still served (behind NAT or a proxy, one guesser must not
lock out a whole office): each process keeps the set of live keys' hashes, and only a key in
it earns a lookup, which checks revocation."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from support import bearer, create_client_key, poll_until, run_flask, service_env

from extensions import db

WRONG = bearer("gw_" + "x" * 43)
GUESSER = {"REMOTE_ADDR": "192.0.2.7"}
NEIGHBOUR = {"REMOTE_ADDR": "192.0.2.8"}


def _statements(app):
    """A list that fills with every SQL statement the app's engine runs from now on."""
    seen: list[str] = []
    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_an_address_over_the_limit_is_refused_before_any_lookup(make_app):
    app = make_app(REQUIRE_API_KEY=True, RATELIMIT_ENABLED=True, AUTH_FAILURE_LIMIT="3 per minute")
    key = create_client_key(app)
    client = app.test_client()
    answers = [client.get("/conversations", headers=WRONG, environ_base=GUESSER) for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 401]

    statements = _statements(app)
    refused = client.get("/conversations", headers=WRONG, environ_base=GUESSER)
    assert refused.status_code == 429
    assert refused.get_json()["code"] == "too_many_failed_attempts"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert statements == []  # no key lookup, no database work at all

    # A right key is served from another address, and from the guesser's too.
    assert client.get("/conversations", headers=bearer(key), environ_base=NEIGHBOUR).status_code == 200
    assert client.get("/conversations", headers=bearer(key), environ_base=GUESSER).status_code == 200


def test_successes_and_missing_keys_do_not_count(make_app):
    app = make_app(REQUIRE_API_KEY=True, RATELIMIT_ENABLED=True, AUTH_FAILURE_LIMIT="2 per minute")
    key = create_client_key(app)
    client = app.test_client()
    for _ in range(5):
        assert client.get("/conversations", headers=bearer(key), environ_base=GUESSER).status_code == 200
        assert client.get("/conversations", environ_base=GUESSER).status_code == 401
    assert client.get("/conversations", headers=WRONG, environ_base=GUESSER).status_code == 401


def _guess_past_the_limit(client, count: int = 21) -> list[int]:
    """`count` wrong keys from the guesser (the default limit is 20 a minute): their statuses."""
    return [client.get("/conversations", headers=WRONG, environ_base=GUESSER).status_code for _ in range(count)]


@pytest.fixture(params=["memory", "redis"])
def limited_app(request, make_app):
    """An app with keys on and the default failure limit, counting in memory or in Redis."""
    storage = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    return make_app(REQUIRE_API_KEY=True, RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=storage)


def test_a_valid_key_is_served_from_an_address_over_the_limit_and_a_guess_costs_no_lookup(limited_app):
    key = create_client_key(limited_app)
    client = limited_app.test_client()
    assert _guess_past_the_limit(client) == [401] * 20 + [429]

    statements = _statements(limited_app)
    served = client.get("/conversations", headers=bearer(key), environ_base=GUESSER)
    assert served.status_code == 200
    assert any("api_keys" in statement for statement in statements)  # looked up: revocation checked

    statements.clear()
    for guess in ("gw_" + "y" * 43, "gw_short", "sk-not-ours", key[:-1] + ("A" if key[-1] != "A" else "B")):
        refused = client.get("/conversations", headers=bearer(guess), environ_base=GUESSER)
        assert refused.status_code == 429
        assert refused.get_json()["code"] == "too_many_failed_attempts"
    assert statements == []  # no key lookup, no database work at all


def test_a_key_revoked_elsewhere_is_refused_from_an_address_over_the_limit(make_app, database_url, tmp_path):
    # The set is not read again during the test (a slow `flask keys revoke` outlasted the
    # default 10 s under load): only the lookup can see the revocation.
    app = make_app(REQUIRE_API_KEY=True, RATELIMIT_ENABLED=True, AUTH_KEY_REFRESH_SECONDS=3600)
    key = create_client_key(app)
    client = app.test_client()
    assert client.get("/conversations", headers=bearer(key), environ_base=GUESSER).status_code == 200
    _guess_past_the_limit(client)

    revoked = run_flask(service_env(tmp_path, DATABASE_URL=database_url), "keys", "revoke", key[:12])
    assert revoked.returncode == 0, revoked.stderr
    # Known to this process as live, so looked up: the lookup sees the revocation at once.
    assert client.get("/conversations", headers=bearer(key), environ_base=GUESSER).status_code == 401
    statements = _statements(app)
    assert client.get("/conversations", headers=bearer(key), environ_base=GUESSER).status_code == 429
    assert statements == []  # and forgotten: the next try is a guess like any other


def test_a_key_created_in_another_process_is_served_from_an_address_over_the_limit(make_app, database_url, tmp_path):
    app = make_app(REQUIRE_API_KEY=True, RATELIMIT_ENABLED=True, AUTH_KEY_REFRESH_SECONDS=0.5)
    client = app.test_client()
    assert _guess_past_the_limit(client)[-1] == 429  # this process has read its set of live keys

    created = run_flask(service_env(tmp_path, DATABASE_URL=database_url), "keys", "create", "--name", "office")
    assert created.returncode == 0, created.stderr
    key = next(word for word in created.stdout.split() if word.startswith("gw_") and len(word) > 40)

    # Unknown to this process until its set is read again (at most AUTH_KEY_REFRESH_SECONDS).
    assert poll_until(
        lambda: client.get("/conversations", headers=bearer(key), environ_base=GUESSER).status_code == 200, 10
    )
    assert client.get("/conversations", headers=WRONG, environ_base=GUESSER).status_code == 429
