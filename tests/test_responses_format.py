"""The Responses API translation layer (its schemas in schemas/responses.py, services/responses/).

Every object it produces is checked with the openai SDK's own types, and its streams are read by
the SDK itself: a local HTTP server sends the translator's SSE to `client.responses.stream()`,
whose accumulator must rebuild the same final response.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.conversations import ConversationItemList
from openai.types.conversations.message import Message as ConversationMessage
from openai.types.responses import (
    Response,
    ResponseFunctionToolCallItem,
    ResponseFunctionToolCallOutputItem,
    ResponseInputMessageItem,
    ResponseItemList,
    ResponseOutputMessage,
    ResponseStreamEvent,
)
from pydantic import TypeAdapter, ValidationError
from support import (
    ResponseStreamTranslator,
    chat_messages_for,
    failed_response,
    openai_param,
    output_items_to_chat_message,
    parse_request,
)

from routes.sse import typed_event as sse
from schemas import MAX_MESSAGE_CHARS, MAX_MESSAGES, MAX_PARTS, error_details
from services.responses.items import input_items, items_to_chat_messages, tool_pairing_error
from services.responses.objects import chat_params, response_from_completion

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)
CHAT_MESSAGE = TypeAdapter(ChatCompletionMessageParam)
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


# -- fixtures: chat completions and chunks as upstreams send them ---------------------------


def _chunk(delta=None, finish_reason=None, **extra) -> dict:
    # The shape tests/fake_upstream.py streams (and OpenAI does).
    choice = {"index": 0, "delta": delta or {}}
    if finish_reason:
        choice["finish_reason"] = finish_reason
    base = {"id": "chatcmpl-fake-1", "object": "chat.completion.chunk", "created": 0, "model": "fake-model"}
    return {**base, "choices": [choice], **extra}


def _usage_chunk(prompt=11, completion=7) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {**_chunk(), "choices": [], "usage": usage}


def text_chunks(*pieces, finish_reason="stop") -> list[dict]:
    """A streamed text reply: OpenAI's role chunk, one chunk per piece, the finish, then usage."""
    opening = [_chunk({"role": "assistant", "content": "", "refusal": None})]
    return opening + [_chunk({"content": p}) for p in pieces] + [_chunk(finish_reason=finish_reason), _usage_chunk()]


def tool_call_chunks(*calls, text_first=None) -> list[dict]:
    """A streamed tool-call reply as OpenAI sends it: per call, id and name first, then argument fragments."""
    chunks = [_chunk({"role": "assistant", "content": text_first})] if text_first else []
    for index, (call_id, name, fragments) in enumerate(calls):
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        chunks.append(_chunk({"role": "assistant", "content": None, "tool_calls": [head]}))
        for fragment in fragments:
            chunks.append(_chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
    return chunks + [_chunk(finish_reason="tool_calls"), _usage_chunk()]


def completion(content="Paris.", tool_calls=None, finish_reason="stop", refusal=None) -> dict:
    """A chat.completion as the fake upstream (and OpenAI) answer it."""
    message = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-fake-2",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake-model-2024",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 9,
            "total_tokens": 39,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }


def weather_call(call_id="call_abc", city="Paris") -> dict:
    arguments = json.dumps({"city": city})
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


def request(**body):
    return parse_request({"model": "fake-model", "input": "What is the capital of France?", **body})


def translate(req, chunks) -> list[dict]:
    return list(ResponseStreamTranslator(req).translate(chunks))


# -- checks ---------------------------------------------------------------------------------


def assert_valid_chat_history(messages: list[dict]) -> None:
    """OpenAI's rule: tool messages answer, right after it, every tool call of the assistant message before."""
    pending: set[str] = set()
    for message in messages:
        CHAT_MESSAGE.validate_python(message)
        if message["role"] == "tool":
            assert message["tool_call_id"] in pending, f"tool message without its call: {message}"
            pending.discard(message["tool_call_id"])
            continue
        assert not pending, f"tool calls left unanswered before {message}"
        pending = {call["id"] for call in message.get("tool_calls") or []}
    assert not pending


def validated_events(events: list[dict]) -> list:
    """Each event as the SDK's type (its class must be the one its "type" names); sequence numbers 0..n-1."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    parsed = [STREAM_EVENT.validate_python(e) for e in events]
    for event, model in zip(events, parsed, strict=True):
        assert model.type == event["type"]
    return parsed


class SSEServer:
    """A local HTTP server answering POST /v1/responses with fixed SSE text (and keeping the request body)."""

    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.received: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                server.received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> openai.OpenAI:
        self._thread.start()
        self.client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{self._httpd.server_address[1]}/v1", api_key="unused", max_retries=0
        )
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        self._httpd.shutdown()
        self._httpd.server_close()


# -- the request schema ---------------------------------------------------------------------


def test_the_sdk_input_shapes_validate():
    req = request(
        input=[
            {"role": "user", "content": "Weather in Paris?"},  # no "type": the SDK's EasyInputMessage
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/a.png"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}", "id": "fc_1"},
            {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "sun"}]},
        ],
        conversation={"id": "conv_1"},
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
        text={"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        max_output_tokens=800.0,
        include=["reasoning.encrypted_content"],
        background=False,
        prompt=None,
    )
    assert req.conversation_id == "conv_1"
    assert req.max_output_tokens == 800
    assert req.store is True and req.tool_choice.name == "get_weather"


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        (
            {"tools": [{"type": "web_search"}]},
            "tools.0",
            "Tool type 'web_search' is not supported; only 'function' tools are",
        ),
        (
            {"tools": [{"type": "file_search", "vector_store_ids": []}]},
            "tools.0",
            "Tool type 'file_search' is not supported",
        ),
        ({"background": True}, "background", "Background mode is not supported"),
        (
            {"include": ["file_search_call.results"]},
            "include",
            "include value 'file_search_call.results' is not supported",
        ),
        ({"service_tier": "cheapest"}, "service_tier", "'auto', 'default', 'flex'"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "Prompt templates are not supported"),
        ({"top_logprobs": 21}, "top_logprobs", "less than or equal to 20"),
        ({"previous_response_id": "resp_1", "conversation": "conv_1"}, "conversation", "not both"),
        (
            {"tool_choice": {"type": "web_search_preview"}},
            "tool_choice",
            "tool_choice type 'web_search_preview' is not",
        ),
        ({"tool_choice": "required"}, "tool_choice", "needs at least one tool"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice", "'nope'"),
        ({"input": [{"type": "item_reference"}]}, "input.0.id", "Field required"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input.0", "Input item type 'reasoning' is not supported"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x.test/a.pdf"}]}]},
            "input.0.content.0.file_url",
            "input_file with a file_url is not supported",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "filename": "a.pdf"}]}]},
            "input.0.content.0",
            "input_file needs file_data",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input.0.content.0",
            "file_id",
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}]},
            "input.0.content",
            "assistant messages take",
        ),
        ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role", "'user', 'assistant', 'system' or 'developer'"),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "u"}],
                    }
                ]
            },
            "input.0.output.0",
            "only 'input_text' is",
        ),
        ({"text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema", "Field required"),
        ({"max_output_tokens": 8}, "max_output_tokens", "greater than or equal to 16"),
        ({"temperature": "0.7"}, "temperature", "valid number"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k", "at most 512"),
        ({"input": []}, "input", "at least 1 item"),
        ({"input": 5}, "input", "input must be a string or a list of input items"),
    ],
)
def test_what_we_cannot_honour_is_refused_by_name(extra, field, message):
    with pytest.raises(ValidationError) as caught:
        request(**extra)
    details = {d["field"]: d["message"] for d in error_details(caught.value)}
    assert field in details, details
    assert message in details[field]


def test_bounds_are_those_of_the_other_routes():
    user = {"role": "user", "content": "hi"}
    for body, field in [
        ({"input": [user] * (MAX_MESSAGES + 1)}, "input"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}] * (MAX_PARTS + 1)}]},
            "input.0.content",
        ),
        ({"input": "x" * (MAX_MESSAGE_CHARS + 1)}, "input"),
        ({"instructions": "x" * (MAX_MESSAGE_CHARS + 1)}, "instructions"),
    ]:
        with pytest.raises(ValidationError) as caught:
            request(**body)
        assert [d["field"] for d in error_details(caught.value)] == [field]
    assert len(request(input=[user] * MAX_MESSAGES).input) == MAX_MESSAGES


def test_error_paths_read_as_openai_params():
    assert openai_param("input.0.content.1") == "input[0].content[1]"
    assert openai_param("text.format.schema") == "text.format.schema"
    assert openai_param("body") is None


# -- input items ----------------------------------------------------------------------------


def _item_list(cls, items):
    return cls.model_validate({"object": "list", "data": items, "first_id": "a", "last_id": "b", "has_more": False})


def test_a_string_input_is_one_user_message_with_an_id():
    [item] = input_items(request(input="Hello"))
    assert item["id"].startswith("msg_") and item["role"] == "user" and item["status"] == "completed"
    assert item["content"] == [{"type": "input_text", "text": "Hello"}]


def test_input_items_are_what_input_items_list_and_conversation_items_return():
    items = input_items(
        request(
            input=[
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Look"},
                        {"type": "input_image", "image_url": "https://e.com/a.png", "detail": "low"},
                    ],
                },
                {"role": "assistant", "content": "Checking.", "id": "msg_client"},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ]
        )
    )
    assert [item["id"][: item["id"].index("_") + 1] for item in items] == ["msg_", "msg_", "msg_", "fc_", "fco_"]
    assert items[2]["id"] == "msg_client"  # the client's id is kept
    listed = _item_list(ResponseItemList, items).data
    expected = [ResponseInputMessageItem, ResponseInputMessageItem, ResponseOutputMessage]
    expected += [ResponseFunctionToolCallItem, ResponseFunctionToolCallOutputItem]
    assert [type(item) for item in listed] == expected
    assert listed[2].content[0].text == "Checking."
    conversation = _item_list(ConversationItemList, items).data
    assert [type(item) for item in conversation][:3] == [ConversationMessage] * 3
    assert type(conversation[3]) is ResponseFunctionToolCallItem


# -- items -> chat messages -----------------------------------------------------------------


def test_items_become_chat_messages_with_parts_mapped():
    items = input_items(
        request(
            input=[
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Look"},
                        {"type": "input_image", "image_url": "https://e.com/a.png", "detail": "original"},
                    ],
                },
                {"role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
            ]
        )
    )
    assert items_to_chat_messages(items) == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": "https://e.com/a.png", "detail": "high"}},
            ],
        },
        {"role": "assistant", "content": "A cat."},
    ]


def test_an_assistant_turn_with_text_and_calls_is_one_chat_message():
    items = [
        {"type": "message", "role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
    ]
    messages = items_to_chat_messages(items)
    assert messages[1] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ],
    }
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
    ]
    assert_valid_chat_history(messages)
    assert tool_pairing_error(items) is None


def test_calls_without_text_make_an_assistant_message_with_no_content():
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    assert items_to_chat_messages([{"role": "user", "type": "message", "content": "go"}, call])[1]["content"] is None


def test_unpaired_calls_and_outputs_are_named_as_openai_does():
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "call_1", "output": "x"}
    user = {"type": "message", "role": "user", "content": "next"}
    assert tool_pairing_error([output]) == "No tool call found for function call output with call_id call_1."
    assert tool_pairing_error([call, user]) == "No tool output found for function call call_1."
    assert tool_pairing_error([call]) == "No tool output found for function call call_1."
    assert tool_pairing_error([call, output, user]) is None


# -- chat parameters ------------------------------------------------------------------------


def test_chat_params_map_every_setting():
    req = request(
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        max_output_tokens=500,
        temperature=0.2,
        top_p=0.9,
        user="u-1",
        safety_identifier="hash-1",
        reasoning={"effort": "low"},
        metadata={"team": "a"},
        store=False,
    )
    assert chat_params(req) == {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parameters": WEATHER_TOOL["parameters"],
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
        "max_completion_tokens": 500,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "safety_identifier": "hash-1",
        "reasoning_effort": "low",
    }


def test_chat_params_send_nothing_by_default():
    assert chat_params(request()) == {}
    assert chat_params(request(tool_choice="none", parallel_tool_calls=False)) == {}  # no tools: no tool settings
    assert chat_params(request(text={"format": {"type": "json_object"}})) == {
        "response_format": {"type": "json_object"}
    }


def test_instructions_lead_the_chat_messages():
    req = request(instructions="Answer in French.")
    messages = chat_messages_for(req, input_items(req))
    assert messages == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "What is the capital of France?"},
    ]


# -- responses ------------------------------------------------------------------------------


def test_a_text_completion_is_a_response_the_sdk_reads():
    req = request(instructions="Be brief.", metadata={"team": "a"}, conversation="conv_1", temperature=0.5)
    body = response_from_completion(req, completion("Paris."), response_id="resp_1", created_at=1700000001)
    response = Response.model_validate(body)
    assert response.output_text == "Paris."
    assert response.id == "resp_1" and response.status == "completed" and response.completed_at
    assert response.model == "fake-model-2024"
    assert response.output[0].id.startswith("msg_") and response.output[0].status == "completed"
    assert response.usage.input_tokens == 30 and response.usage.output_tokens == 9 and response.usage.total_tokens == 39
    assert response.usage.input_tokens_details.cached_tokens == 4
    assert response.usage.output_tokens_details.reasoning_tokens == 2
    assert (response.instructions, response.metadata, response.temperature) == ("Be brief.", {"team": "a"}, 0.5)
    assert response.conversation.id == "conv_1" and response.store is True
    assert response.text.format.type == "text" and response.tool_choice == "auto" and response.tools == []
    assert json.loads(json.dumps(body)) == body  # plain JSON, ready to store


def test_a_tool_call_completion_has_function_call_items():
    req = request(tools=[WEATHER_TOOL])
    body = response_from_completion(req, completion(None, [weather_call("call_1"), weather_call("call_2", "Rome")]))
    response = Response.model_validate(body)
    assert [item.type for item in response.output] == ["function_call", "function_call"]
    first = response.output[0]
    assert first.id.startswith("fc_") and first.call_id == "call_1" and first.status == "completed"
    assert json.loads(response.output[1].arguments) == {"city": "Rome"}
    assert response.output_text == ""
    assert response.tools[0].name == "get_weather"


def test_a_reply_cut_at_max_tokens_is_incomplete():
    body = response_from_completion(request(max_output_tokens=16), completion("Par", finish_reason="length"))
    response = Response.model_validate(body)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete" and response.completed_at is None
    assert response.max_output_tokens == 16


def test_a_refusal_is_a_refusal_part():
    response = Response.model_validate(response_from_completion(request(), completion(None, refusal="I can't.")))
    assert response.output[0].content[0].type == "refusal" and response.output_text == ""
    assert output_items_to_chat_message(response.model_dump()["output"]) == {"role": "assistant", "content": "I can't."}


def test_the_recorded_offline_reply_and_a_failure_are_responses_too():
    recorded = {
        "id": "offline-1",
        "object": "chat.completion",
        "created": 0,
        "model": "offline",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},
    }
    response = Response.model_validate(response_from_completion(request(), recorded))
    assert response.output_text == "Hi." and response.usage is None
    failed = Response.model_validate(failed_response(request(), "The language model could not be reached"))
    assert failed.status == "failed" and failed.error.code == "server_error" and failed.output == []


# -- streams --------------------------------------------------------------------------------

TEXT_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_a_streamed_text_reply_follows_openais_event_order():
    events = translate(request(), text_chunks("Par", "is."))
    assert [e["type"] for e in events] == TEXT_ORDER
    parsed = validated_events(events)
    assert parsed[0].response.status == "in_progress" and parsed[0].response.output == []
    item_id = parsed[2].item.id
    assert all(e.item_id == item_id for e in parsed[3:8])
    assert [e.delta for e in parsed[4:6]] == ["Par", "is."] and parsed[4].logprobs == []
    assert parsed[6].text == "Paris." and parsed[7].part.text == "Paris." and parsed[8].item.status == "completed"
    final = parsed[-1].response
    assert final.output_text == "Paris." and final.usage.total_tokens == 18 and final.model == "fake-model"
    assert events[0]["response"]["id"] == events[-1]["response"]["id"]


def test_a_streamed_tool_call_reply():
    chunks = tool_call_chunks(("call_1", "get_weather", ['{"ci', 'ty": "Paris"}']), text_first="Checking.")
    events = translate(request(tools=[WEATHER_TOOL]), chunks)
    assert [e["type"] for e in events][8:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    parsed = validated_events(events)
    assert parsed[8].output_index == 1 and parsed[8].item.call_id == "call_1" and parsed[8].item.arguments == ""
    assert parsed[11].arguments == '{"city": "Paris"}'
    final = parsed[-1].response
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.output_text == "Checking." and final.output[1].status == "completed"


def test_parallel_calls_stream_one_item_after_the_other():
    chunks = tool_call_chunks(
        ("call_1", "get_weather", ['{"city": "Paris"}']), ("call_2", "get_weather", ['{"city": "Rome"}'])
    )
    translator = ResponseStreamTranslator(request(tools=[WEATHER_TOOL]))
    events = list(translator.translate(chunks))
    validated_events(events)
    kinds = [(e["type"], e.get("output_index")) for e in events if "output_item" in e["type"]]
    assert kinds == [
        ("response.output_item.added", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.output_item.done", 1),
    ]
    assert [call["id"] for call in translator.chat_message()["tool_calls"]] == ["call_1", "call_2"]


def test_a_stream_cut_at_max_tokens_ends_incomplete():
    events = translate(request(max_output_tokens=16), text_chunks("Par", finish_reason="length"))
    parsed = validated_events(events)
    assert parsed[-1].type == "response.incomplete"
    assert parsed[-1].response.incomplete_details.reason == "max_output_tokens"
    assert parsed[-2].item.status == "incomplete"


def test_an_empty_streamed_reply_is_still_one_message():
    events = translate(request(), [_chunk({"role": "assistant", "content": ""}), _chunk(finish_reason="stop")])
    assert [e["type"] for e in events] == [t for t in TEXT_ORDER if t != "response.output_text.delta"]
    assert validated_events(events)[-1].response.usage is None


def test_a_broken_upstream_ends_the_stream_with_response_failed():
    translator = ResponseStreamTranslator(request())
    events = translator.start() + translator.feed(_chunk({"content": "Par"}))
    events += translator.fail("The language model's stream broke off")
    parsed = validated_events(events)
    assert parsed[-1].type == "response.failed"
    failed = parsed[-1].response
    assert failed.status == "failed" and failed.error.message == "The language model's stream broke off"
    assert failed.output[0].status == "incomplete" and failed.output_text == "Par"
    assert translator.chat_message() == {"role": "assistant", "content": "Par"}
    assert translator.finish() == [] and translator.fail("again") == []  # one end per stream


def test_sse_text_is_one_event_per_block():
    event = translate(request(), text_chunks("a\nb"))[4]
    text = sse(event)
    assert text.startswith("event: response.output_text.delta\ndata: {") and text.endswith("}\n\n")
    assert text.count("\n") == 3 and json.loads(text.split("data: ", 1)[1]) == event


# -- the SDK's own stream accumulator reads our streams ----------------------------------------


def test_the_sdk_accumulates_a_streamed_text_reply():
    events = translate(request(), text_chunks("The capital ", "is ", "Paris."))
    server = SSEServer("".join(sse(e) for e in events))
    with server as client, client.responses.stream(model="fake-model", input="What is the capital?") as stream:
        deltas = [e.snapshot for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["The capital ", "The capital is ", "The capital is Paris."]
    assert final.output_text == "The capital is Paris." and final.id == events[0]["response"]["id"]
    assert final.usage.output_tokens == 7


def test_the_sdk_accumulates_a_streamed_tool_call():
    chunks = tool_call_chunks(("call_1", "get_weather", ['{"ci', 'ty": ', '"Paris"}']), text_first="Let me check.")
    events = translate(request(tools=[WEATHER_TOOL]), chunks)
    server = SSEServer("".join(sse(e) for e in events))
    with (
        server as client,
        client.responses.stream(model="fake-model", input="Weather in Paris?", tools=[WEATHER_TOOL]) as stream,
    ):
        snapshots = [e.snapshot for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert snapshots == ['{"ci', '{"city": ', '{"city": "Paris"}']
    call = final.output[1]
    assert (call.type, call.call_id, call.name, call.arguments) == (
        "function_call",
        "call_1",
        "get_weather",
        '{"city": "Paris"}',
    )
    assert call.parsed_arguments == {"city": "Paris"}  # strict tool: the SDK parses the arguments
    assert final.output_text == "Let me check."
    # The body the SDK sent is one our schema takes.
    assert parse_request(server.received[0]).tools[0].name == "get_weather"


def test_the_sdk_sees_a_failed_stream_as_failed():
    translator = ResponseStreamTranslator(request())
    events = translator.start() + translator.feed(_chunk({"content": "Par"})) + translator.fail("upstream broke off")
    server = SSEServer("".join(sse(e) for e in events))
    with server as client, client.responses.stream(model="fake-model", input="hi") as stream:
        last = list(stream)[-1]
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()
    assert last.type == "response.failed" and last.response.error.message == "upstream broke off"


# -- round trip: a tool call, its output, the next call upstream ----------------------------------


def test_round_trip_of_a_tool_call_makes_a_valid_chat_history():
    first = request(instructions="Use the tools.", input="Weather in Paris and Rome?", tools=[WEATHER_TOOL])
    history = input_items(first)
    streamed = ResponseStreamTranslator(first)
    events = list(
        streamed.translate(
            tool_call_chunks(
                ("call_1", "get_weather", ['{"city": "Paris"}']),
                ("call_2", "get_weather", ['{"city": "Rome"}']),
                text_first="Checking both.",
            )
        )
    )
    validated_events(events)
    output = events[-1]["response"]["output"]
    stored_reply = output_items_to_chat_message(output)
    assert stored_reply["content"] == "Checking both." and len(stored_reply["tool_calls"]) == 2
    assert stored_reply == streamed.chat_message()

    # The client runs the tools and answers with previous_response_id; the history is input + output.
    second = request(
        previous_response_id=events[-1]["response"]["id"],
        tools=[WEATHER_TOOL],
        input=[
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": "rain"},
        ],
    )
    items = history + output + input_items(second)
    assert tool_pairing_error(items) is None
    messages = chat_messages_for(second, items)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]  # instructions do not carry over
    assert_valid_chat_history(messages)
    _item_list(ResponseItemList, input_items(second))

    # The upstream's answer to that closes the turn.
    final = Response.model_validate(response_from_completion(second, completion("Sunny in Paris, rain in Rome.")))
    assert (
        final.output_text == "Sunny in Paris, rain in Rome."
        and final.previous_response_id == events[-1]["response"]["id"]
    )
    assert_valid_chat_history(messages + [output_items_to_chat_message(final.model_dump()["output"])])


def test_a_streamed_refusal_is_a_refusal_part():
    chunks = [
        _chunk({"role": "assistant", "refusal": "I can't"}),
        _chunk({"refusal": " help."}),
        _chunk(finish_reason="stop"),
    ]
    events = translate(request(), chunks)
    types = [e["type"] for e in events]
    assert "response.refusal.delta" in types and "response.refusal.done" in types
    final = validated_events(events)[-1].response
    assert final.output[0].content[0].refusal == "I can't help." and final.output_text == ""


def test_fragments_of_interleaved_calls_still_reach_the_final_response():
    head = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city"'}}
    second = {"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    late = {"index": 0, "function": {"arguments": ': "Paris"}'}}
    chunks = [_chunk({"tool_calls": [head]}), _chunk({"tool_calls": [second]}), _chunk({"tool_calls": [late]})]
    events = translate(request(tools=[WEATHER_TOOL]), chunks + [_chunk(finish_reason="tool_calls")])
    final = validated_events(events)[-1].response
    assert [call.arguments for call in final.output] == ['{"city": "Paris"}', "{}"]
