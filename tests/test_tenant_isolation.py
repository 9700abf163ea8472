"""A conversation belongs to the client key that created it.

Key B using key A's user_id can neither read, continue, list nor delete A's conversation:
each key has its own conversations, so B's "alice" is a different one from A's.
"""

from __future__ import annotations

import json

import pytest
from support import bearer, create_client_key, rows_of


@pytest.fixture
def tenants(make_app):
    """An app with keys required, key A's conversation 'alice' (two exchanges), and key B."""
    app = make_app(REQUIRE_API_KEY=True)
    key_a, key_b = create_client_key(app, "tenant-a"), create_client_key(app, "tenant-b")
    client = app.test_client()
    for prompt in ("A's secret plan", "A's second message"):
        response = client.post("/openai-completion", json={"prompt": prompt, "user_id": "alice"}, headers=bearer(key_a))
        assert response.status_code == 200
    return app, client, bearer(key_a), bearer(key_b)


def _contents(app, user_id="alice"):
    return [row["content"] for row in rows_of(app, user_id)]


def test_another_key_cannot_read_the_conversation(tenants):
    app, client, a, b = tenants
    assert client.get("/conversations/alice", headers=b).status_code == 404
    assert client.get("/conversations/alice", headers=b).get_json() == {"error": "Conversation not found"}
    own = client.get("/conversations/alice", headers=a)
    assert own.status_code == 200
    assert [m["content"] for m in own.get_json()["messages"] if m["role"] == "user"] == [
        "A's secret plan",
        "A's second message",
    ]


def test_another_key_cannot_read_its_usage(tenants):
    _, client, a, b = tenants
    assert client.get("/conversations/alice/usage", headers=b).status_code == 404
    assert client.get("/conversations/alice/usage", headers=a).get_json()["exchanges"]["completed"] == 2


def test_another_key_cannot_continue_it_on_the_chat_routes(tenants, upstream):
    app, client, a, b = tenants
    before = _contents(app)
    upstream.reset()

    answered = client.post("/openai-completion", json={"prompt": "B here", "user_id": "alice"}, headers=b)
    payload = {"messages": [{"role": "user", "content": "B again"}], "user_id": "alice"}
    assert answered.status_code == 200
    assert client.post("/process-payload/", json=payload, headers=b).status_code == 200

    sent = upstream.chat_requests()
    # B's requests reached the model with none of A's history, only B's own.
    assert [m["content"] for m in sent[0]["messages"]] == ["B here"]
    assert "A's" not in str(sent[1]["messages"])
    # A's conversation is untouched, and A's next request sees none of B's turns.
    b_view = client.get("/conversations/alice", headers=b).get_json()["messages"]
    assert [m["content"] for m in b_view if m["role"] == "user"] == ["B here", "B again"]
    a_view = client.get("/conversations/alice", headers=a).get_json()["messages"]
    assert [m["content"] for m in a_view] == before
    upstream.reset()
    assert (
        client.post("/openai-completion", json={"prompt": "A back", "user_id": "alice"}, headers=a).status_code == 200
    )
    assert "B " not in str(upstream.chat_requests()[0]["messages"])
    assert len(upstream.chat_requests()[0]["messages"]) == 5  # A's two exchanges and the new turn


def test_another_key_cannot_continue_it_through_the_openai_route(tenants, upstream):
    app, client, a, b = tenants
    upstream.reset()
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "B via v1"}]}
    response = client.post("/v1/chat/completions", json=body, headers={**b, "X-Conversation-Id": "alice"})
    assert response.status_code == 200
    assert response.headers["X-Conversation-Id"] == "alice"
    assert [m["content"] for m in upstream.chat_requests()[0]["messages"]] == ["B via v1"]
    assert "B via v1" not in str(client.get("/conversations/alice", headers=a).get_json())


def test_another_key_does_not_see_it_listed(tenants):
    _, client, a, b = tenants
    assert client.post("/openai-completion", json={"prompt": "mine", "user_id": "bob"}, headers=b).status_code == 200

    listed_b = client.get("/conversations", headers=b).get_json()
    assert [(c["user_id"], c["messages"]) for c in listed_b["conversations"]] == [("bob", 2)]
    assert listed_b["next_cursor"] is None
    listed_a = client.get("/conversations", headers=a).get_json()
    assert [(c["user_id"], c["messages"]) for c in listed_a["conversations"]] == [("alice", 4)]


def test_another_key_cannot_delete_it(tenants):
    app, client, a, b = tenants
    before = _contents(app)
    refused = client.delete("/conversations/alice", headers=b)
    assert refused.status_code == 404
    assert _contents(app) == before
    assert client.delete("/conversations/alice", headers=a).status_code == 204
    assert rows_of(app, "alice") == []


def test_deleting_ones_own_leaves_the_other_keys_conversation_of_the_same_id(tenants):
    app, client, a, b = tenants
    assert (
        client.post("/openai-completion", json={"prompt": "B's alice", "user_id": "alice"}, headers=b).status_code
        == 200
    )
    assert client.delete("/conversations/alice", headers=b).status_code == 204
    assert client.get("/conversations/alice", headers=b).status_code == 404
    assert len(client.get("/conversations/alice", headers=a).get_json()["messages"]) == 4


def test_listing_pages_through_a_keys_conversations_by_user_id(make_app):
    app = make_app(REQUIRE_API_KEY=True)
    key, other = bearer(create_client_key(app, "lister")), bearer(create_client_key(app, "other"))
    client = app.test_client()
    for user_id in ("carol", "alice", "bob"):
        assert (
            client.post("/openai-completion", json={"prompt": "hi", "user_id": user_id}, headers=key).status_code == 200
        )
    assert (
        client.post("/openai-completion", json={"prompt": "hi", "user_id": "aaron"}, headers=other).status_code == 200
    )

    first = client.get("/conversations?limit=2", headers=key).get_json()
    assert [c["user_id"] for c in first["conversations"]] == ["alice", "bob"]
    assert first["next_cursor"] == "bob"
    second = client.get(f"/conversations?limit=2&cursor={first['next_cursor']}", headers=key).get_json()
    assert [c["user_id"] for c in second["conversations"]] == ["carol"]
    assert second["next_cursor"] is None
    assert all(c["messages"] == 2 and c["last_message_at"].endswith("+00:00") for c in first["conversations"])
    bad = client.get("/conversations?limit=0", headers=key)
    assert bad.status_code == 400 and bad.get_json()["details"][0]["field"] == "limit"


def test_keyless_conversations_are_not_any_keys(make_app):
    """Rows written with keys off (api_key_id NULL) stay out of every key's reach."""
    open_app = make_app(REQUIRE_API_KEY=False)
    assert (
        open_app.test_client()
        .post("/openai-completion", json={"prompt": "before keys", "user_id": "alice"})
        .status_code
        == 200
    )
    keyed = make_app(REQUIRE_API_KEY=True)
    key = bearer(create_client_key(keyed))
    client = keyed.test_client()
    assert client.get("/conversations/alice", headers=key).status_code == 404
    assert client.get("/conversations", headers=key).get_json()["conversations"] == []
    assert len(rows_of(keyed, "alice")) == 2


def test_operators_cli_sees_every_keys_conversation_and_can_narrow_to_one(tenants):
    app, client, a, b = tenants
    assert (
        client.post("/openai-completion", json={"prompt": "B's alice", "user_id": "alice"}, headers=b).status_code
        == 200
    )
    runner = app.test_cli_runner()
    everyone = runner.invoke(args=["conversation", "show", "alice"])
    assert everyone.exit_code == 0
    assert "A's secret plan" in everyone.output and "B's alice" in everyone.output
    listed = runner.invoke(args=["keys", "list", "--json"]).stdout.splitlines()
    prefixes = {json.loads(line)["name"]: json.loads(line)["prefix"] for line in listed}
    a_prefix, prefix_b = prefixes["tenant-a"], prefixes["tenant-b"]
    only_b = runner.invoke(args=["conversation", "show", "alice", "--key", prefix_b])
    assert "B's alice" in only_b.output and "A's" not in only_b.output
    erased = runner.invoke(args=["conversation", "delete", "alice", "--key", a_prefix, "--yes"])
    assert erased.exit_code == 0 and "Deleted 4 message rows" in erased.output
    assert _contents(app) == ["B's alice", rows_of(app, "alice")[1]["content"]]
    exported = [
        json.loads(line) for line in runner.invoke(args=["conversation", "export", "alice"]).stdout.splitlines()
    ]
    assert {row["content"] for row in exported} == set(_contents(app))
    assert len({row["api_key_id"] for row in exported}) == 1 and exported[0]["api_key_id"] is not None
    unknown = runner.invoke(args=["conversation", "show", "alice", "--key", "gw_nosuch"])
    assert unknown.exit_code == 2 and "no key with prefix 'gw_nosuch'" in unknown.output
