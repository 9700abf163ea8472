"""The settings of a /v1/responses request that chat completions can carry reach the upstream
and come back in the response; max_tool_calls is enforced here; what cannot be honoured is
OpenAI's 400 naming the field; a request may name no model. All through the official SDK,
against the live server and the fake upstream (which records what it was sent).
"""

from __future__ import annotations

import json

import openai
import pytest
from fake_upstream import RawBody, Reply, tool_call, tool_history_error
from support import LiveServer

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALLS = [tool_call(f"call_{city}", "get_weather", {"city": city}) for city in ("Paris", "Oslo", "Rome")]
LOGPROBS = "message.output_text.logprobs"


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def _create(sdk, stream: bool, **body):
    """A response made plainly or streamed (the SDK's accumulator's final response)."""
    body = {"model": "fake-model", "input": "Name a cheese.", **body}
    if not stream:
        return sdk.responses.create(**body)
    with sdk.responses.stream(**body) as events:
        for _ in events:
            pass
        return events.get_final_response()


def _sent(upstream) -> dict:
    """The last chat request the upstream received."""
    return upstream.chat_requests()[-1]


# -- each setting reaches the upstream and is echoed ------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("presence_penalty", 0.5),
        ("frequency_penalty", -0.75),
        ("prompt_cache_key", "cheese-bot-v2"),
        ("service_tier", "flex"),
    ],
)
def test_a_setting_chat_completions_has_reaches_the_upstream_and_is_echoed(sdk, upstream, setting, value, stream):
    # The SDK's create() has no penalty arguments (the specification does): extra_body sends them.
    response = _create(sdk, stream, extra_body={setting: value})
    assert _sent(upstream)[setting] == value
    assert getattr(response, setting) == value
    assert getattr(sdk.responses.retrieve(response.id), setting) == value


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_top_logprobs_with_the_logprobs_include_asks_the_upstream_for_logprobs(sdk, upstream, stream):
    response = _create(sdk, stream, top_logprobs=3, include=[LOGPROBS])
    sent = _sent(upstream)
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 3)
    assert response.top_logprobs == 3


def test_top_logprobs_alone_is_echoed_and_asks_nothing_that_would_reach_nobody(sdk, upstream):
    # OpenAI returns logprobs only when `include` asks for them; chat's top_logprobs needs logprobs.
    response = sdk.responses.create(model="fake-model", input="Name a cheese.", top_logprobs=3)
    assert response.top_logprobs == 3
    assert "logprobs" not in _sent(upstream) and "top_logprobs" not in _sent(upstream)


def _token(text: str, logprob: float) -> dict:
    alternatives = [{"token": text, "logprob": logprob, "bytes": list(text.encode())}]
    alternatives.append({"token": "Brie", "logprob": -3.5, "bytes": None})
    return {"token": text, "logprob": logprob, "bytes": None, "top_logprobs": alternatives}


TOKENS = [_token("Com", -0.25), _token("té", -0.5)]


def test_the_upstreams_logprobs_are_the_output_texts(sdk, upstream):
    completion = {
        "id": "chatcmpl-lp",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Comté"},
                "logprobs": {"content": TOKENS, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    upstream.enqueue(RawBody(json.dumps(completion).encode()))
    response = sdk.responses.create(model="fake-model", input="A cheese?", top_logprobs=2, include=[LOGPROBS])
    logprobs = response.output[0].content[0].logprobs
    assert [(lp.token, lp.logprob, lp.bytes) for lp in logprobs] == [
        ("Com", -0.25, list(b"Com")),
        ("té", -0.5, list("té".encode())),
    ]
    assert [alt.token for alt in logprobs[0].top_logprobs] == ["Com", "Brie"]
    assert logprobs[0].top_logprobs[1].bytes == list(b"Brie")  # chat's null bytes, filled in


def test_the_upstreams_streamed_logprobs_are_each_deltas_and_the_output_texts(sdk, upstream):
    base = {"id": "chatcmpl-lp", "object": "chat.completion.chunk", "created": 0, "model": "fake-model"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "Com"}, "logprobs": {"content": TOKENS[:1]}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "té"}, "logprobs": {"content": TOKENS[1:]}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
    ]
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    upstream.enqueue(RawBody(body.encode(), content_type="text/event-stream"))
    with sdk.responses.stream(model="fake-model", input="A cheese?", top_logprobs=2, include=[LOGPROBS]) as events:
        deltas = [event.logprobs for event in events if event.type == "response.output_text.delta"]
        final = events.get_final_response()
    assert [[lp.token for lp in delta] for delta in deltas] == [["Com"], ["té"]]
    assert [lp.token for lp in final.output[0].content[0].logprobs] == ["Com", "té"]
    assert sdk.responses.retrieve(final.id).output[0].content[0].logprobs[1].logprob == -0.5


def test_the_service_tier_the_upstream_says_it_used_is_the_responses(sdk, upstream):
    completion = {
        "id": "chatcmpl-tier",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "service_tier": "default",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Brie"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    upstream.enqueue(RawBody(json.dumps(completion).encode()))
    response = sdk.responses.create(model="fake-model", input="A cheese?", service_tier="auto")
    assert _sent(upstream)["service_tier"] == "auto"
    assert response.service_tier == "default"  # as OpenAI answers: the tier that served it


# -- max_tool_calls ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("limit", [1, 2])
def test_max_tool_calls_keeps_the_first_calls_and_a_continuation_answers_only_those(sdk, upstream, limit, stream):
    upstream.enqueue(Reply(tool_calls=CALLS))
    asked = _create(sdk, stream, input="Weather in Paris, Oslo and Rome?", tools=[WEATHER], max_tool_calls=limit)
    assert asked.max_tool_calls == limit
    # A limit of 1 is the upstream's own no-parallel-calls; above it, the upstream is not limited.
    assert _sent(upstream)["parallel_tool_calls"] is (limit != 1)
    calls = [item for item in asked.output if item.type == "function_call"]
    assert [call.call_id for call in calls] == [call["id"] for call in CALLS[:limit]]
    assert [item.call_id for item in sdk.responses.retrieve(asked.id).output] == [c.call_id for c in calls]

    outputs = [{"type": "function_call_output", "call_id": call.call_id, "output": "18C"} for call in calls]
    done = sdk.responses.create(
        model="fake-model", input=outputs, tools=[WEATHER], previous_response_id=asked.id, max_tool_calls=limit
    )
    assert done.status == "completed"
    history = _sent(upstream)["messages"]
    assert tool_history_error(history) is None
    assert {"role": "assistant", "content": None, "tool_calls": CALLS[:limit]} in history


# -- what cannot be honoured -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("top_logprobs", 21, "less than or equal to 20"),
        ("top_logprobs", -1, "greater than or equal to 0"),
        ("service_tier", "cheapest", "'auto', 'default', 'flex', 'scale', 'priority', 'fast' or 'ultrafast'"),
        ("max_tool_calls", 0, "greater than or equal to 1"),
        ("presence_penalty", 2.5, "less than or equal to 2"),
        ("frequency_penalty", -3, "greater than or equal to -2"),
        ("prompt_cache_key", "k" * 65, "at most 64 characters"),
    ],
)
def test_a_setting_that_cannot_be_honoured_is_openais_400_naming_it(sdk, upstream, setting, value, says):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="fake-model", input="Name a cheese.", extra_body={setting: value})
    assert refused.value.param == setting
    assert f"{setting}: " in refused.value.message and says in refused.value.message
    assert upstream.chat_requests() == []  # nothing sent


# -- no model ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_request_naming_no_model_is_answered_by_the_default_one(make_app, upstream, stream):
    server = LiveServer(make_app(OPENAI_MODEL="house-model"))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    try:
        if stream:
            # The SDK's responses.stream() insists on a model; create(stream=True) does not.
            with client.responses.create(input="Name a cheese.", stream=True) as events:
                snapshots = [event.response for event in events if hasattr(event, "response")]
            assert [s.model for s in snapshots[:-1]] == ["fake-model", "fake-model"]  # named by the first chunk
            response = snapshots[-1]
        else:
            response = client.responses.create(input="Name a cheese.")
        assert response.status == "completed" and response.output_text == "echo: Name a cheese."
        assert _sent(upstream)["model"] == "house-model"
        assert response.model == "fake-model"  # the model the upstream says answered
    finally:
        client.close()
        server.stop()


def test_a_stream_naming_no_model_that_fails_at_once_names_the_default_one(make_app, upstream):
    server = LiveServer(make_app(OPENAI_MODEL="house-model"))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    upstream.enqueue(
        RawBody(b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n', "text/event-stream")
    )
    try:
        with client.responses.create(input="Name a cheese.", stream=True) as events:
            kinds = [(event.type, event.response.model) for event in events if hasattr(event, "response")]
        assert kinds[-1] == ("response.failed", "house-model")
    finally:
        client.close()
        server.stop()
