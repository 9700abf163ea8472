"""Which response headers appear where: each header a client library or browser acts on."""

from __future__ import annotations

import openai
import pytest
from fake_upstream import Status
from support import LiveServer


def test_every_answer_says_nosniff(make_app):
    app = make_app(REQUIRE_API_KEY=True)
    client = app.test_client()
    answers = [client.get("/healthz"), client.get("/conversations"), client.post("/openai-completion", data="x")]
    assert [a.headers["X-Content-Type-Options"] for a in answers] == ["nosniff"] * 3


ASK = {"prompt": "hi", "user_id": "headers"}
_USER = {"role": "user", "content": "x"}


def _answers(app, upstream):
    """One answer of each status class a client meets, by name."""
    client = app.test_client()
    answers = {
        "200": client.post("/openai-completion", json=ASK),
        "200-stream": client.post("/openai-completion", json={**ASK, "stream": True}),
        "200-v1": client.post("/v1/chat/completions", json={"model": "fake-model", "messages": [_USER]}),
        "204": client.delete("/conversations/headers"),
        "400": client.post("/openai-completion", json={}),
        "404": client.get("/conversations/nobody"),
    }
    answers["200-stream"].get_data()  # read the stream to its end: an unread one ends inside a later test
    upstream.enqueue(Status(500))
    answers["502"] = client.post("/openai-completion", json=ASK)
    upstream.enqueue(Status(503, headers={"Retry-After": "7"}))
    answers["503"] = client.post("/openai-completion", json=ASK)
    upstream.enqueue(Status(429, headers={"Retry-After": "9"}))
    answers["429-upstream"] = client.post("/openai-completion", json=ASK)
    upstream.enqueue(Status(429))
    answers["429-upstream-bare"] = client.post("/openai-completion", json=ASK)
    answers["429"] = client.post("/openai-completion", json=ASK)  # the seventh counted: over 6 a minute
    return answers


@pytest.fixture
def answers(make_app, upstream):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_COMPLETION="6 per minute")
    return _answers(app, upstream)


def test_retry_after_only_on_429_and_503(answers):
    with_retry_after = {name for name, answer in answers.items() if "Retry-After" in answer.headers}
    assert with_retry_after == {"429", "429-upstream", "503"}
    assert answers["503"].headers["Retry-After"] == "7"  # the upstream's own value, not the window's
    assert answers["429-upstream"].headers["Retry-After"] == "9"
    assert 0 < int(answers["429"].headers["Retry-After"]) <= 60  # the limit window's real reset


def test_an_upstream_rate_limit_is_a_429_told_from_our_own(answers):
    """Issue 21, 12: the upstream's 429 reaches the client as OpenAI's 429 (the SDK's
    RateLimitError), marked X-Upstream-Error; our own limiter's 429 carries no such mark."""
    upstream_429, ours = answers["429-upstream"], answers["429"]
    assert (upstream_429.status_code, ours.status_code) == (429, 429)
    assert upstream_429.headers["X-Upstream-Error"] == "rate_limited"
    assert "X-Upstream-Error" not in ours.headers
    assert upstream_429.get_json()["code"] == "rate_limit_exceeded"
    # With none of the upstream's, none at all: our own window's reset is not the upstream's.
    bare = answers["429-upstream-bare"]
    assert (bare.status_code, bare.headers["X-Upstream-Error"]) == (429, "rate_limited")
    assert "Retry-After" not in bare.headers and bare.headers["x-should-retry"] == "false"


def test_a_failure_with_nothing_to_wait_for_tells_the_sdk_not_to_retry(answers):
    """Issue 21, 12: with no Retry-After the router has spent its attempts: x-should-retry."""
    assert answers["502"].headers["x-should-retry"] == "false"
    assert "x-should-retry" not in answers["503"].headers  # it said when: waiting helps


def test_rate_limit_headers_on_every_class(answers):
    for name, answer in answers.items():
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(answer.headers.keys()), name
        assert "X-Limiter-Retry-After" not in answer.headers, name


def test_content_type_of_every_class(answers):
    types = {name: answer.headers.get("Content-Type") for name, answer in answers.items()}
    assert types.pop("204") is None
    assert types.pop("200-stream").startswith("text/event-stream")
    assert set(types.values()) == {"application/json"}


def test_conversation_id_header_on_v1_answers_only(make_app, upstream):
    client = make_app().test_client()
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}]}
    plain = client.post("/v1/chat/completions", json=body, headers={"X-Conversation-Id": "c-1"})
    streamed = client.post("/v1/chat/completions", json={**body, "stream": True}, headers={"X-Conversation-Id": "c-1"})
    streamed.get_data()
    upstream.enqueue(Status(500))
    failed = client.post("/v1/chat/completions", json=body, headers={"X-Conversation-Id": "c-1"})
    seed = client.post("/openai-completion", json={"prompt": "x", "user_id": "c-1"})
    assert (plain.headers["X-Conversation-Id"], streamed.headers["X-Conversation-Id"]) == ("c-1", "c-1")
    assert "X-Conversation-Id" not in failed.headers and "X-Conversation-Id" not in seed.headers


def test_an_upstream_failure_reaches_the_sdk_without_a_wait(make_app, upstream):
    """Before: Retry-After (the limit window's end, ~86,000 s capped by the SDK to 60) on the
    502 made the SDK sleep before each automatic retry. Now the SDK gets no Retry-After and
    its retries carry none of ours; since the router (issue 21), it makes none at all."""
    app = make_app(RATELIMIT_ENABLED=True)
    server = LiveServer(app)
    upstream.enqueue(Status(500), Status(500), Status(500))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=2)
    try:
        with pytest.raises(openai.APIStatusError) as failure:
            client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}])
        listed = client.models.with_raw_response.list()
        model = client.models.retrieve("fake-model")
    finally:
        client.close()
        server.stop()
    assert failure.value.status_code == 502
    assert "retry-after" not in failure.value.response.headers
    # x-should-retry: false (issue 21, 12): the router's attempts are not multiplied by the SDK's.
    assert failure.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.chat_requests()) == 1
    assert "retry-after" not in listed.headers  # a 200 once said Retry-After: 86217
    assert (model.id, model.object) == ("fake-model", "model")


def test_statuses_are_what_their_names_say(answers):
    assert {name: answer.status_code for name, answer in answers.items()} == {
        name: int(name.split("-")[0]) for name in answers
    }
