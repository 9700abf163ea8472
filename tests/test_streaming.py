"""Streaming that loses nothing: whole replies, clients that leave, upstreams that break."""

from __future__ import annotations

import json
import threading

import openai
import pytest
import requests
from fake_upstream import Status, StreamReply
from support import delta_texts, rows_of, sse_events


def _events(response) -> list[tuple[str | None, str]]:
    """(event name, data) pairs of a text/event-stream response, read to its end."""
    return sse_events(response.iter_lines(decode_unicode=True))


def test_openai_completion_streams_deltas_then_done_and_records_the_whole_reply(live_server, app, upstream):
    with requests.post(
        f"{live_server.url}/openai-completion",
        json={"prompt": "hello there friend", "user_id": "s-1", "stream": True},
        stream=True,
        timeout=30,
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = _events(response)
    live_server.wait_idle()

    deltas = delta_texts(events)
    assert "".join(deltas) == "echo: hello there friend"
    assert len(deltas) == 4  # token by token, as the upstream sent them
    assert events[-1][0] == "done"
    assert json.loads(events[-1][1]) == {
        "user_id": "s-1",
        "model": "fake-model",
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    sent = upstream.chat_requests()[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    rows = rows_of(app, "s-1")
    assert [(r["role"], r["content"], r["status"]) for r in rows] == [
        ("user", "hello there friend", "completed"),
        ("assistant", "echo: hello there friend", "completed"),
    ]
    assert (rows[1]["prompt_tokens"], rows[1]["completion_tokens"], rows[1]["total_tokens"]) == (11, 7, 18)


def test_process_payload_streams_and_a_streamed_reply_becomes_history(live_server, app, upstream):
    body = {
        "user_id": "s-2",
        "stream": True,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
    }
    with requests.post(f"{live_server.url}/process-payload/", json=body, stream=True, timeout=30) as response:
        events = _events(response)
    live_server.wait_idle()
    assert "".join(delta_texts(events)) == "echo: a"

    requests.post(f"{live_server.url}/openai-completion", json={"prompt": "b", "user_id": "s-2"}, timeout=30)
    assert upstream.chat_requests()[-1]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": "echo: a"},
        {"role": "user", "content": "b"},
    ]


def test_official_sdk_streams_from_v1_with_memory(live_server, app, upstream):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    try:
        headers = {"X-Conversation-Id": "s-sdk"}
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "first"}], extra_headers=headers
        )
        stream = client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "second turn"}],
            stream=True,
            stream_options={"include_usage": True},  # the usage chunk comes only when asked for
            extra_headers=headers,
        )
        chunks = list(stream)
    finally:
        client.close()
    live_server.wait_idle()

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: second turn"
    assert chunks[-1].usage.total_tokens == 18
    assert upstream.chat_requests()[-1]["messages"][:2] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "echo: first"},
    ]
    assert [r["content"] for r in rows_of(app, "s-sdk")] == ["first", "echo: first", "second turn", "echo: second turn"]


def test_client_leaving_mid_stream_records_the_partial_reply_and_closes_the_upstream(live_server, app, upstream):
    resume = threading.Event()
    pieces = ["Once ", "upon ", "a ", "time ", "and so on "]
    upstream.enqueue(StreamReply(pieces, hold_after=2, resume=resume, endless=True))
    response = requests.post(
        f"{live_server.url}/openai-completion",
        json={"prompt": "tell me a long story", "user_id": "s-leaver", "stream": True},
        stream=True,
        timeout=30,
    )
    received = []
    lines = response.iter_lines(decode_unicode=True)
    for line in lines:
        if line.startswith("data: "):
            received.append(json.loads(line[6:])["text"])
        if len(received) == 2:
            break
    response.close()  # the client goes away after two deltas
    resume.set()  # the upstream carries on; the service must notice and hang up on it

    assert upstream.stream_closed_by_client.wait(20), "the upstream stream was never closed"
    assert live_server.wait_idle()
    assert received == ["Once ", "upon "]
    rows = rows_of(app, "s-leaver")
    assert [(r["role"], r["status"]) for r in rows] == [("user", "disconnected"), ("assistant", "disconnected")]
    partial = rows[1]["content"]
    assert partial.startswith("Once upon ")  # what had arrived when the client left
    assert rows[1]["error"] == "the client disconnected mid-stream"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (StreamReply(["Half ", "an ", "answer "], error_after=2), "The language model reported an error"),
        (StreamReply(["Half ", "an ", "answer "], break_after=2), "The language model's stream broke off"),
    ],
    ids=["error-event", "dropped-connection"],
)
def test_upstream_breaking_off_mid_stream_ends_with_an_error_event_and_is_recorded(
    live_server, app, upstream, reply, reason
):
    upstream.enqueue(reply)
    with requests.post(
        f"{live_server.url}/openai-completion",
        json={"prompt": "go", "user_id": "s-broken", "stream": True},
        stream=True,
        timeout=30,
    ) as response:
        events = _events(response)
    live_server.wait_idle()

    assert delta_texts(events) == ["Half ", "an "]
    assert events[-1][0] == "error"
    assert json.loads(events[-1][1])["error"].startswith(reason)
    rows = rows_of(app, "s-broken")
    assert [(r["role"], r["status"]) for r in rows] == [("user", "failed"), ("assistant", "failed")]
    assert rows[1]["content"] == "Half an "
    assert rows[1]["error"].startswith(f"stream broke off: {reason}")


def test_v1_stream_error_mid_stream_is_an_openai_error_chunk(live_server, upstream):
    upstream.enqueue(StreamReply(["x ", "y "], error_after=1))
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with requests.post(f"{live_server.url}/v1/chat/completions", json=body, stream=True, timeout=30) as response:
        events = _events(response)
    assert json.loads(events[-1][1])["error"]["type"] == "api_error"
    assert "[DONE]" not in [d for _, d in events]


def test_a_stream_that_cannot_open_answers_a_json_error(make_app, upstream):
    app = make_app()
    upstream.enqueue(Status(500))
    response = app.test_client().post("/openai-completion", json={"prompt": "x", "user_id": "s-x", "stream": True})
    assert response.status_code == 502
    assert response.get_json() == {"error": "The language model failed (HTTP 500)"}
    assert [r["status"] for r in rows_of(app, "s-x")] == ["failed"]


def test_offline_model_streams_too(make_app):
    app = make_app(OPENAI_API_KEY=None, OPENAI_BASE_URL=None)
    response = app.test_client().post("/openai-completion", json={"prompt": "hi", "user_id": "s-off", "stream": True})
    text = response.get_data(as_text=True)
    deltas = delta_texts(sse_events(text.splitlines()))
    assert "".join(deltas) == "[offline model] You said: 'hi'. I received 0 earlier messages of this conversation."
    assert [r["status"] for r in rows_of(app, "s-off")] == ["completed", "completed"]


def test_a_stream_writes_its_log_line_when_it_ends_with_usage(live_server, upstream):
    import logging

    records = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Capture()
    logging.getLogger("gateway.request").addHandler(handler)
    try:
        with requests.post(
            f"{live_server.url}/openai-completion",
            json={"prompt": "log me", "user_id": "s-log", "stream": True},
            headers={"X-Request-ID": "stream-1"},
            stream=True,
            timeout=30,
        ) as response:
            _events(response)
        live_server.wait_idle()
    finally:
        logging.getLogger("gateway.request").removeHandler(handler)

    [line] = [r.fields for r in records if r.fields["request_id"] == "stream-1"]
    assert line["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert line["stream_outcome"] == "completed"
    assert line["latency_ms"] >= line["upstream_latency_ms"] > 0
