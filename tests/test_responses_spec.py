"""Every object and event /v1/responses (and /v1/conversations) answers, held to the Open
Responses specification's schemas (tests/open_responses.py: the `openresponses-types`
models of the specification's version 2026-04-24, applied strictly, every key declared).

The answers are read off the wire (requests against the live server, the fake upstream
behind it), not through an SDK that would forgive what the schemas do not.
"""

from __future__ import annotations

import json

import openresponses_types as spec
import pytest
import requests
from fake_upstream import RawBody, Reply, StreamReply, tool_call
from open_responses import ITEM, conforming_event, conforms
from openai.types.conversations import Conversation, ConversationDeletedResource, ConversationItemList
from openai.types.responses import ResponseItemList
from support import sse_events

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALLS = [tool_call("call_w1", "get_weather", {"city": "Paris"}), tool_call("call_w2", "get_weather", {"city": "Oslo"})]
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
# A request that sets every setting a response echoes.
EVERY_SETTING = {
    "instructions": "Be brief.",
    "tools": [WEATHER],
    "tool_choice": {"type": "function", "name": "get_weather"},
    "parallel_tool_calls": False,
    "text": {"format": {"type": "json_schema", "name": "city", "schema": CITY_SCHEMA}, "verbosity": "low"},
    "max_output_tokens": 256,
    "max_tool_calls": 2,
    "temperature": 0.2,
    "top_p": 0.5,
    "presence_penalty": 0.25,
    "frequency_penalty": -0.5,
    "top_logprobs": 2,
    "service_tier": "flex",
    "prompt_cache_key": "cities-v1",
    "metadata": {"topic": "weather"},
    "truncation": "auto",
    "user": "user-1",
    "safety_identifier": "hashed-user-1",
    "reasoning": {"effort": "low", "summary": "auto"},
    "store": False,
}


def _post(server, body: dict, **options) -> requests.Response:
    return requests.post(f"{server.url}/v1/responses", json={"model": "fake-model", **body}, timeout=30, **options)


def _get(server, path: str) -> requests.Response:
    return requests.get(f"{server.url}/v1{path}", timeout=30)


def _stream(server, body: dict) -> list[dict]:
    """Every event of a streamed response, each checked to say its type as its SSE name too."""
    with _post(server, {**body, "stream": True}, stream=True) as answer:
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        pairs = sse_events(line for line in answer.iter_lines(decode_unicode=True))
    events = [json.loads(data) for _, data in pairs]
    assert [name for name, _ in pairs] == [event["type"] for event in events]
    return events


def _chunk(delta: dict | None = None, finish_reason: str | None = None, **extra) -> dict:
    choice: dict = {"index": 0, "delta": delta or {}}
    if finish_reason:
        choice["finish_reason"] = finish_reason
    return {
        "id": "chatcmpl-raw",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake-model",
        "choices": [choice],
        **extra,
    }


def _sse(*chunks: dict) -> RawBody:
    """An upstream's streamed answer, exactly these chunks, then usage and [DONE]."""
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    events = [*chunks, {**_chunk(), "choices": [], "usage": usage}]
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in events) + "data: [DONE]\n\n"
    return RawBody(body.encode(), content_type="text/event-stream")


def _completion(text: str, finish_reason: str) -> RawBody:
    """An upstream's plain answer that ends for `finish_reason`."""
    body = {
        "id": "chatcmpl-raw",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21},
    }
    return RawBody(json.dumps(body).encode())


def _conforming_stream(events: list[dict]) -> list:
    """The events checked one by one, and as a sequence: numbered from 0, created and
    in_progress first, one terminal event last."""
    checked = [conforming_event(event) for event in events]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    terminal = {"response.completed", "response.failed", "response.incomplete"}
    assert events[-1]["type"] in terminal and not any(e["type"] in terminal for e in events[:-1])
    return checked


# -- the schemas themselves ---------------------------------------------------------------------


def test_a_missing_field_a_wrong_type_and_an_invented_field_each_fail(live_server, upstream):
    body = _post(live_server, {"input": "Name a cheese."}).json()
    conforms(spec.ResponseResource, body)  # the service's own answer passes

    def fails(mutated: dict) -> None:
        with pytest.raises(pytest.fail.Exception):
            conforms(spec.ResponseResource, mutated)

    for required in ("temperature", "service_tier", "prompt_cache_key", "max_tool_calls"):
        fails({key: value for key, value in body.items() if key != required})
    fails({**body, "top_logprobs": None})  # required and not nullable
    fails({**body, "top_p": "1"})
    fails({**body, "top_logprobs": 1.0})  # an integer, not a number
    fails({**body, "created_at": str(body["created_at"])})
    fails({**body, "invented": True})
    message = body["output"][0]
    fails({**body, "output": [{**message, "invented": 1}]})
    fails({**body, "output": [{**message, "content": [{**message["content"][0], "invented": 1}]}]})
    fails({**body, "usage": {**body["usage"], "output_tokens_details": {"reasoning_tokens": 0, "invented": 0}}})


# -- the response object ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"input": "Name a cheese."},
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": "Which city?"}]}], **EVERY_SETTING},
        {
            "input": "Weather in Paris?",
            "tools": [WEATHER],
            "tool_choice": "required",
            "text": {"format": {"type": "json_object"}},
        },
    ],
    ids=["defaults", "every setting", "json object"],
)
def test_a_plain_answer_and_its_retrieval_are_response_resources(live_server, upstream, body):
    answer = _post(live_server, body)
    assert answer.status_code == 200, answer.text
    response = answer.json()
    conforms(spec.ResponseResource, response)
    if response["store"]:
        stored = _get(live_server, f"/responses/{response['id']}")
        assert stored.status_code == 200
        assert conforms(spec.ResponseResource, stored.json()) == conforms(spec.ResponseResource, response)


def test_every_setting_is_echoed_as_sent(live_server, upstream):
    response = _post(live_server, {"input": "Which city?", **EVERY_SETTING}).json()
    echoed = {key: response[key] for key in EVERY_SETTING if key not in ("tools", "text", "tool_choice", "reasoning")}
    assert echoed == {key: value for key, value in EVERY_SETTING.items() if key in echoed}
    assert response["reasoning"] == EVERY_SETTING["reasoning"]
    assert response["text"]["format"]["schema"] == CITY_SCHEMA


def test_an_unset_setting_is_echoed_as_the_specs_example_shows_it(live_server, upstream):
    response = _post(live_server, {"input": "Name a cheese."}).json()
    defaults = {
        "temperature": 1,
        "top_p": 1,
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "top_logprobs": 0,
        "service_tier": "default",
        "max_tool_calls": None,
        "prompt_cache_key": None,
    }
    assert {key: response[key] for key in defaults} == defaults


def test_a_function_call_answer_is_a_response_resource(live_server, upstream):
    upstream.enqueue(Reply(tool_calls=CALLS))
    response = _post(live_server, {"input": "Weather in Paris and Oslo?", "tools": [WEATHER]}).json()
    conforms(spec.ResponseResource, response)
    assert [item["type"] for item in response["output"]] == ["function_call", "function_call"]


def test_an_answer_cut_by_max_output_tokens_is_an_incomplete_response_resource(live_server, upstream):
    upstream.enqueue(_completion("The longest answer that", "length"))
    response = _post(live_server, {"input": "Talk.", "max_output_tokens": 16}).json()
    conforms(spec.ResponseResource, response)
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}


# -- streams ------------------------------------------------------------------------------------------


def test_a_streamed_text_answer_is_the_specs_events(live_server, upstream):
    events = _stream(live_server, {"input": "Count to three.", "temperature": 0.3, "service_tier": "priority"})
    checked = _conforming_stream(events)
    assert events[-1]["type"] == "response.completed"
    kinds = {event["type"] for event in events}
    assert {
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    } <= kinds
    # Every snapshot of the response carries the request's settings, not only the last.
    snapshots = [event.response for event in checked if hasattr(event, "response")]
    assert [(s.temperature, s.service_tier) for s in snapshots] == [(0.3, "priority")] * 3
    stored = _get(live_server, f"/responses/{events[-1]['response']['id']}").json()
    assert conforms(spec.ResponseResource, stored) == checked[-1].response


def test_a_streamed_function_call_answer_is_the_specs_events(live_server, upstream):
    upstream.enqueue(Reply(tool_calls=CALLS))
    events = _stream(live_server, {"input": "Weather in Paris and Oslo?", "tools": [WEATHER]})
    _conforming_stream(events)
    kinds = [event["type"] for event in events]
    assert kinds.count("response.function_call_arguments.done") == 2
    assert "response.function_call_arguments.delta" in kinds


def test_a_streamed_refusal_is_the_specs_events(live_server, upstream):
    upstream.enqueue(
        _sse(
            _chunk({"role": "assistant", "content": None, "refusal": ""}),
            _chunk({"refusal": "I cannot "}),
            _chunk({"refusal": "help with that."}),
            _chunk(finish_reason="stop"),
        )
    )
    events = _stream(live_server, {"input": "Something forbidden."})
    _conforming_stream(events)
    assert {"response.refusal.delta", "response.refusal.done"} <= {event["type"] for event in events}


def test_a_stream_cut_by_max_output_tokens_ends_with_the_specs_incomplete_event(live_server, upstream):
    upstream.enqueue(
        _sse(
            _chunk({"role": "assistant", "content": "The longest "}),
            _chunk({"content": "answer"}),
            _chunk(finish_reason="length"),
        )
    )
    events = _stream(live_server, {"input": "Talk.", "max_output_tokens": 16})
    _conforming_stream(events)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_stream_the_upstream_breaks_off_ends_with_the_specs_failed_event(live_server, upstream):
    upstream.enqueue(StreamReply(["one ", "two ", "three"], error_after=2))
    events = _stream(live_server, {"input": "Count.", "top_p": 0.9})
    _conforming_stream(events)
    failed = events[-1]["response"]
    assert events[-1]["type"] == "response.failed" and failed["status"] == "failed"
    assert failed["top_p"] == 0.9
    stored = _get(live_server, f"/responses/{failed['id']}").json()
    conforms(spec.ResponseResource, stored)


def test_a_response_its_client_left_is_a_response_resource_when_retrieved(live_server, upstream):
    upstream.enqueue(StreamReply(["one ", "two ", "three"], endless=True))
    with _post(live_server, {"input": "Go on forever.", "stream": True}, stream=True) as answer:
        for line in answer.iter_lines():
            if line.startswith(b"data: "):
                response_id = json.loads(line[6:])["response"]["id"]
                break
    live_server.wait_idle()
    stored = _get(live_server, f"/responses/{response_id}").json()
    conforms(spec.ResponseResource, stored)
    assert stored["status"] == "cancelled"


# -- items, deletion, conversations --------------------------------------------------------------------


def test_input_items_are_the_specs_items_in_openais_list(live_server, upstream):
    upstream.enqueue(Reply(tool_calls=CALLS[:1]))
    first = _post(live_server, {"input": "Weather in Paris?", "tools": [WEATHER]}).json()
    image = {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"}
    answer = [
        {"type": "function_call_output", "call_id": "call_w1", "output": "18C"},
        {"role": "user", "content": [{"type": "input_text", "text": "And this?"}, image]},
    ]
    second = _post(live_server, {"input": answer, "tools": [WEATHER], "previous_response_id": first["id"]}).json()
    listed = _get(live_server, f"/responses/{second['id']}/input_items?order=asc").json()
    conforms(ResponseItemList, {**listed, "data": []})  # the envelope, as OpenAI's SDK declares it
    assert [conforms(ITEM, item, "input item").type for item in listed["data"]] == ["function_call_output", "message"]


def test_a_deletion_is_openais_answer(live_server, upstream):
    response = _post(live_server, {"input": "Forget this."}).json()
    deleted = requests.delete(f"{live_server.url}/v1/responses/{response['id']}", timeout=30)
    # Neither the specification nor the SDK (whose delete returns None) has a type for it.
    assert deleted.json() == {"id": response["id"], "object": "response", "deleted": True}


def test_conversations_and_their_items(live_server, upstream):
    base = f"{live_server.url}/v1/conversations"
    first = [{"type": "message", "role": "user", "content": "I like Comté."}]
    conversation = requests.post(base, json={"items": first, "metadata": {"a": "b"}}, timeout=30).json()
    conforms(Conversation, conversation)
    upstream.enqueue(Reply(tool_calls=CALLS[:1]))
    _post(live_server, {"input": "Weather?", "tools": [WEATHER], "conversation": conversation["id"]})
    answer = [{"type": "function_call_output", "call_id": "call_w1", "output": "18C"}]
    _post(live_server, {"input": answer, "tools": [WEATHER], "conversation": conversation["id"]})
    items = requests.get(f"{base}/{conversation['id']}/items", params={"order": "asc"}, timeout=30).json()
    conforms(ConversationItemList, {**items, "data": []})
    kinds = [conforms(ITEM, item, "conversation item").type for item in items["data"]]
    assert kinds == ["message", "message", "function_call", "function_call_output", "message"]
    one = requests.get(f"{base}/{conversation['id']}/items/{items['data'][0]['id']}", timeout=30).json()
    conforms(ITEM, one, "conversation item")
    conforms(Conversation, requests.post(f"{base}/{conversation['id']}", json={"metadata": {}}, timeout=30).json())
    conforms(ConversationDeletedResource, requests.delete(f"{base}/{conversation['id']}", timeout=30).json())


# -- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/responses", {"model": "fake-model", "input": "x", "top_logprobs": 21}, 400),
        ("post", "/responses", {"model": "fake-model", "input": "x", "service_tier": "cheapest"}, 400),
        ("post", "/responses", {"model": "fake-model", "input": "x", "previous_response_id": "resp_unknown"}, 400),
        ("post", "/responses", {"model": "fake-model", "input": "x", "temperature": 3}, 400),
        ("get", "/responses/resp_unknown", None, 404),
        ("get", "/responses/resp_unknown/input_items", None, 404),
        ("delete", "/conversations/conv_unknown", None, 404),
    ],
    ids=[
        "bad top_logprobs",
        "bad service_tier",
        "unknown previous",
        "bad temperature",
        "unknown",
        "unknown items",
        "conv",
    ],
)
def test_an_error_body_is_the_specs_error_payload(live_server, upstream, method, path, body, status):
    answer = requests.request(method, f"{live_server.url}/v1{path}", json=body, timeout=30)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"}
    conforms(spec.ErrorPayload, answer.json()["error"])
