"""Item references and file inputs in a response's input (issue 23, items 3 and 4).

A client may send an item this service stored as `{"type": "item_reference", "id": ...}`: the
Vercel AI SDK does so for every earlier assistant text, driven here as its docs show. The
reference reaches the upstream as the item itself; one to no item of the client's key is
OpenAI's 404. An `input_file` part reaches a chat-completions upstream as its `file` part.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import openai
import pytest
from fake_upstream import Reply, Status, tool_call, tool_history_error
from openai.types.responses import ResponseInputMessageItem
from pydantic import TypeAdapter
from support import ROOT, LiveServer, all_rows, create_client_key, rows_of

SCRIPT = ROOT / "tests" / "node" / "ai_sdk_history.mjs"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = tool_call("call_w1", "get_weather", {"city": "Paris"})
PDF = "data:application/pdf;base64,JVBERi0xLjQKJSVFT0YK"
NOT_FOUND = (
    "Item with id '{}' not found. Items are not persisted when `store` is set to false. "
    "Try again with `store` set to true, or remove this item from your input."
)


class ClientRequests:
    """WSGI middleware that keeps the JSON body of every POST /v1/responses, so a test sees
    what the client itself put on the wire."""

    def __init__(self, app) -> None:
        self.app = app
        self.bodies: list[dict] = []

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"] == "/v1/responses":
            raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            self.bodies.append(json.loads(raw))
            environ["wsgi.input"] = io.BytesIO(raw)
        return self.app(environ, start_response)


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def _sent(upstream, index=-1):
    """The messages of one chat request the upstream received."""
    return upstream.chat_requests()[index]["messages"]


# -- item references ----------------------------------------------------------------------------


def test_the_ai_sdk_history_pattern_with_a_tool_loop_is_continued_through_item_references(app, serve, upstream):
    node = shutil.which("node")
    if node is None or not (ROOT / "tests" / "node" / "node_modules" / "ai").exists():
        pytest.fail("node and tests/node/node_modules are needed: `make install` runs `npm ci --prefix tests/node`")
    client = ClientRequests(app)
    server = serve(client)
    upstream.enqueue(Reply(text="Let me check.", tool_calls=[tool_call("call_sf", "weather", {"location": "SF"})]))
    result = subprocess.run(
        [node, str(SCRIPT), f"{server.url}/v1"], capture_output=True, text=True, timeout=120, cwd=SCRIPT.parent
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "firstText": "echo: What is the weather in San Francisco?",
        "firstSteps": 2,
        "toolResults": [{"location": "SF", "temperature": 72}],
        "secondText": "echo: And what does this report say?",
        "roles": ["user", "assistant", "tool", "assistant", "user", "assistant"],
    }
    # The SDK sent the assistant's texts back by reference: the tool loop's second step one,
    # the second turn two (the call and its result go whole).
    references = [[i["id"] for i in body["input"] if i.get("type") == "item_reference"] for body in client.bodies]
    assert [len(ids) for ids in references] == [0, 1, 2]
    question = {"role": "user", "content": "What is the weather in San Francisco?"}
    call = {"id": "call_sf", "type": "function", "function": {"name": "weather", "arguments": '{"location":"SF"}'}}
    checking = {"role": "assistant", "content": "Let me check.", "tool_calls": [call]}
    result_message = {"role": "tool", "tool_call_id": "call_sf", "content": '{"location":"SF","temperature":72}'}
    assert _sent(upstream, 1) == [question, checking, result_message]
    assert _sent(upstream, 2) == [
        question,
        checking,
        result_message,
        {"role": "assistant", "content": "echo: What is the weather in San Francisco?"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And what does this report say?"},
                {"type": "file", "file": {"file_data": PDF, "filename": "report.pdf"}},
            ],
        },
    ]
    assert all(tool_history_error(body["messages"]) is None for body in upstream.chat_requests())


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_references_to_a_responses_input_and_output_reach_the_upstream_as_the_items(sdk, upstream, stream):
    upstream.enqueue(Reply(text="Let me check.", tool_calls=[CALL]))
    if stream:
        with sdk.responses.stream(model="fake-model", input="Weather in Paris?", tools=[WEATHER]) as events:
            first = events.get_final_response()
    else:
        first = sdk.responses.create(model="fake-model", input="Weather in Paris?", tools=[WEATHER])
    asked = sdk.responses.input_items.list(first.id).data[0]
    message, call = first.output
    second = sdk.responses.create(
        model="fake-model",
        tools=[WEATHER],
        input=[
            {"type": "item_reference", "id": asked.id},
            {"type": "item_reference", "id": message.id},
            {"id": call.id},  # the specification's ItemReferenceParam: "type" may be left out
            {"type": "function_call_output", "call_id": "call_w1", "output": "18C"},
        ],
    )
    assert second.status == "completed"
    assert _sent(upstream) == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_w1", "content": "18C"},
    ]


def test_references_to_a_conversations_items_reach_the_upstream_as_the_items(sdk, upstream):
    conversation = sdk.conversations.create(
        items=[
            {"type": "function_call", "call_id": "call_w1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_w1", "output": "18C"},
            {"type": "message", "role": "user", "content": "I like Comté."},
        ]
    ).id
    ids = [item.id for item in sdk.conversations.items.list(conversation, order="asc").data]
    references = [{"type": "item_reference", "id": item_id} for item_id in ids]
    response = sdk.responses.create(model="fake-model", input=[*references, {"role": "user", "content": "And?"}])
    assert response.output_text == "echo: And?"
    assert _sent(upstream) == [
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_w1", "content": "18C"},
        {"role": "user", "content": "I like Comté."},
        {"role": "user", "content": "And?"},
    ]


@pytest.mark.parametrize(
    "kind", ["never made", "row never made", "store false", "store false input", "deleted", "failed"]
)
def test_a_reference_to_no_stored_item_is_openais_404_and_nothing_is_stored_or_sent(sdk, upstream, app, kind):
    if kind == "never made":
        missing = "msg_" + "ab" * 24 + "_0"
    elif kind == "row never made":
        missing = "msg_987654"
    elif kind == "failed":
        upstream.enqueue(Status(500), Status(500), Status(500))
        with pytest.raises(openai.APIStatusError):
            sdk.responses.create(model="fake-model", input="never answered")
        failed = rows_of(app)[-1]
        assert (failed["content"], failed["status"]) == ("never answered", "failed")
        missing = f"msg_{failed['id']}"
    elif kind == "store false input":  # its row keeps no content: its id names no item
        made = sdk.responses.create(model="fake-model", input="a secret", store=False)
        missing = f"msg_{rows_of(app, made.id)[0]['id']}"
    else:
        made = sdk.responses.create(model="fake-model", input="Hi.", store=kind != "store false")
        if kind == "deleted":
            sdk.responses.delete(made.id)
        missing = made.output[0].id
    stored, sent = all_rows(app), len(upstream.chat_requests())
    with pytest.raises(openai.NotFoundError) as refused:
        sdk.responses.create(
            model="fake-model", input=[{"role": "user", "content": "Hi."}, {"type": "item_reference", "id": missing}]
        )
    assert refused.value.body == {
        "message": NOT_FOUND.format(missing),
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }
    assert all_rows(app) == stored
    assert len(upstream.chat_requests()) == sent


def test_another_keys_items_cannot_be_referenced(make_app, serve, upstream):
    app = make_app(REQUIRE_API_KEY=True)
    server: LiveServer = serve(app)
    a, b = (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key=create_client_key(app, name), max_retries=0)
        for name in ("a", "b")
    )
    try:
        secret = a.responses.create(model="fake-model", input="A's secret")
        asked = a.responses.input_items.list(secret.id).data[0]
        for item_id in (secret.output[0].id, asked.id):
            with pytest.raises(openai.NotFoundError) as refused:
                b.responses.create(model="fake-model", input=[{"type": "item_reference", "id": item_id}])
            assert refused.value.body["message"] == NOT_FOUND.format(item_id)
        mine = a.responses.create(model="fake-model", input=[{"type": "item_reference", "id": secret.output[0].id}])
        assert mine.status == "completed"
    finally:
        a.close()
        b.close()
    assert all("A's secret" not in json.dumps(body) for body in upstream.chat_requests()[1:-1])


def test_a_conversation_takes_items_not_references(sdk):
    conversation = sdk.conversations.create().id
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.conversations.items.create(conversation, items=[{"type": "item_reference", "id": "msg_1"}])
    # Added items are stored whole; the hint no longer names previous_response_id or conversation.
    assert refused.value.param == "items.0"
    assert refused.value.body["message"] == (
        "Invalid request: items.0: Input item type 'item_reference' is not supported; send the items themselves"
    )


# -- input_file --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "chat_file"),
    [
        ({"file_data": PDF, "filename": "report.pdf"}, {"file_data": PDF, "filename": "report.pdf"}),
        ({"file_id": "file-8EFBcWHsQxZV7YGezBC1fq"}, {"file_id": "file-8EFBcWHsQxZV7YGezBC1fq"}),
    ],
    ids=["file_data", "file_id"],
)
def test_an_input_file_reaches_the_upstream_as_a_chat_file_part_and_is_listed_as_sent(sdk, upstream, part, chat_file):
    content = [{"type": "input_text", "text": "Summarise this."}, {"type": "input_file", **part}]
    response = sdk.responses.create(model="fake-model", input=[{"role": "user", "content": content}])
    assert response.output_text == "echo: Summarise this."
    assert _sent(upstream) == [
        {"role": "user", "content": [{"type": "text", "text": "Summarise this."}, {"type": "file", "file": chat_file}]}
    ]
    listed = sdk.responses.with_raw_response.input_items.list(response.id).http_response.json()["data"]
    assert listed[0]["content"] == content
    TypeAdapter(ResponseInputMessageItem).validate_python(listed[0])


@pytest.mark.parametrize(
    ("part", "field", "message"),
    [
        ({"file_url": "https://example.com/report.pdf"}, "input.0.content.1.file_url", "file_url is not supported"),
        ({"filename": "report.pdf"}, "input.0.content.1", "input_file needs file_data"),
    ],
    ids=["file_url", "no file"],
)
def test_an_input_file_chat_completions_cannot_take_is_a_400_naming_the_field(sdk, upstream, part, field, message):
    content = [{"type": "input_text", "text": "Summarise this."}, {"type": "input_file", **part}]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="fake-model", input=[{"role": "user", "content": content}])
    assert refused.value.param == field
    assert message in refused.value.message
    assert upstream.chat_requests() == []
