"""Flask-Limiter: per-route and API-wide limits, JSON 429s, in memory and on a real Redis."""

from __future__ import annotations

import pytest
from support import rows_of


def _limited_app(make_app, **overrides):
    settings = {"RATELIMIT_ENABLED": True, "RATELIMIT_APPLICATION": "1000 per hour"}
    settings.update(overrides)
    return make_app(**settings)


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_completion_route_answers_429_after_its_limit(request, make_app, upstream, storage):
    uri = "memory://" if storage == "memory" else request.getfixturevalue("redis_url")
    app = _limited_app(make_app, RATELIMIT_COMPLETION="3 per minute", RATELIMIT_STORAGE_URI=uri)
    client = app.test_client()

    statuses = [
        client.post("/openai-completion", json={"prompt": f"p{i}", "user_id": "rl"}).status_code for i in range(3)
    ]
    limited = client.post("/openai-completion", json={"prompt": "one too many", "user_id": "rl"})

    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.get_json() == {"error": "Rate limit exceeded: 3 per 1 minute"}
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Limit"] == "3"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert "X-RateLimit-Reset" in limited.headers
    # The rejected request reached neither the database nor the model.
    assert [r["content"] for r in rows_of(app, "rl") if r["role"] == "user"] == ["p0", "p1", "p2"]
    assert len(upstream.chat_requests()) == 3


def test_both_paths_of_process_payload_share_one_limit(make_app):
    client = _limited_app(make_app, RATELIMIT_COMPLETION="2 per minute").test_client()
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/process-payload", json=body).status_code == 200
    assert client.post("/process-payload/", json=body).status_code == 200
    assert client.post("/process-payload", json=body).status_code == 429


def test_each_completion_route_has_its_own_per_route_limit(make_app):
    client = _limited_app(make_app, RATELIMIT_COMPLETION="1 per minute").test_client()
    assert client.post("/openai-completion", json={"prompt": "a"}).status_code == 200
    assert client.post("/process-payload/", json={"messages": [{"role": "user", "content": "b"}]}).status_code == 200
    assert client.post("/openai-completion", json={"prompt": "c"}).status_code == 429


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_api_wide_limit_is_one_budget_across_routes(request, make_app, storage):
    uri = "memory://" if storage == "memory" else request.getfixturevalue("redis_url")
    app = _limited_app(make_app, RATELIMIT_APPLICATION="3 per hour", RATELIMIT_STORAGE_URI=uri)
    client = app.test_client()

    payload = {"messages": [{"role": "user", "content": "hi"}]}
    answers = [
        client.post("/openai-completion", json={"prompt": "1"}).status_code,
        client.post("/process-payload/", json=payload).status_code,
        client.post("/openai-completion", json={"prompt": "3"}).status_code,
        client.post("/process-payload/", json=payload).status_code,
    ]

    assert answers == [200, 200, 200, 429]


def test_limits_are_per_client_address(make_app):
    client = _limited_app(make_app, RATELIMIT_COMPLETION="1 per minute").test_client()
    first = {"REMOTE_ADDR": "10.0.0.1"}
    second = {"REMOTE_ADDR": "10.0.0.2"}
    assert client.post("/openai-completion", json={"prompt": "a"}, environ_base=first).status_code == 200
    assert client.post("/openai-completion", json={"prompt": "a"}, environ_base=first).status_code == 429
    assert client.post("/openai-completion", json={"prompt": "a"}, environ_base=second).status_code == 200


def test_limits_can_be_switched_off(make_app):
    client = make_app(RATELIMIT_ENABLED=False, RATELIMIT_COMPLETION="1 per minute").test_client()
    statuses = {client.post("/openai-completion", json={"prompt": "a"}).status_code for _ in range(3)}
    assert statuses == {200}


def test_a_spoofed_forwarded_for_does_not_escape_the_limit(make_app):
    client = _limited_app(make_app, RATELIMIT_COMPLETION="1 per minute").test_client()
    assert client.post("/openai-completion", json={"prompt": "a"}).status_code == 200
    spoofed = client.post("/openai-completion", json={"prompt": "a"}, headers={"X-Forwarded-For": "203.0.113.9"})
    assert spoofed.status_code == 429  # with TRUSTED_PROXIES=0 the header is not believed


def test_behind_one_trusted_proxy_the_forwarded_client_is_limited(make_app):
    client = _limited_app(make_app, RATELIMIT_COMPLETION="1 per minute", TRUSTED_PROXIES=1).test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.254"}

    def post(forwarded_for: str) -> int:
        headers = {"X-Forwarded-For": forwarded_for}
        return client.post("/openai-completion", json={"prompt": "a"}, headers=headers, environ_base=proxy).status_code

    assert post("198.51.100.1") == 200
    assert post("198.51.100.2") == 200  # another client behind the same proxy
    assert post("198.51.100.1") == 429
    # A client prepending a fake address is still known by the hop the proxy added.
    assert post("203.0.113.9, 198.51.100.1") == 429
