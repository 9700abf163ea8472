"""The official openai SDK against this service's /v1 API, over real HTTP."""

from __future__ import annotations

import time

import openai
import pytest
from fake_upstream import Status
from support import rows_of


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused-by-default", max_retries=0)
    yield client
    client.close()


def test_sdk_chat_completion_is_stateless_without_a_conversation_id(sdk, app, upstream):
    first = sdk.chat.completions.with_raw_response.create(
        model="fake-model",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        temperature=0.2,
        seed=7,
    )
    completion = first.parse()
    sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "again"}])

    assert completion.choices[0].message.content == "echo: hello"
    assert completion.usage.total_tokens == 18
    assert completion.id.startswith("chatcmpl-fake-")
    sent = upstream.chat_requests()
    assert sent[0]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert (sent[0]["temperature"], sent[0]["seed"]) == (0.2, 7)  # passed through
    assert sent[1]["messages"] == [{"role": "user", "content": "again"}]  # no memory
    conversation = first.headers["X-Conversation-Id"]
    assert [(r["role"], r["content"]) for r in rows_of(app, conversation)] == [
        ("user", "hello"),
        ("assistant", "echo: hello"),
    ]


def test_sdk_with_conversation_id_gets_server_side_memory(sdk, app, upstream):
    headers = {"X-Conversation-Id": "sdk-conv-1"}
    sdk.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "one"}], extra_headers=headers
    )
    sdk.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "two"}], extra_body={"user_id": "sdk-conv-1"}
    )

    assert upstream.chat_requests()[-1]["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"},
    ]
    assert "user_id" not in upstream.chat_requests()[-1]
    assert len(rows_of(app, "sdk-conv-1")) == 4


def test_sdk_lists_models(sdk):
    assert [m.id for m in sdk.models.list()] == ["fake-model"]


def test_errors_reach_the_sdk_as_its_own_exceptions(sdk, app, upstream):
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="fake-model", messages=[{"role": "wizard", "content": "x"}])
    assert bad.value.body["type"] == "invalid_request_error"
    assert bad.value.body["param"] == "messages.0.role"

    upstream.enqueue(Status(500))
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502
    assert failed.value.body["message"] == "The language model failed (HTTP 500)"

    with pytest.raises(openai.BadRequestError, match="X-Conversation-Id"):
        sdk.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "x"}], extra_headers={"X-Conversation-Id": "a b"}
        )


def test_offline_model_answers_in_openai_shape(make_app):
    app = make_app(OPENAI_API_KEY=None, OPENAI_BASE_URL=None)
    before = int(time.time())
    response = app.test_client().post(
        "/v1/chat/completions", json={"model": "anything", "messages": [{"role": "user", "content": "hi"}]}
    )
    body = response.get_json()
    assert body["object"] == "chat.completion"
    assert before <= body["created"] <= time.time()  # Unix seconds of when it was made, as OpenAI's
    assert body["model"] == "offline"
    assert body["choices"][0]["message"]["content"].startswith("[offline model] You said: 'hi'")


def test_allowed_models_are_listed_and_enforced(make_app, upstream):
    client = make_app(ALLOWED_MODELS=["fake-model", "fake-mini"]).test_client()

    assert [m["id"] for m in client.get("/v1/models").get_json()["data"]] == ["fake-model", "fake-mini"]
    refused = client.post(
        "/v1/chat/completions", json={"model": "gpt-5-pro", "messages": [{"role": "user", "content": "x"}]}
    )
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "model_not_allowed"
    payload = client.post(
        "/process-payload/", json={"model": "gpt-5-pro", "messages": [{"role": "user", "content": "x"}]}
    )
    assert payload.status_code == 400
    assert payload.get_json()["error"] == "Model 'gpt-5-pro' is not allowed here; allowed: fake-model, fake-mini"
    assert upstream.received == []
    ok = client.post(
        "/v1/chat/completions", json={"model": "fake-mini", "messages": [{"role": "user", "content": "x"}]}
    )
    assert ok.status_code == 200


def test_an_upstream_rejection_keeps_its_param(sdk, upstream):
    # A tool message answering no call: the upstream (as OpenAI) rejects it naming `messages`.
    with pytest.raises(openai.BadRequestError) as rejected:
        sdk.chat.completions.create(
            model="fake-model", messages=[{"role": "tool", "tool_call_id": "call_none", "content": "18C"}]
        )
    assert rejected.value.param == "messages"
    assert "must be a response to a preceeding message with 'tool_calls'" in rejected.value.message


def test_calls_one_after_another_reuse_one_upstream_connection(sdk, app, upstream):
    """The process spreads calls over several connection pools only when they overlap: one
    after another, plain or streamed, they all go through one kept-alive connection."""
    ask = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        sdk.chat.completions.create(**ask)
        assert "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(**ask, stream=True))

    peers = {received.peer for received in upstream.received}
    assert len(upstream.received) == 6
    assert len(peers) == 1, peers
