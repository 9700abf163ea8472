"""Tool calls survive server-side memory: every message is stored whole and replayed as it
was, and trimming never splits a tool round. The fake upstream rejects, as OpenAI does, a
history whose tool messages do not follow the assistant message that called them."""

from __future__ import annotations

import json

import openai
import pytest
from fake_upstream import Reply, tool_call, tool_history_error
from support import LiveServer, rows_of

from services.history import HistoryLimits, trim_exchanges

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = tool_call("call_abc123", "get_weather", {"city": "Paris"})


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused-by-default", max_retries=0)
    yield client
    client.close()


def _ask(sdk, messages, conversation, stream):
    """One /v1 turn through the SDK; the assistant message it answered with (a dict)."""
    call = {"model": "fake-model", "messages": messages, "tools": [WEATHER_TOOL]}
    headers = {"X-Conversation-Id": conversation}
    if not stream:
        reply = sdk.chat.completions.create(**call, extra_headers=headers).choices[0].message
        return reply.model_dump(exclude_none=True)
    text, calls = "", {}
    for chunk in sdk.chat.completions.create(**call, stream=True, extra_headers=headers):
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for fragment in delta.tool_calls or []:
            entry = calls.setdefault(fragment.index, {"id": fragment.id, "name": "", "arguments": ""})
            entry["name"] += fragment.function.name or ""
            entry["arguments"] += fragment.function.arguments or ""
    message = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls.values()
        ]
    return message


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_tool_round_sent_by_the_client_is_replayed_whole(sdk, app, upstream, stream):
    turn = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "18C and sunny"},
    ]
    _ask(sdk, turn, "agent-1", stream)
    _ask(sdk, [{"role": "user", "content": "And tomorrow?"}], "agent-1", stream)

    history = upstream.chat_requests()[-1]["messages"]
    assert history[:3] == turn  # every field as sent: tool_calls, tool_call_id, null content
    assert tool_history_error(history) is None


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_the_models_own_tool_calls_are_remembered(sdk, app, upstream, stream):
    upstream.enqueue(Reply(tool_calls=[CALL]))
    first = _ask(sdk, [{"role": "user", "content": "Weather in Paris?"}], "agent-2", stream)
    assert first["tool_calls"][0]["id"] == "call_abc123"
    assert json.loads(first["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}

    # The client answers the call alone: the call itself comes from memory.
    answered = _ask(sdk, [{"role": "tool", "tool_call_id": "call_abc123", "content": "18C"}], "agent-2", stream)
    assert answered["content"] == "echo: Weather in Paris?"
    _ask(sdk, [{"role": "user", "content": "Thanks"}], "agent-2", stream)

    sent = upstream.chat_requests()
    assert sent[1]["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert [m["role"] for m in sent[2]["messages"]] == ["user", "assistant", "tool", "assistant", "user"]
    assert all(tool_history_error(body["messages"]) is None for body in sent)
    stored = rows_of(app, "agent-2")
    assert stored[1]["message_fields"] == {"tool_calls": [CALL], "content": None}
    assert stored[2]["message_fields"] == {"tool_call_id": "call_abc123"}


def test_a_conversation_with_tool_rounds_continues_on_the_seed_routes(sdk, app, upstream):
    upstream.enqueue(Reply(tool_calls=[CALL]))
    _ask(sdk, [{"role": "user", "content": "Weather in Paris?"}], "agent-3", False)
    _ask(sdk, [{"role": "tool", "tool_call_id": "call_abc123", "content": "18C"}], "agent-3", False)

    client = app.test_client()
    assert client.post("/openai-completion", json={"prompt": "Hi", "user_id": "agent-3"}).status_code == 200
    payload = {"messages": [{"role": "user", "content": "Bye"}], "user_id": "agent-3"}
    assert client.post("/process-payload/", json=payload).status_code == 200
    for body in upstream.chat_requests()[2:]:
        assert tool_history_error(body["messages"]) is None
        assert {"role": "assistant", "content": None, "tool_calls": [CALL]} in body["messages"]


def _user(text):
    return {"role": "user", "content": text}


def test_trimming_keeps_a_tool_round_whole():
    call = {"role": "assistant", "content": None, "tool_calls": [CALL]}
    result = {"role": "tool", "tool_call_id": "call_abc123", "content": "18C"}
    exchanges = [
        [_user("a"), {"role": "assistant", "content": "b"}],
        [_user("weather?"), call],  # the model called the tool
        [result, {"role": "assistant", "content": "It is 18C"}],  # the client answered it
        [_user("c"), {"role": "assistant", "content": "d"}],
    ]
    # Room for three messages of history: the round (4 messages) does not fit, so it
    # goes whole; the tool answer is never sent without its call.
    kept = trim_exchanges(exchanges, HistoryLimits(max_messages=3, max_tokens=10_000), 0)
    assert kept == [exchanges[3]]
    # Room for six: the round is kept whole, with its call.
    kept = trim_exchanges(exchanges, HistoryLimits(max_messages=6, max_tokens=10_000), 0)
    assert kept == [exchanges[1] + exchanges[2], exchanges[3]]
    for limit in range(0, 10):
        flat = [m for unit in trim_exchanges(exchanges, HistoryLimits(limit, 10_000), 0) for m in unit]
        assert tool_history_error(flat) is None


def test_a_tool_answer_whose_call_was_trimmed_away_is_not_sent():
    result = {"role": "tool", "tool_call_id": "call_abc123", "content": "18C"}
    exchanges = [[result, {"role": "assistant", "content": "It is 18C"}], [_user("c"), {"role": "assistant"}]]
    kept = trim_exchanges(exchanges, HistoryLimits(max_messages=50, max_tokens=10_000), 0)
    assert kept == [exchanges[1]]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_client_that_resends_its_whole_history_gets_it_once(sdk, app, upstream, stream):
    """LangChain's ChatOpenAI sends the whole conversation every turn; with server-side memory
    on, what memory already holds is not stored or sent twice (a tool call sent twice made
    the history invalid, and OpenAI answered 400)."""
    history = [{"role": "user", "content": "Weather in Paris?"}]
    upstream.enqueue(Reply(tool_calls=[CALL]))
    history.append(_ask(sdk, history, "resender", stream))
    history.append({"role": "tool", "tool_call_id": "call_abc123", "content": "18C"})
    history.append(_ask(sdk, history, "resender", stream))
    history.append({"role": "user", "content": "Thanks"})
    _ask(sdk, history, "resender", stream)

    sent = upstream.chat_requests()
    assert all(tool_history_error(body["messages"]) is None for body in sent)
    assert [m["role"] for m in sent[-1]["messages"]] == ["user", "assistant", "tool", "assistant", "user"]
    assert [r["role"] for r in rows_of(app, "resender")] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]


def test_a_repeated_one_message_turn_is_still_a_new_turn(sdk, app, upstream):
    _ask(sdk, [{"role": "user", "content": "yes"}], "repeat", False)
    _ask(sdk, [{"role": "user", "content": "yes"}], "repeat", False)
    assert [m["content"] for m in upstream.chat_requests()[-1]["messages"]] == ["yes", "echo: yes", "yes"]


def test_a_client_that_resends_a_history_longer_than_the_window_stores_each_turn_once(make_app, upstream):
    """The resent turns must not count against the history's token window before they are
    known to be repeats: with a window the resent history overflows, stored history was
    trimmed to nothing, nothing matched, and every turn stored the whole conversation again."""
    app = make_app(HISTORY_MAX_TOKENS=120)
    server = LiveServer(app)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused-by-default", max_retries=0)
    try:
        history: list[dict] = []
        for turn in range(6):
            history.append({"role": "user", "content": f"turn {turn}: " + "lorem ipsum dolor " * 5})
            history.append(_ask(client, history, "long-resender", stream=False))
    finally:
        client.close()
        server.stop()

    stored = rows_of(app, "long-resender")
    assert len(stored) == len(history) == 12
    assert [row["content"] for row in stored] == [m["content"] for m in history]
    # The last call got the newest turns once each, oldest first, as many as the window holds.
    sent = [m["content"] for m in upstream.chat_requests()[-1]["messages"]]
    earlier = [m["content"] for m in history[:-1]]
    assert 1 < len(sent) < len(earlier)
    assert sent == earlier[-len(sent) :]
