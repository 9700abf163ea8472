"""OpenAI's compaction over a chat-completions upstream, through the official SDK:
`responses.compact` returns the user messages and one sealed `compaction` item, which a
stateless client (Codex: `store: false`, its whole input every turn) sends back and the
service expands into the summary; an item altered, sealed elsewhere or expired is refused
before anything is sent; `context_management` compacts a create past its threshold, plain
and streamed. The fake upstream is the summariser: it answers the scripted summary."""

from __future__ import annotations

import json
import time

import httpx
import openai
import openresponses_types as spec
import pytest
from cryptography.fernet import Fernet
from fake_upstream import RawBody, Reply, Status
from open_responses import conforming_event, conforms
from openai.types.responses import CompactedResponse, Response, ResponseCompactionCompactingEvent
from openai.types.responses.response_stream_event import ResponseStreamEvent
from pydantic import TypeAdapter
from support import COMPACTION_KEY, all_rows, rows_of, sse_events

FACT = "My name is Ana and I keep bees in Porto."
# A long assistant turn: what compaction replaces with a short summary.
LECTURE = "Bees need water, shade and space. " * 40
SUMMARY = "Ana keeps bees in Porto; the assistant explained what bees need."
HISTORY = [
    {"role": "user", "content": FACT},
    {"role": "assistant", "content": LECTURE},
    {"role": "user", "content": "Thanks, noted."},
    {"role": "assistant", "content": LECTURE},
]


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def _compact(sdk, upstream, **extra):
    upstream.enqueue(Reply(text=SUMMARY))
    raw = sdk.responses.with_raw_response.compact(model="fake-model", input=HISTORY, **extra)
    return raw.parse(), raw.http_response.json()


def _stored_responses(app) -> list:
    return all_rows(app)["responses"]


def test_compact_answers_openais_compaction_and_a_stateless_create_expands_it(sdk, upstream, app):
    compacted, body = _compact(sdk, upstream, instructions="You help beekeepers.")
    # The SDK's CompactedResponse parses the output (a user message as an output message).
    assert isinstance(compacted, CompactedResponse) and compacted.object == "response.compaction"
    conforms(spec.CompactResource, body)
    kinds = [(item.type, getattr(item, "role", None)) for item in compacted.output]
    assert kinds == [("message", "user"), ("message", "user"), ("compaction", None)]
    assert compacted.output[0].content[0].text == FACT
    assert compacted.usage.input_tokens == 11 and compacted.usage.output_tokens == 7
    # The summariser was asked with the whole conversation, the instructions too.
    (summarising,) = upstream.chat_requests()
    asked = summarising["messages"][-1]["content"]
    assert FACT in asked and "You help beekeepers." in asked
    # The summary is sealed: the item does not show it.
    assert SUMMARY not in compacted.output[-1].encrypted_content

    upstream.reset()
    follow_up = body["output"]  # the JSON as the client keeps it
    answer = sdk.responses.create(
        model="fake-model", input=[*follow_up, {"role": "user", "content": "Where are my bees?"}], store=False
    )
    assert answer.output_text == "echo: Where are my bees?"
    sent = upstream.chat_requests()[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "user", "assistant", "user"]
    assert sent[0]["content"] == FACT and SUMMARY in sent[2]["content"] and LECTURE not in json.dumps(sent)


def test_a_compaction_item_stands_for_everything_before_it(sdk, upstream):
    _, body = _compact(sdk, upstream)
    upstream.reset()
    # Codex keeps appending: the original turns, then the compacted output, then the new turn.
    resent = [*HISTORY, *body["output"]]
    sdk.responses.create(model="fake-model", input=[*resent, {"role": "user", "content": "And now?"}], store=False)
    sent = upstream.chat_requests()[-1]["messages"]
    assert LECTURE not in json.dumps(sent) and sent[0]["content"] == FACT and sent[-1]["content"] == "And now?"


def _sealed(item: dict, content: str) -> dict:
    return {**item, "encrypted_content": content}


def _refused(sdk, upstream, item: dict) -> openai.BadRequestError:
    upstream.reset()
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="fake-model", input=[item, {"role": "user", "content": "Hi"}], store=False)
    assert upstream.received == []  # nothing was sent upstream
    assert refused.value.code == "invalid_encrypted_content" and refused.value.param == "input[0]"
    return refused.value


def test_an_altered_item_is_refused_and_nothing_is_sent(sdk, upstream, app):
    _, body = _compact(sdk, upstream)
    item = body["output"][-1]
    token = item["encrypted_content"]
    middle = len(token) // 2
    altered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    error = _refused(sdk, upstream, _sealed(item, altered))
    assert item["id"] in error.message and "altered" in error.message
    assert _stored_responses(app) == []


def test_an_item_sealed_with_another_key_is_refused(sdk, upstream):
    payload = json.dumps({"v": 1, "key": None, "kept": [], "summary": "forged"}).encode()
    foreign = Fernet(Fernet.generate_key()).encrypt(payload).decode()
    error = _refused(sdk, upstream, {"type": "compaction", "id": "cmp_foreign", "encrypted_content": foreign})
    assert "cmp_foreign" in error.message and "another server" in error.message


def test_an_expired_item_is_refused(sdk, upstream):
    payload = json.dumps({"v": 1, "key": None, "kept": [], "summary": "old news"}).encode()
    old = Fernet(COMPACTION_KEY).encrypt_at_time(payload, int(time.time()) - 31 * 86400).decode()
    error = _refused(sdk, upstream, {"type": "compaction", "id": "cmp_old", "encrypted_content": old})
    assert "expired" in error.message


def _cut_off() -> RawBody:
    body = {
        "id": "chatcmpl-cut",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Ana keeps"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21},
    }
    return RawBody(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (Reply(text="   "), "empty summary"),
        (_cut_off(), "cut off"),
        (Reply(text=LECTURE * 3), "not shorter"),
        (Status(500, "summariser down"), None),
    ],
)
def test_a_bad_summary_is_a_clear_error_and_nothing_is_stored(sdk, upstream, app, answer, says):
    upstream.enqueue(answer)
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.responses.create(
            model="fake-model",
            input=[*HISTORY, {"role": "user", "content": "Where are my bees?"}],
            context_management=[{"type": "compaction", "compact_threshold": 100}],
        )
    assert failed.value.status_code == 502
    if says:
        assert failed.value.code == "compaction_failed" and says in failed.value.message
    assert len(upstream.chat_requests()) == 1  # the turn itself was never sent
    assert _stored_responses(app) == []
    upstream.enqueue(answer)
    with pytest.raises(openai.APIStatusError) as refused:
        sdk.responses.compact(model="fake-model", input=HISTORY)
    assert refused.value.status_code == 502 and (says is None or says in refused.value.message)
    # Not to be retried by the SDKs (their default is to retry a 502, and each try is charged).
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert refused.value.response.headers["x-should-retry"] == "false"


def test_context_management_compacts_past_its_threshold(sdk, upstream, app):
    upstream.enqueue(Reply(text=SUMMARY))
    request = {"model": "fake-model", "input": [*HISTORY, {"role": "user", "content": "Where are my bees?"}]}
    threshold = [{"type": "compaction", "compact_threshold": 100}]
    raw = sdk.responses.with_raw_response.create(**request, context_management=threshold)
    answer, body = raw.parse(), raw.http_response.json()
    conforms(spec.ResponseResource, body)
    assert isinstance(answer, Response) and [item.type for item in answer.output] == ["compaction", "message"]
    assert answer.output_text == "echo: Where are my bees?"
    sent = upstream.chat_requests()[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "user", "assistant", "user"] and SUMMARY in sent[2]["content"]
    # Stored, it is retrieved with its compaction item; a create under the threshold compacts nothing.
    assert sdk.responses.retrieve(answer.id).output[0].type == "compaction"
    upstream.reset()
    roomy = sdk.responses.create(**request, context_management=[{"type": "compaction", "compact_threshold": 100000}])
    assert [item.type for item in roomy.output] == ["message"] and len(upstream.chat_requests()) == 1


def test_a_stored_compacted_response_is_continued_from_its_compaction(sdk, upstream):
    """Stored (store: true), what the compaction stands for is recorded with the turn: a
    continuation sends the kept messages and the summary again, not just the last input."""
    upstream.enqueue(Reply(text=SUMMARY))
    first = sdk.responses.create(
        model="fake-model",
        input=[*HISTORY, {"role": "user", "content": "Where are my bees?"}],
        context_management=[{"type": "compaction", "compact_threshold": 100}],
    )
    assert [item.type for item in first.output] == ["compaction", "message"]
    sdk.responses.create(model="fake-model", input="And my hives?", previous_response_id=first.id)
    sent = upstream.chat_requests()[-1]["messages"]
    assert any(SUMMARY in str(m.get("content")) for m in sent), sent
    assert [m["role"] for m in sent][-3:] == ["user", "assistant", "user"] and sent[-1]["content"] == "And my hives?"


def test_a_chain_past_a_compacted_response_sends_what_it_compacted_once(sdk, upstream):
    """Items before the newest compaction are not sent again: in the chain first → second
    (compacted: it stands for first) → third, the third sends second's kept messages and
    summary, then second's own exchange, never first's exchange as well."""
    upstream.enqueue(Reply(text=LECTURE))
    first = sdk.responses.create(model="fake-model", input=FACT)
    upstream.enqueue(Reply(text=SUMMARY))
    second = sdk.responses.create(
        model="fake-model",
        input="Thanks, noted.",
        previous_response_id=first.id,
        context_management=[{"type": "compaction", "compact_threshold": 100}],
    )
    assert [item.type for item in second.output] == ["compaction", "message"]
    sdk.responses.create(model="fake-model", input="Where are my bees?", previous_response_id=second.id)
    sent = upstream.chat_requests()[-1]["messages"]
    assert LECTURE not in json.dumps(sent), sent
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"], sent
    assert sent[0]["content"] == FACT and SUMMARY in sent[1]["content"] and sent[-1]["content"] == "Where are my bees?"


def test_compaction_off_refuses_context_management_below_its_threshold_too(make_app, upstream):
    client = make_app(COMPACTION=False).test_client()
    request = {
        "model": "fake-model",
        "input": "Hi",
        "context_management": [{"type": "compaction", "compact_threshold": 10**6}],
    }
    refused = client.post("/v1/responses", json=request)
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "compaction_disabled"
    assert upstream.chat_requests() == []


def test_a_chain_longer_than_max_prompt_chars_is_compacted(sdk, upstream, app):
    """The summariser reads the whole chain: history, not a prompt of the client's, so not
    held to MAX_PROMPT_CHARS (each turn was within it; together they are not)."""
    limit = app.config["MAX_PROMPT_CHARS"]
    first = sdk.responses.create(model="fake-model", input="a" * (limit - 100))
    second = sdk.responses.create(model="fake-model", input="b" * (limit - 100), previous_response_id=first.id)
    upstream.enqueue(Reply(text=SUMMARY))
    compacted = sdk.responses.compact(model="fake-model", previous_response_id=second.id)
    assert compacted.output[-1].type == "compaction"
    assert len(upstream.chat_requests()[-1]["messages"][-1]["content"]) > limit


def test_context_management_streamed_announces_the_compaction_first(client, upstream):
    upstream.enqueue(Reply(text=SUMMARY))
    request = {
        "model": "fake-model",
        "input": [*HISTORY, {"role": "user", "content": "Where are my bees?"}],
        "context_management": [{"type": "compaction", "compact_threshold": 100}],
        "stream": True,
    }
    reply = client.post("/v1/responses", json=request)
    assert reply.status_code == 200
    events = [json.loads(data) for _, data in sse_events(reply.get_data(as_text=True).splitlines())]
    kinds = [event["type"] for event in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.compaction.compacting",
        "response.output_item.done",
    ]
    assert events[2]["item"]["type"] == "compaction" and events[3]["output_index"] == 0
    assert kinds[-1] == "response.completed"
    parsed = [TypeAdapter(ResponseStreamEvent).validate_python(event) for event in events]
    assert isinstance(parsed[3], ResponseCompactionCompactingEvent)
    # The specification streams no compaction event; every other one conforms to it.
    for event in events:
        if event["type"] != "response.compaction.compacting":
            conforming_event(event)
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["compaction", "message"]
    assert final["output"][1]["content"][0]["text"] == "echo: Where are my bees?"


def test_a_service_without_a_compaction_key_answers_503_that_the_sdk_does_not_retry(make_app, serve, upstream):
    """No COMPACTION_KEY (development): compacting is a 503 compaction_unavailable. A retry
    cannot bring the setting, so the answer says `x-should-retry: false` and the official
    SDK, with its default retries, asks once."""
    server = serve(make_app(COMPACTION_KEY=None))
    sent = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", http_client=http)  # max_retries 2
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.compact(model="fake-model", input=HISTORY)
    client.close()
    answer = caught.value.response
    assert answer.status_code == 503 and answer.headers["x-should-retry"] == "false"
    assert caught.value.body["code"] == "compaction_unavailable"
    assert len(sent) == 1 and upstream.chat_requests() == []


def test_a_client_gone_while_the_compaction_is_announced_leaves_no_exchange_pending(app, upstream):
    """The client leaves while the stream's first events (the compaction's) are written: the
    server closes the stream there, as gunicorn does. The turn's exchange had been opened
    upstream; it is recorded as disconnected at once (its reservation settled), not left
    pending for the sweeper with the upstream's stream open."""
    upstream.enqueue(Reply(text=SUMMARY))
    request = {
        "model": "fake-model",
        "input": [*HISTORY, {"role": "user", "content": "Where are my bees?"}],
        "context_management": [{"type": "compaction", "compact_threshold": 100}],
        "stream": True,
    }
    reply = app.test_client().post("/v1/responses", json=request, buffered=False)
    assert reply.status_code == 200
    first = next(iter(reply.response))
    assert b"response.created" in first
    reply.close()
    statuses = {row["status"] for row in rows_of(app)}
    assert "pending" not in statuses and "disconnected" in statuses, statuses
