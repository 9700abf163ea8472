"""/v1/chat/completions refuses what OpenAI's API refuses, in OpenAI's words: `n` below 1 (or
above its ceiling), and a message other than an assistant's without content (null or
absent). The official SDK raises its BadRequestError; nothing is stored or sent upstream."""

from __future__ import annotations

import openai
import pytest
from support import rows_of


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def _refusal(call) -> dict:
    with pytest.raises(openai.BadRequestError) as refused:
        call()
    return refused.value.body


def test_n_zero_is_refused_as_openai_refuses_it(app, sdk, upstream):
    body = _refusal(
        lambda: sdk.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "hi"}],
            n=0,
            extra_headers={"X-Conversation-Id": "n0"},
        )
    )
    assert body == {
        "message": "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
        "type": "invalid_request_error",
        "param": "n",
        "code": None,
    }
    assert upstream.chat_requests() == []
    assert rows_of(app, "n0") == []


def test_n_out_of_bounds_or_of_the_wrong_type_is_refused(sdk, upstream):
    messages = [{"role": "user", "content": "hi"}]
    negative = _refusal(lambda: sdk.chat.completions.create(model="fake-model", messages=messages, n=-3))
    assert negative["message"].endswith("Expected a value >= 1, but got -3 instead.")
    huge = _refusal(lambda: sdk.chat.completions.create(model="fake-model", messages=messages, n=100_000))
    assert huge["message"] == (
        "Invalid 'n': integer above maximum value. Expected a value <= 128, but got 100000 instead."
    )
    text = _refusal(lambda: sdk.chat.completions.create(model="fake-model", messages=messages, extra_body={"n": "2"}))
    assert text["param"] == "n"
    assert upstream.chat_requests() == []


def test_a_valid_n_is_passed_upstream(sdk, upstream):
    sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}], n=2)
    sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}], extra_body={"n": 3.0})
    assert [request["n"] for request in upstream.chat_requests()] == [2, 3]


@pytest.mark.parametrize("role", ["user", "system", "developer", "tool"])
@pytest.mark.parametrize("absent", [False, True], ids=["null", "absent"])
def test_a_message_without_content_is_refused_as_openai_refuses_it(app, sdk, upstream, role, absent):
    message = {"role": role} if absent else {"role": role, "content": None}
    if role == "tool":
        message["tool_call_id"] = "call_1"
    messages = [{"role": "user", "content": "first"}, message, {"role": "user", "content": "last"}]
    body = _refusal(
        lambda: sdk.chat.completions.create(
            model="fake-model", messages=messages, extra_headers={"X-Conversation-Id": "null-content"}
        )
    )
    assert body == {
        "message": "Invalid value for 'content': expected a string, got null.",
        "type": "invalid_request_error",
        "param": "messages.1.content",
        "code": None,
    }
    assert upstream.chat_requests() == []
    assert rows_of(app, "null-content") == []


def test_an_assistant_message_of_tool_calls_alone_keeps_its_null_content(sdk, upstream):
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
    ]
    sdk.chat.completions.create(model="fake-model", messages=messages)
    assert upstream.chat_requests()[-1]["messages"][1]["tool_calls"] == [call]
