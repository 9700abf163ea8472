"""Every upstream failure maps to its JSON error, is recorded as failed, and never reused."""

from __future__ import annotations

import socket
import threading

import pytest
from fake_upstream import Hang, RawBody, Reply, Status
from support import UPSTREAM_KEY, rows_of

FAILURES = [
    pytest.param(Status(500, "boom"), 502, "The language model failed (HTTP 500)", id="upstream-500"),
    # An upstream's 503 (overloaded) is answered 503, its Retry-After passed on (issue 21).
    pytest.param(
        Status(503, raw_body=b"<html>down</html>"), 503, "The language model failed (HTTP 503)", id="html-503"
    ),
    pytest.param(
        RawBody(b"this is not json"), 502, "The language model sent a reply that is not valid JSON", id="not-json"
    ),
    pytest.param(
        RawBody(b'{"id": "x", "object": "chat.completion", "choices": []}'),
        502,
        "The language model sent a reply with no choices",
        id="no-choices",
    ),
    pytest.param(
        Status(401, f"Incorrect API key provided: {UPSTREAM_KEY}"),
        502,
        "The language model rejected this service's credentials; the operator must fix the API key",
        id="401",
    ),
    pytest.param(
        Status(403, "forbidden"),
        502,
        "The language model rejected this service's credentials; the operator must fix the API key",
        id="403",
    ),
    pytest.param(
        Status(400, "This model's maximum context length is 8192 tokens."),
        400,
        "The language model rejected the request: This model's maximum context length is 8192 tokens.",
        id="context-too-long",
    ),
]


@pytest.mark.parametrize(("answer", "status", "message"), FAILURES)
def test_upstream_failure_maps_to_json_error_and_is_recorded_as_failed(make_app, upstream, answer, status, message):
    app = make_app()
    client = app.test_client()
    upstream.enqueue(answer)

    response = client.post("/openai-completion", json={"prompt": "doomed", "user_id": "f-1"})

    assert response.status_code == status
    assert response.get_json() == {"error": message}
    assert UPSTREAM_KEY not in response.get_data(as_text=True)
    rows = rows_of(app, "f-1")
    assert [(r["role"], r["status"], r["error"]) for r in rows] == [("user", "failed", message)]


def test_failed_exchange_is_kept_but_never_sent_to_the_model_again(make_app, upstream):
    app = make_app()
    client = app.test_client()
    client.post("/openai-completion", json={"prompt": "kept", "user_id": "f-2"})
    upstream.enqueue(Status(500))
    assert client.post("/openai-completion", json={"prompt": "lost", "user_id": "f-2"}).status_code == 502

    assert client.post("/openai-completion", json={"prompt": "next", "user_id": "f-2"}).status_code == 200

    assert upstream.chat_requests()[-1]["messages"] == [
        {"role": "user", "content": "kept"},
        {"role": "assistant", "content": "echo: kept"},
        {"role": "user", "content": "next"},
    ]
    statuses = [(r["content"], r["status"]) for r in rows_of(app, "f-2") if r["role"] == "user"]
    assert statuses == [("kept", "completed"), ("lost", "failed"), ("next", "completed")]


def test_upstream_rate_limit_answers_429_with_its_retry_after(make_app, upstream):
    """As OpenAI answers a rate limit (issue 21, 12): a 429, the upstream's Retry-After."""
    app = make_app()
    upstream.enqueue(Status(429, "quota exceeded", headers={"Retry-After": "17"}))

    response = app.test_client().post("/openai-completion", json={"prompt": "hi", "user_id": "rl-1"})

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "17"
    assert response.get_json() == {
        "error": "The language model is over its rate limit or quota; retry later",
        "code": "rate_limit_exceeded",
    }
    assert rows_of(app, "rl-1")[0]["status"] == "failed"


def test_upstream_timeout_answers_504(make_app, upstream):
    app = make_app(OPENAI_TIMEOUT=0.3)
    release = threading.Event()
    upstream.enqueue(Hang(release, then=Reply(text="too late")))
    try:
        response = app.test_client().post("/process-payload/", json={"messages": [{"role": "user", "content": "slow"}]})
    finally:
        release.set()

    assert response.status_code == 504
    assert response.get_json() == {"error": "The language model did not answer in time"}
    failed = [r for r in rows_of(app) if r["status"] == "failed"]
    assert [(r["content"], r["error"]) for r in failed] == [("slow", "The language model did not answer in time")]


def test_unreachable_upstream_answers_502(make_app):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = make_app(OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")

    response = app.test_client().post("/openai-completion", json={"prompt": "anyone?", "user_id": "u-x"})

    assert response.status_code == 502
    assert response.get_json() == {"error": "The language model could not be reached"}
    assert rows_of(app, "u-x")[0]["status"] == "failed"


def test_sdk_retries_a_transient_upstream_error(make_app, upstream):
    app = make_app(OPENAI_MAX_RETRIES=1)
    upstream.enqueue(Status(500, headers={"Retry-After": "0"}), Reply(text="second try"))

    response = app.test_client().post("/openai-completion", json={"prompt": "hi"})

    assert response.status_code == 200
    assert response.get_json()["completion"] == "second try"
    assert len(upstream.chat_requests()) == 2


def test_upstream_error_message_is_scrubbed_of_keys(make_app, upstream):
    app = make_app()
    upstream.enqueue(Status(400, f"bad request for key {UPSTREAM_KEY} and sk-someoneelses1234"))

    response = app.test_client().post("/openai-completion", json={"prompt": "hi"})

    text = response.get_data(as_text=True)
    assert response.status_code == 400
    assert UPSTREAM_KEY not in text and "sk-someoneelses1234" not in text
    assert "[redacted]" in text
    assert UPSTREAM_KEY not in repr(rows_of(app))
