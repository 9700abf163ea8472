"""OpenAI's Responses and Conversations APIs through the official SDK against a live server,
with the state kept here and a chat-completions upstream (the fake) behind it."""

from __future__ import annotations

import json

import openai
import pytest
import requests
from fake_upstream import Reply, StreamReply, tool_call, tool_history_error
from support import LiveServer, all_rows, bearer, create_client_key, rows_of

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = tool_call("call_w1", "get_weather", {"city": "Paris"})


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def _sent(upstream, index=-1):
    """The messages of one chat request the upstream received."""
    return upstream.chat_requests()[index]["messages"]


def test_create_answers_a_response_whose_output_text_works(sdk, upstream, app):
    response = sdk.responses.create(model="fake-model", input="Name a French cheese.", instructions="Be brief.")
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "echo: Name a French cheese."
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (11, 7, 18)
    assert _sent(upstream) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a French cheese."},
    ]
    assert sdk.responses.retrieve(response.id).output_text == response.output_text


def test_a_chain_three_deep_sees_every_earlier_turn_at_once_without_instructions(sdk, upstream):
    first = sdk.responses.create(model="fake-model", input="one", instructions="Old rule.")
    second = sdk.responses.create(model="fake-model", input="two", previous_response_id=first.id)
    third = sdk.responses.create(
        model="fake-model", input="three", previous_response_id=second.id, instructions="New rule."
    )
    assert third.previous_response_id == second.id
    assert _sent(upstream) == [
        {"role": "system", "content": "New rule."},  # the earlier instructions are not carried over
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "echo: two"},
        {"role": "user", "content": "three"},
    ]


def test_two_branches_from_one_parent_each_see_only_their_own_chain(sdk, upstream):
    root = sdk.responses.create(model="fake-model", input="root")
    left = sdk.responses.create(model="fake-model", input="left", previous_response_id=root.id)
    sdk.responses.create(model="fake-model", input="right", previous_response_id=root.id)
    sdk.responses.create(model="fake-model", input="left again", previous_response_id=left.id)
    right_texts = [m["content"] for m in _sent(upstream, 2)]
    left_texts = [m["content"] for m in _sent(upstream, 3)]
    assert right_texts == ["root", "echo: root", "right"]
    assert left_texts == ["root", "echo: root", "left", "echo: left", "left again"]


@pytest.mark.parametrize(
    "missing",
    ["resp_unknown", "deleted", "not-stored"],
)
def test_a_previous_response_that_cannot_be_continued_is_openais_error(sdk, upstream, missing):
    if missing == "deleted":
        missing = sdk.responses.create(model="fake-model", input="x").id
        sdk.responses.delete(missing)
    elif missing == "not-stored":
        missing = sdk.responses.create(model="fake-model", input="x", store=False).id
    before = len(upstream.chat_requests())
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="fake-model", input="y", previous_response_id=missing)
    assert refused.value.code == "previous_response_not_found"
    assert refused.value.param == "previous_response_id"
    assert len(upstream.chat_requests()) == before  # nothing sent upstream


def test_store_false_keeps_usage_but_no_content(sdk, upstream, app):
    response = sdk.responses.create(model="fake-model", input="a secret", store=False)
    assert response.output_text == "echo: a secret" and response.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)
    rows = rows_of(app, response.id)
    assert [(r["role"], r["content"], r["status"]) for r in rows] == [
        ("user", "", "completed"),
        ("assistant", "", "completed"),
    ]
    assert rows[1]["total_tokens"] == 18  # usage is kept for budgets and audits


def test_a_conversation_gets_its_items_first_and_the_new_ones_appended(sdk, upstream):
    conversation = sdk.conversations.create(
        items=[{"type": "message", "role": "user", "content": "I like Comté."}], metadata={"topic": "cheese"}
    )
    first = sdk.responses.create(model="fake-model", input="What do I like?", conversation=conversation.id)
    assert first.conversation.id == conversation.id
    assert _sent(upstream) == [
        {"role": "user", "content": "I like Comté."},
        {"role": "user", "content": "What do I like?"},
    ]
    items = sdk.conversations.items.list(conversation.id, order="asc")
    assert [(i.type, i.role) for i in items.data] == [
        ("message", "user"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert items.data[-1].content[0].text == "echo: What do I like?"


def test_a_stream_to_the_end_is_recorded_and_continued_at_once(sdk, upstream, app):
    with sdk.responses.stream(model="fake-model", input="Count to three.") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "echo: Count to three."
    assert final.usage.total_tokens == 18
    follow = sdk.responses.create(model="fake-model", input="Again.", previous_response_id=final.id)
    assert follow.status == "completed"
    assert [m["content"] for m in _sent(upstream)] == ["Count to three.", "echo: Count to three.", "Again."]


def test_a_stream_cut_off_midway_is_recorded_like_a_chat_stream(live_server, upstream, app):
    upstream.enqueue(StreamReply(["one ", "two ", "three"], endless=True))
    response_id = None
    with requests.post(
        f"{live_server.url}/v1/responses",
        json={"model": "fake-model", "input": "Go on forever.", "stream": True},
        stream=True,
        timeout=30,
    ) as answer:
        for line in answer.iter_lines():
            if line.startswith(b"data: ") and response_id is None:
                response_id = json.loads(line[6:])["response"]["id"]  # response.created
            if b"response.output_text.delta" in line:
                break  # the client leaves mid-stream
    live_server.wait_idle()
    assert upstream.stream_closed_by_client.wait(10)
    stored = [r for r in rows_of(app) if r["role"] == "assistant"]
    assert stored[-1]["status"] == "disconnected"
    assert stored[-1]["content"].startswith("one ")
    # The response itself is kept as it stood: retrievable, cancelled, with what had arrived.
    sdk = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    kept = sdk.responses.retrieve(response_id)
    sdk.close()
    assert kept.status == "cancelled" and kept.output_text.startswith("one ")
    assert kept.output[0].status == "incomplete"


@pytest.mark.parametrize("through", ["chain", "conversation"])
def test_a_function_tool_round_trip_survives_the_state(sdk, upstream, through):
    state = {}
    if through == "conversation":
        state = {"conversation": sdk.conversations.create().id}
    upstream.enqueue(Reply(tool_calls=[CALL]))
    asked = sdk.responses.create(model="fake-model", input="Weather in Paris?", tools=[WEATHER], **state)
    call = next(item for item in asked.output if item.type == "function_call")
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_w1", "get_weather", {"city": "Paris"})

    if through == "chain":
        state = {"previous_response_id": asked.id}
    answer = [{"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}]
    done = sdk.responses.create(model="fake-model", input=answer, tools=[WEATHER], **state)
    assert done.status == "completed"
    history = _sent(upstream)
    assert tool_history_error(history) is None
    assert {"role": "assistant", "content": None, "tool_calls": [CALL]} in history
    assert {"role": "tool", "tool_call_id": "call_w1", "content": "18C and sunny"} in history
    assert upstream.chat_requests()[-1]["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("through", ["no state", "chain", "conversation"])
def test_a_function_call_output_without_its_call_is_openais_400_and_nothing_is_stored_or_sent(
    sdk, upstream, app, through
):
    state = {}
    if through != "no state":
        conversation = {"conversation": sdk.conversations.create().id} if through == "conversation" else {}
        upstream.enqueue(Reply(tool_calls=[CALL]))
        asked = sdk.responses.create(model="fake-model", input="Weather in Paris?", tools=[WEATHER], **conversation)
        state = conversation or {"previous_response_id": asked.id}
    stored, sent = all_rows(app), len(upstream.chat_requests())
    answer = [{"type": "function_call_output", "call_id": "call_unknown", "output": "18C and sunny"}]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="fake-model", input=answer, tools=[WEATHER], **state)
    assert refused.value.body["message"] == "No tool call found for function call output with call_id call_unknown."
    assert refused.value.param == "input"
    assert all_rows(app) == stored  # nothing stored: no messages rows, no response
    assert len(upstream.chat_requests()) == sent  # nothing sent upstream


def test_retrieve_delete_and_input_items(sdk, upstream, app):
    response = sdk.responses.create(
        model="fake-model", input=[{"role": "user", "content": [{"type": "input_text", "text": "hello"}]}]
    )
    items = sdk.responses.input_items.list(response.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "hello")]
    assert sdk.responses.retrieve(response.id).id == response.id
    sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)
    assert rows_of(app, response.id) == []  # erased for good


def test_every_conversations_method(sdk, upstream):
    created = sdk.conversations.create(metadata={"team": "a"})
    assert sdk.conversations.retrieve(created.id).metadata == {"team": "a"}
    assert sdk.conversations.update(created.id, metadata={"team": "b"}).metadata == {"team": "b"}
    added = sdk.conversations.items.create(
        created.id,
        items=[
            {"type": "message", "role": "user", "content": "first"},
            {"type": "message", "role": "assistant", "content": "second"},
        ],
    )
    assert [i.role for i in added.data] == ["user", "assistant"]
    newest_first = sdk.conversations.items.list(created.id, limit=1)
    assert newest_first.data[0].id == added.data[1].id and newest_first.has_more
    item = sdk.conversations.items.retrieve(added.data[0].id, conversation_id=created.id)
    assert item.content[0].text == "first"
    sdk.conversations.items.delete(added.data[0].id, conversation_id=created.id)
    assert [i.id for i in sdk.conversations.items.list(created.id).data] == [added.data[1].id]
    deleted = sdk.conversations.delete(created.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(created.id)


def test_responses_and_conversations_belong_to_their_key(make_app, upstream):
    app = make_app(REQUIRE_API_KEY=True)
    server = LiveServer(app)
    key_a, key_b = create_client_key(app, "a"), create_client_key(app, "b")
    a = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key_a, max_retries=0)
    b = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key_b, max_retries=0)
    try:
        response = a.responses.create(model="fake-model", input="A's secret")
        conversation = a.conversations.create(items=[{"type": "message", "role": "user", "content": "A only"}])
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            b.conversations.retrieve(conversation.id)
        with pytest.raises(openai.NotFoundError):
            b.conversations.items.list(conversation.id)
        with pytest.raises(openai.BadRequestError):
            b.responses.create(model="fake-model", input="x", previous_response_id=response.id)
        with pytest.raises(openai.BadRequestError):
            b.responses.create(model="fake-model", input="x", conversation=conversation.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.delete(response.id)
        assert a.responses.retrieve(response.id).output_text == "echo: A's secret"
    finally:
        a.close()
        b.close()
        server.stop()
    assert all("A's secret" not in json.dumps(body) for body in upstream.chat_requests()[1:])


def test_one_conversation_across_openai_completion_and_responses(sdk, app, upstream, live_server):
    seed = requests.post(f"{live_server.url}/openai-completion", json={"prompt": "I am Ana.", "user_id": "ana"})
    assert seed.status_code == 200
    response = sdk.responses.create(model="fake-model", input="Who am I?", conversation="ana")
    assert [m["content"] for m in _sent(upstream)] == ["I am Ana.", "echo: I am Ana.", "Who am I?"]
    again = requests.post(f"{live_server.url}/openai-completion", json={"prompt": "And now?", "user_id": "ana"})
    assert again.status_code == 200
    assert [m["content"] for m in _sent(upstream)][-3:] == ["Who am I?", "echo: Who am I?", "And now?"]
    items = sdk.conversations.items.list("ana", order="asc")
    assert [getattr(i, "role", None) for i in items.data] == ["user", "assistant"] * 3
    assert response.conversation.id == "ana"


def test_bearer_helper_is_the_sdks_header():
    assert bearer("k") == {"Authorization": "Bearer k"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_responses_output_items_are_the_conversations_items(sdk, upstream, stream):
    conversation = sdk.conversations.create().id
    upstream.enqueue(Reply(text="Let me check.", tool_calls=[CALL]))
    if stream:
        with sdk.responses.stream(
            model="fake-model", input="Weather?", tools=[WEATHER], conversation=conversation
        ) as s:
            response = s.get_final_response()
    else:
        response = sdk.responses.create(
            model="fake-model", input="Weather?", tools=[WEATHER], conversation=conversation
        )
    output_ids = [item.id for item in response.output]
    listed = sdk.conversations.items.list(conversation, order="asc")
    assert [item.id for item in listed.data][-len(output_ids) :] == output_ids
    call = next(item for item in response.output if item.type == "function_call")
    assert sdk.conversations.items.retrieve(call.id, conversation_id=conversation).call_id == "call_w1"
    sdk.conversations.items.delete(call.id, conversation_id=conversation)
    remaining = [item.id for item in sdk.conversations.items.list(conversation, order="asc").data]
    assert call.id not in remaining and response.output[0].id in remaining


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_the_sdk_pages_through_a_conversations_items_one_by_one_and_two_by_two(sdk, upstream, order):
    # A reply of a text and two tool calls is three items of one stored row: a page may
    # end inside it, and the next must go on from there.
    first = sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "Hi."}]).id
    upstream.enqueue(
        Reply(text="Checking both.", tool_calls=[CALL, tool_call("call_w2", "get_weather", {"city": "Oslo"})])
    )
    sdk.responses.create(model="fake-model", input="Paris and Oslo?", tools=[WEATHER], conversation=first)
    outputs = [{"type": "function_call_output", "call_id": c, "output": "18C"} for c in ("call_w1", "call_w2")]
    sdk.responses.create(model="fake-model", input=outputs, conversation=first)
    whole = [item.id for item in sdk.conversations.items.list(first, order=order, limit=100).data]
    assert len(whole) == 8  # Hi. / Paris and Oslo? / text, call, call / output, output / the reply

    for size in (1, 2, 3):
        paged = [item.id for item in sdk.conversations.items.list(first, order=order, limit=size)]  # auto-paging
        assert paged == whole, size


def test_an_item_id_is_never_given_again_after_its_item_is_deleted(sdk):
    conversation = sdk.conversations.create().id
    first = sdk.conversations.items.create(conversation, items=[{"role": "user", "content": "first"}]).data[0]
    sdk.conversations.items.delete(first.id, conversation_id=conversation)
    second = sdk.conversations.items.create(conversation, items=[{"role": "user", "content": "second"}]).data[0]
    assert second.id != first.id
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve(first.id, conversation_id=conversation)


def test_store_false_in_a_conversation_sends_its_items_but_adds_none(sdk, upstream):
    conversation = sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "I like Comté."}])
    response = sdk.responses.create(
        model="fake-model", input="What do I like?", conversation=conversation.id, store=False
    )
    assert response.output_text == "echo: What do I like?"
    assert [m["content"] for m in _sent(upstream)] == ["I like Comté.", "What do I like?"]
    assert len(sdk.conversations.items.list(conversation.id).data) == 1  # nothing of it was kept
