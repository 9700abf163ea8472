"""Both chat routes end to end: the real SDK, a real fake upstream, a real database."""

from __future__ import annotations

import uuid

from fake_upstream import Reply
from support import UPSTREAM_KEY, rows_of


def test_openai_completion_answers_and_records_both_turns(make_app, upstream):
    app = make_app(SYSTEM_PROMPT="You are terse.")
    client = app.test_client()

    response = client.post("/openai-completion", json={"prompt": "Hello there"})

    assert response.status_code == 200
    body = response.get_json()
    assert body["completion"] == "echo: Hello there"
    assert uuid.UUID(body["user_id"]).version == 4
    assert body["model"] == "fake-model"
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    sent = upstream.chat_requests()
    assert len(sent) == 1
    assert sent[0]["model"] == "fake-model"
    assert sent[0]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there"},
    ]
    rows = rows_of(app, body["user_id"])
    assert [(r["role"], r["content"], r["status"]) for r in rows] == [
        ("user", "Hello there", "completed"),
        ("assistant", "echo: Hello there", "completed"),
    ]
    assert rows[0]["exchange_id"] == rows[1]["exchange_id"]
    assistant = rows[1]
    assert assistant["completion_id"].startswith("chatcmpl-fake-")
    assert (assistant["model"], assistant["prompt_tokens"], assistant["completion_tokens"]) == ("fake-model", 11, 7)
    assert assistant["total_tokens"] == 18
    assert rows[0]["timestamp"].endswith("+00:00")


def test_history_over_several_turns_reaches_the_model_in_order(make_app, upstream):
    app = make_app(SYSTEM_PROMPT="sys")
    client = app.test_client()
    user_id = "alice-1"
    for prompt in ("one", "two", "three"):
        response = client.post("/openai-completion", json={"prompt": prompt, "user_id": user_id})
        assert response.status_code == 200
        assert response.get_json()["user_id"] == user_id

    assert upstream.chat_requests()[-1]["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "echo: two"},
        {"role": "user", "content": "three"},
    ]


def test_conversations_of_different_users_do_not_mix(client, upstream):
    client.post("/openai-completion", json={"prompt": "I am A", "user_id": "user-a"})
    client.post("/openai-completion", json={"prompt": "I am B", "user_id": "user-b"})
    client.post("/openai-completion", json={"prompt": "who am I?", "user_id": "user-a"})

    assert upstream.chat_requests()[-1]["messages"] == [
        {"role": "user", "content": "I am A"},
        {"role": "assistant", "content": "echo: I am A"},
        {"role": "user", "content": "who am I?"},
    ]


# The JSON payload of the original FastAPI integration, exactly as its clients send it.
FASTAPI_PAYLOAD = {
    "messages": [
        {
            "role": "system",
            "content": [{"type": "text", "text": "You are an AI assistant that helps people find information."}],
        },
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
    ],
    "temperature": 0.7,
    "top_p": 0.95,
    "max_tokens": 800,
}


def test_process_payload_accepts_the_fastapi_payload_verbatim(make_app, upstream):
    app = make_app()
    client = app.test_client()

    response = client.post("/process-payload/", json=FASTAPI_PAYLOAD)

    assert response.status_code == 200
    body = response.get_json()
    assert body["content"] == "echo: What is the capital of France?"
    assert uuid.UUID(body["user_id"]).version == 4
    assert body["model"] == "fake-model"
    assert body["usage"]["total_tokens"] == 18
    sent = upstream.chat_requests()[0]
    assert sent["messages"] == FASTAPI_PAYLOAD["messages"]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.7, 0.95, 800)
    # The system message is the client's instruction, not a turn: only the user turn
    # and the reply are recorded, the content parts kept as sent.
    rows = rows_of(app, body["user_id"])
    assert [(r["role"], r["content"]) for r in rows] == [
        ("user", FASTAPI_PAYLOAD["messages"][1]["content"]),
        ("assistant", "echo: What is the capital of France?"),
    ]


def test_the_fastapi_requests_example_runs_unchanged(live_server, upstream):
    # The Python example of the original integration, with only the host changed.
    import requests

    url = f"{live_server.url}/process-payload/"
    headers = {"Content-Type": "application/json"}
    payload = {
        "messages": [
            {
                "role": "system",
                "content": [{"type": "text", "text": "You are an AI assistant that helps people find information."}],
            },
            {"role": "user", "content": [{"type": "text", "text": "Tell me a joke."}]},
        ],
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 800,
    }
    response = requests.post(url, headers=headers, json=payload, timeout=30)
    response.raise_for_status()

    assert response.json()["content"] == "echo: Tell me a joke."
    assert upstream.chat_requests()[0]["max_tokens"] == 800


def test_process_payload_without_trailing_slash_and_with_history(client, upstream):
    first = client.post("/process-payload", json={"messages": [{"role": "user", "content": "first"}], "user_id": "u-9"})
    assert first.status_code == 200

    second = client.post(
        "/process-payload",
        json={
            "user_id": "u-9",
            "model": "other-model",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "earlier in this payload"},
                {"role": "assistant", "content": "noted"},
                {"role": "user", "content": "second"},
            ],
        },
    )

    assert second.status_code == 200
    assert second.get_json()["content"] == "echo: second"
    sent = upstream.chat_requests()[-1]
    assert sent["model"] == "other-model"
    # Stored history goes after the payload's system messages, before its other messages.
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "echo: first"},
        {"role": "user", "content": "earlier in this payload"},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "second"},
    ]
    assert "temperature" not in sent and "top_p" not in sent and "max_tokens" not in sent


def test_process_payload_records_every_non_system_message_of_the_payload(make_app):
    app = make_app()
    response = app.test_client().post(
        "/process-payload/",
        json={
            "user_id": "u-multi",
            "messages": [
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"},
            ],
        },
    )
    assert response.status_code == 200
    rows = rows_of(app, "u-multi")
    assert [(r["role"], r["content"]) for r in rows] == [
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2"),
        ("assistant", "echo: q2"),
    ]
    assert len({r["exchange_id"] for r in rows}) == 1


def test_image_parts_are_passed_through_and_stored_losslessly(make_app, upstream):
    app = make_app()
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
    ]
    response = app.test_client().post(
        "/process-payload/", json={"user_id": "img-1", "messages": [{"role": "user", "content": content}]}
    )
    assert response.status_code == 200
    assert upstream.chat_requests()[0]["messages"] == [{"role": "user", "content": content}]
    assert rows_of(app, "img-1")[0]["content"] == content


def test_configured_system_prompt_is_used_only_when_the_payload_has_none(make_app, upstream):
    client = make_app(SYSTEM_PROMPT="house rules").test_client()
    client.post("/process-payload/", json={"messages": [{"role": "user", "content": "a"}]})
    client.post(
        "/process-payload/",
        json={"messages": [{"role": "system", "content": "mine"}, {"role": "user", "content": "b"}]},
    )
    first, second = upstream.chat_requests()
    assert first["messages"][0] == {"role": "system", "content": "house rules"}
    assert second["messages"][0] == {"role": "system", "content": "mine"}
    assert {"role": "system", "content": "house rules"} not in second["messages"]


def test_upstream_model_name_and_usage_come_from_the_upstream_reply(make_app, upstream):
    app = make_app()
    upstream.enqueue(Reply(text="custom", model="gpt-x-2025", prompt_tokens=100, completion_tokens=5))
    body = app.test_client().post("/openai-completion", json={"prompt": "hi", "user_id": "m-1"}).get_json()
    assert body["model"] == "gpt-x-2025"
    assert body["usage"] == {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}
    assert rows_of(app, "m-1")[1]["model"] == "gpt-x-2025"


def test_upstream_receives_our_key_and_no_response_or_row_contains_it(make_app, upstream):
    app = make_app()
    response = app.test_client().post("/openai-completion", json={"prompt": "hi", "user_id": "k-1"})
    assert upstream.received[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert UPSTREAM_KEY not in response.get_data(as_text=True)
    assert UPSTREAM_KEY not in repr(rows_of(app))


def test_no_database_connection_is_held_while_the_model_works(make_app, upstream):
    app = make_app()
    checked_out = []

    def during_upstream_call(_received):
        with app.app_context():
            from extensions import db

            checked_out.append(db.engine.pool.checkedout())

    upstream.on_request = during_upstream_call
    response = app.test_client().post("/openai-completion", json={"prompt": "hi"})

    assert response.status_code == 200
    assert checked_out == [0]
