"""Limits per client key: rate limits counted per key, daily token budgets, and CORS."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import openai
import pytest
import requests
from fake_upstream import Reply, StreamReply
from support import LiveServer, all_rows, bearer, create_client_key, rows_of, sse_events

PROMPT = {"prompt": "hi", "user_id": "alice"}


def _keyed_app(make_app, **overrides):
    settings = {
        "REQUIRE_API_KEY": True,
        "RATELIMIT_ENABLED": True,
        "RATELIMIT_APPLICATION": "1000 per hour",
        "RATELIMIT_COMPLETION": "2 per minute",
    }
    settings.update(overrides)
    return make_app(**settings)


# -- rate limits ------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_each_key_has_its_own_budget_from_one_address(request, make_app, storage):
    uri = "memory://" if storage == "memory" else request.getfixturevalue("redis_url")
    app = _keyed_app(make_app, RATELIMIT_STORAGE_URI=uri)
    first, second = bearer(create_client_key(app, "first")), bearer(create_client_key(app, "second"))
    client = app.test_client()

    def post(key):
        return client.post("/openai-completion", json={"prompt": "hi"}, headers=key).status_code

    assert [post(first), post(first), post(first)] == [200, 200, 429]
    # Same address, another key: a budget of its own.
    assert [post(second), post(second), post(second)] == [200, 200, 429]


def test_a_keys_own_rate_replaces_the_defaults(make_app):
    app = _keyed_app(make_app)
    generous = bearer(create_client_key(app, "generous", "--rate", "4 per minute"))
    default = bearer(create_client_key(app, "default"))
    client = app.test_client()

    generous_answers = [client.post("/openai-completion", json=PROMPT, headers=generous) for _ in range(5)]
    assert [r.status_code for r in generous_answers] == [200, 200, 200, 200, 429]
    assert generous_answers[-1].get_json() == {"error": "Rate limit exceeded: 4 per 1 minute"}
    assert generous_answers[0].headers["X-RateLimit-Limit"] == "4"
    assert [client.post("/openai-completion", json=PROMPT, headers=default).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]


def test_a_keys_own_rate_covers_every_route_as_one_budget(make_app):
    app = _keyed_app(make_app, RATELIMIT_APPLICATION="1000 per hour")
    key = bearer(create_client_key(app, "reader", "--rate", "3 per hour"))
    client = app.test_client()
    answers = [
        client.post("/openai-completion", json=PROMPT, headers=key).status_code,
        client.get("/conversations/alice", headers=key).status_code,
        client.get("/conversations", headers=key).status_code,
        client.get("/conversations/alice/usage", headers=key).status_code,
    ]
    assert answers == [200, 200, 200, 429]


def test_a_spoofed_forwarded_for_does_not_escape_a_keys_limit(make_app):
    app = _keyed_app(make_app)
    key = bearer(create_client_key(app))
    client = app.test_client()
    statuses = [
        client.post("/openai-completion", json=PROMPT, headers={**key, "X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_one_keys_limit_is_shared_by_two_hosts_on_redis(make_app, redis_url):
    hosts = [_keyed_app(make_app, RATELIMIT_STORAGE_URI=redis_url) for _ in range(2)]
    key = bearer(create_client_key(hosts[0]))
    statuses = [
        hosts[i % 2].test_client().post("/openai-completion", json=PROMPT, headers=key).status_code for i in range(4)
    ]
    assert statuses == [200, 200, 429, 429]


def test_a_rejected_key_is_not_counted_against_anyone(make_app):
    app = _keyed_app(make_app)
    key = bearer(create_client_key(app))
    client = app.test_client()
    for _ in range(5):
        assert client.post("/openai-completion", json=PROMPT, headers=bearer("gw_" + "z" * 43)).status_code == 401
    assert client.post("/openai-completion", json=PROMPT, headers=key).status_code == 200


# -- daily token budgets -----------------------------------------------------------------


def _budget_app(make_app, daily_tokens: int):
    # A request without max_tokens reserves its estimated prompt and 5 completion tokens.
    app = make_app(REQUIRE_API_KEY=True, BUDGET_DEFAULT_MAX_TOKENS=5)
    key = create_client_key(app, "metered", "--daily-tokens", str(daily_tokens))
    return app, bearer(key)


def test_a_spent_budget_answers_429_before_the_upstream_is_called(make_app, upstream):
    app, key = _budget_app(make_app, daily_tokens=40)  # the fake upstream spends 18 per call
    client = app.test_client()
    # Each reserves its worst case first: "hi" (5) and 5, then with the first exchange as history 21.
    assert client.post("/openai-completion", json=PROMPT, headers=key).status_code == 200  # 18 used
    assert client.post("/openai-completion", json=PROMPT, headers=key).status_code == 200  # 36 used
    calls, rows = len(upstream.chat_requests()), rows_of(app)

    refused = client.post("/openai-completion", json={"prompt": "one more", "user_id": "alice"}, headers=key)

    assert refused.status_code == 429
    body = refused.get_json()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert body["code"] == "daily_token_budget_exceeded"
    # Its worst case: two exchanges of history (22), "one more" (6), and 5 completion tokens.
    assert body["budget"] == {
        "daily_tokens": 40,
        "used_today": 36,
        "reserved_today": 0,
        "request_worst_case": 33,
        "resets_at": f"{tomorrow}T00:00:00+00:00",
    }
    assert body["error"] == (
        "Daily token budget of 40 tokens for this API key cannot cover this request: 36 used and 0 reserved "
        "by requests in progress today, and this request may take up to 33 (its prompt and max_tokens); "
        f"it resets at {tomorrow}T00:00:00+00:00"
    )
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    assert len(upstream.chat_requests()) == calls
    assert rows_of(app) == rows


def test_the_budget_counts_the_upstreams_recorded_usage(make_app, upstream):
    app, key = _budget_app(make_app, daily_tokens=1000)
    client = app.test_client()
    upstream.enqueue(Reply(prompt_tokens=100, completion_tokens=50), Reply(prompt_tokens=300, completion_tokens=20))
    for _ in range(2):
        assert client.post("/openai-completion", json=PROMPT, headers=key).status_code == 200
    (usage,) = all_rows(app)["api_key_usage"]
    # api_key_id, day, requests, prompt, completion, total, reserved (none left once both ended)
    assert usage[2:7] == (2, 400, 70, 470, 0)
    listed = json.loads(app.test_cli_runner().invoke(args=["keys", "list", "--json"]).stdout)
    assert (listed["tokens_today"], listed["requests_today"]) == (470, 2)


def test_a_spent_budget_refuses_streams_and_every_other_chat_route_too(make_app, upstream):
    app, key = _budget_app(make_app, daily_tokens=10)
    client = app.test_client()
    assert client.post("/openai-completion", json=PROMPT, headers=key).status_code == 200
    calls = len(upstream.chat_requests())

    streamed = client.post("/openai-completion", json={**PROMPT, "stream": True}, headers=key)
    assert streamed.status_code == 429 and streamed.mimetype == "application/json"

    server = LiveServer(app)
    try:
        sdk = openai.OpenAI(api_key=key["Authorization"][7:], base_url=server.url + "/v1", max_retries=0)
        with pytest.raises(openai.RateLimitError) as raised:
            sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
        assert raised.value.body["code"] == "daily_token_budget_exceeded"
        with pytest.raises(openai.RateLimitError) as raised:
            sdk.responses.create(model="fake-model", input="hi")
        assert raised.value.body["code"] == "daily_token_budget_exceeded"
        sdk.close()
    finally:
        server.stop()
    payload = client.post("/process-payload", json={"messages": [{"role": "user", "content": "hi"}]}, headers=key)
    assert payload.status_code == 429
    assert len(upstream.chat_requests()) == calls


def test_erasing_conversations_does_not_give_the_budget_back(make_app):
    app, key = _budget_app(make_app, daily_tokens=18)
    client = app.test_client()
    assert client.post("/openai-completion", json=PROMPT, headers=key).status_code == 200
    assert client.delete("/conversations/alice", headers=key).status_code == 204
    assert client.post("/openai-completion", json=PROMPT, headers=key).status_code == 429


def test_a_stream_cut_off_before_its_usage_is_charged_by_estimate(make_app, upstream):
    app = make_app(REQUIRE_API_KEY=True)
    key = bearer(create_client_key(app, "streamer", "--daily-tokens", "100000"))
    # The stream breaks after two pieces: no usage chunk ever arrives.
    upstream.enqueue(StreamReply(pieces=["abcd" * 10, "efgh" * 10, "never sent"], break_after=2))
    server = LiveServer(app)
    try:
        with requests.post(
            server.url + "/openai-completion", json={**PROMPT, "stream": True}, headers=key, stream=True, timeout=30
        ) as response:
            assert response.status_code == 200
            events = sse_events(response.iter_lines(decode_unicode=True))
        assert server.wait_idle()
    finally:
        server.stop()
    assert events[-1][0] == "error"
    (usage,) = all_rows(app)["api_key_usage"]
    # Estimated: the prompt (4 framing + 1 token for "hi") and 80 bytes of reply (20 tokens).
    assert usage[2:7] == (1, 5, 20, 25, 0)


def test_keys_without_a_budget_are_never_refused_for_tokens(make_app, upstream):
    app = make_app(REQUIRE_API_KEY=True)
    key = bearer(create_client_key(app))
    upstream.enqueue(*[Reply(prompt_tokens=10**6, completion_tokens=10**6) for _ in range(3)])
    client = app.test_client()
    assert [client.post("/openai-completion", json=PROMPT, headers=key).status_code for _ in range(3)] == [200] * 3


# -- CORS ---------------------------------------------------------------------------------

ORIGIN = "https://app.example.com"


def test_no_cors_headers_unless_origins_are_configured(make_app):
    client = make_app().test_client()
    answer = client.post("/openai-completion", json=PROMPT, headers={"Origin": ORIGIN})
    assert answer.status_code == 200
    assert not any(name.lower().startswith("access-control-") for name, _ in answer.headers)
    preflight = client.options(
        "/openai-completion", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_configured_origins_get_cors_and_preflights_need_no_key_nor_budget(make_app):
    app = make_app(
        CORS_ORIGINS=[ORIGIN], REQUIRE_API_KEY=True, RATELIMIT_ENABLED=True, RATELIMIT_APPLICATION="2 per hour"
    )
    key = bearer(create_client_key(app))
    client = app.test_client()
    preflight_headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    for _ in range(3):  # more preflights than the whole budget
        preflight = client.options("/openai-completion", headers=preflight_headers)
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()

    answer = client.post("/openai-completion", json=PROMPT, headers={**key, "Origin": ORIGIN})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Conversation-Id" in answer.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in answer.headers

    stranger = client.post("/openai-completion", json=PROMPT, headers={**key, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in stranger.headers
