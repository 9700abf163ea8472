"""What one request may load and send is bounded (issue 22, item 1).

`truncation: disabled` (the Responses API's default) sends the whole history; past what
any configured model could take (HISTORY_LOAD_MAX_TOKENS, or the largest context window
of the routed deployments) the answer is OpenAI's 400 for a context that does not fit,
before anything is stored or sent, and the history is read newest first no further than
that: a conversation of 8 MB is never loaded whole. With `truncation: auto` it is trimmed
as always, read no further than trimming needs.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import openai
import pytest
from support import all_rows, deployment

from database import unit_of_work
from services.responses import store

# OpenAI's answer to an input that does not fit the model's window (Responses API).
TOO_LONG = {
    "message": "Your input exceeds the context window of this model. Please adjust your input and try again.",
    "type": "invalid_request_error",
    "param": "input",
    "code": "context_length_exceeded",
}
BOUND = 20_000  # HISTORY_LOAD_MAX_TOKENS of these tests: about 80 kB of text
ITEM_CHARS = 30_000  # each seeded item: under MAX_PROMPT_CHARS, as the Conversations API allows
BIG = 8 * 1024 * 1024  # the large conversation's text, 400 times the bound
SETTINGS = {"HISTORY_LOAD_MAX_TOKENS": BOUND, "CONVERSATION_MAX_BYTES": 64 * 1024 * 1024}


def _conversation(client, characters: int) -> str:
    """A Conversations-API conversation of `characters` of text in items of ITEM_CHARS, each
    its own exchange, oldest "item 0" first; seeded through the store (hundreds of adds)."""
    conversation_id = client.post("/v1/conversations", json={}).get_json()["id"]
    with unit_of_work() as session:
        for number in range(characters // ITEM_CHARS):
            text = f"item {number} " + "x" * ITEM_CHARS
            store.add_items(session, conversation_id, None, [{"role": "user", "content": text}])
    return conversation_id


def _peak_bytes(call: Callable[[], Any]) -> tuple[Any, int]:
    """What `call` returns, and the most memory Python had allocated above the start while it ran."""
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def _respond(client, conversation_id: str, truncation: str):
    body = {"model": "fake-model", "input": "Sum it up.", "conversation": conversation_id, "truncation": truncation}
    return client.post("/v1/responses", json=body)


def test_an_untruncated_response_over_the_bound_is_openais_400_and_reads_no_further(make_app, upstream):
    app = make_app(**SETTINGS)
    client = app.test_client()
    with app.app_context():
        warm = _conversation(client, 40 * ITEM_CHARS)
        big = _conversation(client, BIG)
    _respond(client, warm, "disabled")  # statements compiled and cached before the measure
    before = all_rows(app)

    answer, peak = _peak_bytes(lambda: _respond(client, big, "disabled"))

    assert (answer.status_code, answer.get_json()) == (400, {"error": TOO_LONG})
    assert upstream.chat_requests() == []
    assert all_rows(app) == before  # nothing stored, not even a failed exchange
    # Loaded whole, the 8 MB would have taken more than twice that; read newest first, the
    # read stops after a few rows past the bound.
    assert peak < 2 * 1024 * 1024, f"the request allocated {peak} bytes"


def test_with_truncation_auto_the_same_conversation_is_trimmed_and_read_no_further(make_app, upstream):
    # As many messages as the conversation has: only the token budget trims it.
    app = make_app(**SETTINGS, HISTORY_MAX_TOKENS=20_000, HISTORY_MAX_MESSAGES=1_000)
    client = app.test_client()
    with app.app_context():
        warm = _conversation(client, 40 * ITEM_CHARS)
        big = _conversation(client, BIG)
    _respond(client, warm, "auto")

    answer, peak = _peak_bytes(lambda: _respond(client, big, "auto"))

    assert answer.status_code == 200, answer.get_json()
    sent = upstream.chat_requests()[-1]["messages"]
    newest = BIG // ITEM_CHARS - 1
    # 20,000 tokens hold two items of 30,000 characters: the newest two, then the input.
    assert [m["content"].split(" x")[0] for m in sent] == [f"item {newest - 1}", f"item {newest}", "Sum it up."]
    assert peak < 2 * 1024 * 1024, f"the request allocated {peak} bytes"


def test_a_previous_response_chain_over_the_bound_is_the_400_and_auto_trims_it(make_app, upstream, sdk_of):
    app = make_app(HISTORY_LOAD_MAX_TOKENS=5_000)
    sdk = sdk_of(app)
    text = "y" * 4_000  # about 1,000 tokens; its echo as much
    first = sdk.responses.create(model="fake-model", input=text)
    second = sdk.responses.create(model="fake-model", input=text, previous_response_id=first.id)
    before, sent = all_rows(app), len(upstream.chat_requests())

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="fake-model", input=text, previous_response_id=second.id)

    error = refused.value
    assert (error.status_code, error.body) == (400, TOO_LONG)
    assert (len(upstream.chat_requests()), all_rows(app)) == (sent, before)
    trimmed = sdk.responses.create(model="fake-model", input=text, previous_response_id=second.id, truncation="auto")
    assert trimmed.status == "completed"


def test_the_bound_is_the_largest_context_window_when_every_deployment_declares_one(routed, fault_upstreams):
    small, large = fault_upstreams(2)
    groups = {
        "fake-model": {"deployments": [deployment(small, "small", context_window=2_000)]},
        "long-model": {"deployments": [deployment(large, "large", context_window=6_000)]},
    }
    app, server = routed(groups)
    assert app.extensions["chat"].settings.history_bound == 6_000
    client = app.test_client()
    with app.app_context():
        conversation = _conversation(client, 8 * ITEM_CHARS)  # 8 items of 7,500 tokens each
    answer = _respond(client, conversation, "disabled")
    assert (answer.status_code, answer.get_json()["error"]["code"]) == (400, "context_length_exceeded")
    assert small.chat_requests() == large.chat_requests() == []


def test_a_deployment_without_a_window_leaves_the_setting_as_the_bound(routed, fault_upstreams):
    sized, unsized = fault_upstreams(2)
    groups = {
        "fake-model": {"deployments": [deployment(sized, "sized", context_window=2_000)]},
        "other-model": {"deployments": [deployment(unsized, "unsized")]},
    }
    app, _ = routed(groups, HISTORY_LOAD_MAX_TOKENS=50_000)
    assert app.extensions["chat"].settings.history_bound == 50_000
