"""POST /v1/responses/input_tokens through the official SDK's `responses.input_tokens.count`:
the count is the budgets' estimate of exactly what a create with the same request sends
upstream (its history, instructions, input and tools), and the state's errors are a create's."""

from __future__ import annotations

import json
import math

import openai
import pytest
from fake_upstream import Reply, tool_call
from support import LiveServer, all_rows, create_client_key

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def estimate(sent: dict) -> int:
    """The README's estimate of one chat request, computed here from the request the upstream
    received: 4 tokens per message plus one per 4 bytes of its text (and its tool calls'
    names and arguments), plus one per 4 bytes of the tool definitions' compact JSON."""
    total = 0
    for message in sent["messages"]:
        text = message.get("content") or ""
        for call in message.get("tool_calls") or []:
            text += call["function"]["name"] + call["function"]["arguments"]
        total += 4 + math.ceil(len(text.encode()) / 4)
    if sent.get("tools"):
        total += math.ceil(len(json.dumps(sent["tools"], separators=(",", ":")).encode()) / 4)
    return total


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def test_the_count_is_the_estimate_of_what_the_same_create_sends(sdk, upstream):
    request = {"model": "fake-model", "input": "What is the weather in Paris?", "instructions": "Be brief."}
    counted = sdk.responses.input_tokens.count(**request, tools=[WEATHER])
    assert counted.object == "response.input_tokens"
    sdk.responses.create(**request, tools=[WEATHER])
    sent = upstream.chat_requests()[-1]
    assert sent["tools"] and sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert counted.input_tokens == estimate(sent)
    without_tools = sdk.responses.input_tokens.count(**request)
    assert 0 < without_tools.input_tokens < counted.input_tokens


def test_a_previous_response_adds_its_turns_to_the_count(sdk, upstream):
    upstream.enqueue(Reply(text="Let me check.", tool_calls=[tool_call("call_1", "get_weather", {"city": "Oslo"})]))
    first = sdk.responses.create(model="fake-model", input="Weather in Oslo?", tools=[WEATHER])
    answer = {"type": "function_call_output", "call_id": "call_1", "output": "-3 C and snow"}
    alone = sdk.responses.input_tokens.count(model="fake-model", input="Thanks!")
    chained = sdk.responses.input_tokens.count(
        model="fake-model", input=[answer], previous_response_id=first.id, tools=[WEATHER]
    )
    assert chained.input_tokens > alone.input_tokens
    sdk.responses.create(model="fake-model", input=[answer], previous_response_id=first.id, tools=[WEATHER])
    sent = upstream.chat_requests()[-1]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert chained.input_tokens == estimate(sent)
    # With no input at all the state alone is counted: the chain and the tools.
    state_only = sdk.responses.input_tokens.count(previous_response_id=first.id, tools=[WEATHER])
    assert state_only.input_tokens == estimate({**sent, "messages": sent["messages"][:2]})


def test_a_conversations_items_are_counted(sdk, upstream):
    conversation = sdk.conversations.create(
        items=[{"type": "message", "role": "user", "content": "My name is Ana and I live in Porto."}]
    )
    counted = sdk.responses.input_tokens.count(
        model="fake-model", input="Where do I live?", conversation=conversation.id
    )
    sdk.responses.create(model="fake-model", input="Where do I live?", conversation=conversation.id)
    sent = upstream.chat_requests()[-1]
    assert len(sent["messages"]) == 2
    assert counted.input_tokens == estimate(sent)


def test_unknown_state_is_answered_as_a_create_answers_it_and_nothing_is_stored_or_sent(sdk, app, upstream):
    before = all_rows(app)
    with pytest.raises(openai.BadRequestError) as unknown_response:
        sdk.responses.input_tokens.count(model="fake-model", input="x", previous_response_id="resp_unknown")
    assert unknown_response.value.code == "previous_response_not_found"
    assert unknown_response.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as unknown_conversation:
        sdk.responses.input_tokens.count(model="fake-model", input="x", conversation="conv_unknown")
    assert unknown_conversation.value.param == "conversation"
    with pytest.raises(openai.BadRequestError) as unpaired:
        sdk.responses.input_tokens.count(
            model="fake-model", input=[{"type": "function_call_output", "call_id": "call_x", "output": "1"}]
        )
    assert "call_x" in unpaired.value.message
    sdk.responses.input_tokens.count(model="fake-model", input="Count me.")
    assert all_rows(app) == before
    assert upstream.received == []


def test_keys_count_only_their_own_responses_and_a_count_needs_a_key(make_app):
    app = make_app(REQUIRE_API_KEY=True)
    server = LiveServer(app)
    clients = [
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        for key in (create_client_key(app, "a"), create_client_key(app, "b"), "gw-not-a-key")
    ]
    a, b, stranger = clients
    try:
        response = a.responses.create(model="fake-model", input="A's turn")
        assert a.responses.input_tokens.count(input="next", previous_response_id=response.id).input_tokens > 0
        with pytest.raises(openai.BadRequestError) as other_key:
            b.responses.input_tokens.count(input="next", previous_response_id=response.id)
        assert other_key.value.code == "previous_response_not_found"
        with pytest.raises(openai.AuthenticationError):
            stranger.responses.input_tokens.count(input="next")
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_the_count_is_what_a_create_reserves_from_a_budget(make_app):
    app = make_app(REQUIRE_API_KEY=True)
    server = LiveServer(app)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=create_client_key(app, "tiny", "--daily-tokens", "1"))
    try:
        request = {"model": "fake-model", "input": "Hello!", "instructions": "Answer in French.", "tools": [WEATHER]}
        counted = client.responses.input_tokens.count(**request)
        with pytest.raises(openai.RateLimitError) as spent:
            client.with_options(max_retries=0).responses.create(**request, max_output_tokens=16)
        assert spent.value.body["code"] == "daily_token_budget_exceeded"
        assert spent.value.response.json()["error"]["code"] == "daily_token_budget_exceeded"
    finally:
        client.close()
        server.stop()
    assert counted.input_tokens + 16 == _worst_case_of(spent.value)


def _worst_case_of(error: openai.RateLimitError) -> int:
    """The worst case a budget refusal names: "this request may take up to N (its prompt and max_tokens)"."""
    message = error.response.json()["error"]["message"]
    return int(message.split("may take up to ")[1].split(" ")[0])
