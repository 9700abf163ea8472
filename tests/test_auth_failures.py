"""Failed authentication is limited per address: over AUTH_FAILURE_LIMIT wrong keys, an
address is answered 429 before any database lookup, and other addresses are unaffected."""

from __future__ import annotations

import sqlalchemy as sa
from support import bearer, create_client_key

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

    # A right key from another address is served; the guesser's valid key is refused too,
    # unlooked-up, until its window ends.
    assert client.get("/conversations", headers=bearer(key), environ_base=NEIGHBOUR).status_code == 200
    assert client.get("/conversations", headers=bearer(key), environ_base=GUESSER).status_code == 429


def test_successes_and_missing_keys_do_not_count(make_app):
    app = make_app(REQUIRE_API_KEY=True, RATELIMIT_ENABLED=True, AUTH_FAILURE_LIMIT="2 per minute")
    key = create_client_key(app)
    client = app.test_client()
    for _ in range(5):
        assert client.get("/conversations", headers=bearer(key), environ_base=GUESSER).status_code == 200
        assert client.get("/conversations", environ_base=GUESSER).status_code == 401
    assert client.get("/conversations", headers=WRONG, environ_base=GUESSER).status_code == 401
