"""The size limits of a request, through real gunicorn (gevent and gthread): a body over
MAX_CONTENT_LENGTH is refused whether it declares its length or comes chunked, and nothing
is stored or sent upstream; a request line or headers over gunicorn's own limits, and a
request that is not HTTP, are answered by gunicorn before the app, in the same JSON."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa
from support import UPSTREAM_KEY, Served, service_env

LIMIT = 1000
TOO_LARGE = {"error": f"Request body is too large (limit {LIMIT} bytes)"}
TOO_LARGE_V1 = {
    "error": {
        "message": f"Request body is too large (limit {LIMIT} bytes)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
COMPLETION = ("/openai-completion", {"prompt": "cut here"})
CHAT = ("/v1/chat/completions", {"model": "fake-model", "messages": [{"role": "user", "content": "cut here"}]})


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def served(request, tmp_path_factory, upstream):
    env = service_env(
        tmp_path_factory.mktemp(request.param),
        GUNICORN_WORKER_CLASS=request.param,
        WEB_CONCURRENCY="1",
        MAX_CONTENT_LENGTH=str(LIMIT),
        OPENAI_API_KEY=UPSTREAM_KEY,
        OPENAI_BASE_URL=upstream.base_url,
        OPENAI_MODEL="fake-model",
        OPENAI_MAX_RETRIES="0",
    )
    server = Served(env)
    server.wait_for("LLM upstream: OpenAI at")
    server.database_url = env["DATABASE_URL"]
    yield server
    server.stop()


def stored_messages(served) -> int:
    engine = sa.create_engine(served.database_url)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one()
    engine.dispose()
    return count


def padded(payload: dict, size: int) -> bytes:
    """`payload` as JSON, then spaces up to `size` bytes: any prefix of it that holds the
    payload parses, so a body cut short anywhere past it would still be served."""
    text = json.dumps(payload).encode()
    assert len(text) <= size
    return text + b" " * (size - len(text))


def post_chunked(url: str, body: bytes) -> requests.Response:
    """POST `body` with Transfer-Encoding: chunked (no Content-Length), 300 bytes a chunk."""
    chunks = (body[i : i + 300] for i in range(0, len(body), 300))
    response = requests.post(url, data=chunks, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.request.headers
    return response


@pytest.mark.parametrize(
    ("route", "refusal"), [pytest.param(COMPLETION, TOO_LARGE, id="ours"), pytest.param(CHAT, TOO_LARGE_V1, id="v1")]
)
@pytest.mark.parametrize("size", [LIMIT + 1, 3 * LIMIT])
def test_a_chunked_body_over_the_limit_answers_413_and_goes_nowhere(served, upstream, route, refusal, size):
    path, payload = route
    before = stored_messages(served)
    response = post_chunked(served.url + path, padded(payload, size))
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == refusal
    assert stored_messages(served) == before
    assert upstream.received == []


@pytest.mark.parametrize("route", [pytest.param(COMPLETION, id="ours"), pytest.param(CHAT, id="v1")])
@pytest.mark.parametrize("size", [200, LIMIT])
def test_a_chunked_body_up_to_the_limit_is_served(served, upstream, route, size):
    path, payload = route
    before = stored_messages(served)
    response = post_chunked(served.url + path, padded(payload, size))
    assert response.status_code == 200, response.text
    assert [r["messages"][-1]["content"] for r in upstream.chat_requests()] == ["cut here"]
    assert stored_messages(served) == before + 2


def test_a_body_declaring_a_length_over_the_limit_answers_413(served, upstream):
    path, payload = COMPLETION
    response = requests.post(
        served.url + path, data=padded(payload, LIMIT + 1), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.request.headers["Content-Length"] == str(LIMIT + 1)
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert upstream.received == []


def assert_json_closing(response, status: int, message: str) -> None:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Connection"] == "close"
    assert response.json() == {"error": message}


def test_a_request_line_over_gunicorns_limit_answers_414_json(served, upstream):
    url = served.url + "/openai-completion?q=" + "x" * (5000 - len(served.url) - 21)
    assert len(url) == 5000
    response = requests.get(url, timeout=30)
    assert_json_closing(response, 414, "Request line is too long (limit 4094 bytes)")
    assert response.reason == "URI Too Long"
    assert upstream.received == []


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Big": "x" * 9000}, id="a-9000-byte-header"),
        pytest.param({f"X-Header-{i}": "1" for i in range(101)}, id="101-headers"),
    ],
)
def test_headers_over_gunicorns_limits_answer_431_json(served, upstream, headers):
    response = requests.post(served.url + "/openai-completion", json={"prompt": "hi"}, headers=headers, timeout=30)
    assert_json_closing(response, 431, "Request headers are too large (limit 100 headers of 8190 bytes each)")
    assert upstream.received == []


def test_a_request_that_is_not_http_answers_400_json_without_echoing_it(served):
    address = urlsplit(served.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(b"GET /?api_key=secret-in-the-line HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        with contextlib.closing(http.client.HTTPResponse(sock)) as response:
            response.begin()
            body = response.read()
    assert response.status == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Connection"] == "close"
    assert json.loads(body) == {"error": "Bad request: the request is not valid HTTP/1.1"}
