"""The Responses API's WebSocket mode (Open Responses' `x-openresponses-websocket`, 2026-04-24)
as it is served: gunicorn with its gevent worker (`make run`'s), client keys on, rate limits
on, a fake upstream behind it, and clients that speak WebSocket for real (the `websockets`
library, and the official SDK's `responses.connect()`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import openai
import pytest
import requests
import sqlalchemy as sa
from fake_upstream import Hang, Reply, Status, StreamReply, tool_call
from openresponses_types import WebSocketErrorEvent
from support import Served, bearer, poll_until, run_flask, sse_events, upstream_service_env
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from services.client_keys import PREFIX_LENGTH

WORKER_READY = "LLM upstream: OpenAI at"
ENDINGS = {"response.completed", "response.failed", "response.incomplete", "error"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass
class Gateway:
    """The served service, its settings, and its client keys by name."""

    served: Served
    env: dict[str, str]
    keys: dict[str, str]

    @property
    def ws_url(self) -> str:
        return self.served.url.replace("http://", "ws://") + "/v1/responses"

    @contextmanager
    def socket(self, key: str = "main") -> Iterator[ClientConnection]:
        """A WebSocket on /v1/responses presenting the key `key` names."""
        with connect(self.ws_url, additional_headers=bearer(self.keys[key]), proxy=None) as ws:
            yield ws

    def get(self, path: str, key: str = "main") -> requests.Response:
        return requests.get(self.served.url + path, headers=bearer(self.keys[key]), timeout=30)


def _key(env: dict[str, str], name: str, *options: str) -> str:
    made = run_flask(env, "keys", "create", "--name", name, *options)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(request, upstream, tmp_path_factory) -> Iterator[Gateway]:
    settings = {"WEB_CONCURRENCY": "1", "REQUIRE_API_KEY": "true", "RATELIMIT_ENABLED": "true"}
    if request.param == "postgresql":
        settings["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    env = upstream_service_env(tmp_path_factory.mktemp("websocket"), upstream, **settings)
    served = Served(env)  # migrates first
    try:
        served.wait_for(WORKER_READY)
        keys = {
            "main": _key(env, "main"),
            "other": _key(env, "other"),
            "limited": _key(env, "limited", "--rate", "3 per minute"),
            "broke": _key(env, "broke", "--daily-tokens", "1"),
        }
        yield Gateway(served, env, keys)
    finally:
        log = served.stop()
    assert "Traceback" not in log, log


def turn(ws: ClientConnection, **body) -> list[dict]:
    """Send one `response.create` and read its events, up to the one that ends it."""
    ws.send(json.dumps({"type": "response.create", **body}))
    return rest_of_turn(ws)


def rest_of_turn(ws: ClientConnection) -> list[dict]:
    events: list[dict] = []
    while not events or events[-1]["type"] not in ENDINGS:
        events.append(json.loads(ws.recv(timeout=30)))
    return events


def text_of(events: list[dict]) -> str:
    return "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")


def check_error(event: dict, status: int, code: str, param: str | None = None) -> None:
    """`event` is the spec's WebSocketErrorEvent with this status, code and param."""
    WebSocketErrorEvent.model_validate(event)
    assert (event["status"], event["error"]["code"], event["error"]["param"]) == (status, code, param), event


# -- one response, then more on the same connection -------------------------------------------


def test_a_response_streams_the_events_of_the_sse_stream(gateway, upstream):
    request = {"model": "fake-model", "input": "Name a French cheese.", "instructions": "Be brief."}
    with gateway.socket() as ws:
        events = turn(ws, **request)
    over_http = requests.post(
        gateway.served.url + "/v1/responses", json={**request, "stream": True}, headers=bearer(gateway.keys["main"])
    )
    sse = [json.loads(data) for _, data in sse_events(over_http.text.splitlines())]
    assert [e["type"] for e in events] == [e["type"] for e in sse]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert text_of(events) == text_of(sse) == "echo: Name a French cheese."
    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["instructions"] == "Be brief."
    assert upstream.chat_requests()[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    # Stored as over HTTP: retrievable by its id.
    stored = gateway.get(f"/v1/responses/{completed['id']}").json()
    assert stored["output"] == completed["output"]


@pytest.mark.parametrize("store", [True, False], ids=["stored", "not-stored"])
def test_sequential_responses_on_one_connection_continue_each_other(gateway, upstream, store):
    with gateway.socket() as ws:
        first = turn(ws, model="fake-model", input="My name is Ana.", store=store)[-1]["response"]
        second = turn(ws, model="fake-model", input="What is my name?", store=store, previous_response_id=first["id"])
        third = turn(
            ws, model="fake-model", input="And again?", store=store, previous_response_id=second[-1]["response"]["id"]
        )
    assert second[-1]["response"]["previous_response_id"] == first["id"]
    assert [m["content"] for m in upstream.chat_requests()[-1]["messages"]] == [
        "My name is Ana.",
        "echo: My name is Ana.",
        "What is my name?",
        "echo: What is my name?",
        "And again?",
    ]
    assert third[-1]["type"] == "response.completed"
    # A stored chain is the store's (retrievable); a store: false one never was.
    assert gateway.get(f"/v1/responses/{first['id']}").status_code == (200 if store else 404)


def test_a_tool_loop_on_one_connection_answers_the_call_of_the_last_response(gateway, upstream):
    upstream.enqueue(Reply(text="Let me check.", tool_calls=[tool_call("call_ws1", "get_weather", {"city": "Oslo"})]))
    with gateway.socket() as ws:
        called = turn(ws, model="fake-model", input="Weather in Oslo?", tools=[WEATHER], store=False)[-1]["response"]
        assert [item["type"] for item in called["output"]] == ["message", "function_call"]
        answer = {"type": "function_call_output", "call_id": "call_ws1", "output": "-3 C and snow"}
        done = turn(
            ws, model="fake-model", input=[answer], tools=[WEATHER], previous_response_id=called["id"], store=False
        )
        unanswered = turn(ws, model="fake-model", input=[answer], previous_response_id=done[-1]["response"]["id"])
    assert done[-1]["type"] == "response.completed"
    assert [m["role"] for m in upstream.chat_requests()[-1]["messages"]] == ["user", "assistant", "tool"]
    # The call was answered by then: answering it again is refused as over HTTP, as an event.
    check_error(unanswered[-1], 400, "invalid_request", "input")


def test_a_continuation_carries_only_the_calls_max_tool_calls_kept(gateway, upstream):
    """Held in memory (store: false), the reply is sent on as the client was shown it: with
    max_tool_calls 1, the second call the model made is neither shown nor sent upstream again."""
    calls = [tool_call("call_kept", "get_weather", {"city": "Oslo"}), tool_call("call_cut", "get_weather", {})]
    upstream.enqueue(Reply(text="", tool_calls=calls))
    with gateway.socket() as ws:
        called = turn(ws, model="fake-model", input="Weather?", tools=[WEATHER], store=False, max_tool_calls=1)
        called = called[-1]["response"]
        assert [item["call_id"] for item in called["output"] if item["type"] == "function_call"] == ["call_kept"]
        answer = {"type": "function_call_output", "call_id": "call_kept", "output": "-3 C"}
        done = turn(
            ws, model="fake-model", input=[answer], tools=[WEATHER], previous_response_id=called["id"], store=False
        )
    assert done[-1]["type"] == "response.completed"
    assistant = next(m for m in upstream.chat_requests()[-1]["messages"] if m["role"] == "assistant")
    assert [call["id"] for call in assistant["tool_calls"]] == ["call_kept"]


# The SDK (openai 3.54) opens its socket with websockets' connect() outside a `with`, which
# websockets 17 deprecates: the SDK's warning, not this service's.
@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
def test_the_official_sdks_websocket_client_chains_two_responses(gateway, upstream):
    client = openai.OpenAI(base_url=gateway.served.url + "/v1", api_key=gateway.keys["main"], max_retries=0)
    try:
        with client.responses.connect() as connection:
            connection.response.create(model="fake-model", input="Remember 42.", store=False)
            first = next(e for e in connection if e.type == "response.completed").response
            connection.response.create(
                model="fake-model", input="What number?", previous_response_id=first.id, store=False
            )
            second = next(e for e in connection if e.type in ENDINGS)
    finally:
        client.close()
    assert first.output_text == "echo: Remember 42."
    assert second.type == "response.completed" and second.response.output_text == "echo: What number?"
    assert len(upstream.chat_requests()[-1]["messages"]) == 3


# -- reconnecting, and continuations that fail ----------------------------------------------------


def test_a_reconnect_recovers_a_store_false_chain_as_the_spec_describes(gateway, upstream):
    with gateway.socket() as ws:
        lost = turn(ws, model="fake-model", input="Remember 7.", store=False)[-1]["response"]
        kept = turn(ws, model="fake-model", input="Remember 8.")[-1]["response"]
    with gateway.socket() as ws:
        # store: false lived in the old connection's memory only: not found on a new one...
        not_found = turn(ws, model="fake-model", input="Which number?", store=False, previous_response_id=lost["id"])
        assert len(not_found) == 1
        check_error(not_found[0], 400, "previous_response_not_found", "previous_response_id")
        # ...and the client starts a new chain with the whole context as its input.
        context = [
            {"type": "message", "role": "user", "content": "Remember 7."},
            *lost["output"],
            {"type": "message", "role": "user", "content": "Which number?"},
        ]
        restarted = turn(ws, model="fake-model", input=context, store=False)
        assert restarted[-1]["type"] == "response.completed"
        assert [m["content"] for m in upstream.chat_requests()[-1]["messages"]] == [
            "Remember 7.",
            "echo: Remember 7.",
            "Which number?",
        ]
        # A stored response is continued from the store on any connection.
        continued = turn(ws, model="fake-model", input="And this one?", previous_response_id=kept["id"])
    assert continued[-1]["type"] == "response.completed"
    assert [m["content"] for m in upstream.chat_requests()[-1]["messages"]][:2] == ["Remember 8.", "echo: Remember 8."]


def test_previous_response_not_found_is_an_event_and_the_connection_goes_on(gateway, upstream):
    with gateway.socket() as ws:
        first = turn(ws, model="fake-model", input="x", previous_response_id="resp_unknown")
        with gateway.socket("other") as stranger:
            mine = turn(ws, model="fake-model", input="Mine.")[-1]["response"]
            theirs = turn(stranger, model="fake-model", input="x", previous_response_id=mine["id"])
        after = turn(ws, model="fake-model", input="Still here?")
    check_error(first[-1], 400, "previous_response_not_found", "previous_response_id")
    check_error(theirs[-1], 400, "previous_response_not_found", "previous_response_id")
    assert after[-1]["type"] == "response.completed"


def test_an_upstream_failure_mid_stream_is_a_failed_event_and_forgets_what_it_continued(gateway, upstream):
    with gateway.socket() as ws:
        first = turn(ws, model="fake-model", input="Start.", store=False)[-1]["response"]
        upstream.enqueue(StreamReply(["Hel", "lo ", "there"], error_after=2))
        failed = turn(ws, model="fake-model", input="Go on.", store=False, previous_response_id=first["id"])
        again = turn(ws, model="fake-model", input="Go on.", store=False, previous_response_id=first["id"])
        upstream.enqueue(Status(500, "upstream down"))
        refused = turn(ws, model="fake-model", input="Fresh start.")
        after = turn(ws, model="fake-model", input="Fresh start.")
    assert text_of(failed) == "Hello "
    assert failed[-1]["type"] == "response.failed"
    assert failed[-1]["response"]["error"]["code"] == "server_error"
    # The failed turn forgot the response it continued (OpenAI evicts it too).
    check_error(again[-1], 400, "previous_response_not_found", "previous_response_id")
    # A failure before the first event is the HTTP route's answer, as an event.
    upstream.enqueue(Status(500, "upstream down"))
    over_http = requests.post(
        gateway.served.url + "/v1/responses",
        json={"model": "fake-model", "input": "Fresh start.", "stream": True},
        headers=bearer(gateway.keys["main"]),
    )
    assert len(refused) == 1 and refused[0]["status"] == over_http.status_code >= 500
    WebSocketErrorEvent.model_validate(refused[0])
    assert refused[0]["error"]["message"] == over_http.json()["error"]["message"]
    assert after[-1]["type"] == "response.completed"


def test_a_client_gone_mid_stream_leaves_its_response_cancelled(gateway, upstream):
    resume = threading.Event()
    upstream.enqueue(StreamReply(["one ", "two ", "three"], hold_after=1, resume=resume, hold_max_seconds=30))
    with gateway.socket() as ws:
        ws.send(json.dumps({"type": "response.create", "model": "fake-model", "input": "Count."}))
        created = json.loads(ws.recv(timeout=30))
        while json.loads(ws.recv(timeout=30))["type"] != "response.output_text.delta":
            pass
    resume.set()
    path = f"/v1/responses/{created['response']['id']}"
    assert poll_until(lambda: gateway.get(path).status_code == 200)
    assert gateway.get(path).json()["status"] == "cancelled"


def test_no_database_transaction_is_open_while_the_model_answers(gateway, upstream):
    if not gateway.env["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("PostgreSQL shows every session's state; SQLite has none to show")
    release, arrived = threading.Event(), threading.Event()
    engine = sa.create_engine(gateway.env["DATABASE_URL"])
    try:
        with gateway.socket() as ws:
            first = turn(ws, model="fake-model", input="One.", store=False)[-1]["response"]
            upstream.enqueue(Hang(release, max_seconds=30))
            upstream.on_request = lambda _received: arrived.set()
            continuing = {"model": "fake-model", "input": "Two.", "store": False, "previous_response_id": first["id"]}
            ws.send(json.dumps({"type": "response.create", **continuing}))
            assert arrived.wait(30), "the message never reached the upstream"
            with engine.connect() as connection:  # the service's sessions, each idle or in a transaction
                busy = connection.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'llm-gateway' "
                        "AND datname = current_database() AND state <> 'idle'"
                    )
                ).scalar()
            release.set()
            answered = rest_of_turn(ws)
    finally:
        release.set()
        engine.dispose()
    assert busy == 0
    assert answered[-1]["type"] == "response.completed"


# -- bad messages, keys, limits and budgets -----------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code", "param"),
    [
        ("not json", "invalid_json", None),
        ("[1, 2]", "unknown_event_type", "type"),
        (json.dumps({"type": "response.cancel"}), "unknown_event_type", "type"),
        (json.dumps({"type": "response.create", "model": "fake-model", "input": "x", "stream": True}),
         "unsupported_parameter", "stream"),
        (json.dumps({"type": "response.create", "model": "fake-model", "input": "x", "background": True}),
         "unsupported_parameter", "background"),
        (json.dumps({"type": "response.create", "model": "fake-model", "input": "x", "stream_id": "lane-1"}),
         "unsupported_parameter", "stream_id"),
        (json.dumps({"type": "response.create", "model": "fake-model", "input": "x", "generate": False}),
         "unsupported_parameter", "generate"),
        (json.dumps({"type": "response.create", "model": "fake-model", "input": "x", "temperature": "hot"}),
         "invalid_request", "temperature"),
        (json.dumps({"type": "response.create", "model": "fake-model"}), "invalid_request", "input"),
    ],
    ids=["not-json", "not-an-object", "unknown-type", "stream", "background", "stream_id", "warm-up",
         "bad-field", "no-input"],
)  # fmt: skip
def test_a_bad_message_gets_an_error_event_and_the_connection_goes_on(gateway, upstream, message, code, param):
    with gateway.socket() as ws:
        ws.send(message)
        refused = rest_of_turn(ws)
        after = turn(ws, model="fake-model", input="Fine now?")
    assert len(refused) == 1
    check_error(refused[0], 400, code, param)
    assert after[-1]["type"] == "response.completed"
    assert len(upstream.chat_requests()) == 1  # the bad message reached nothing


@pytest.mark.parametrize("authorization", [None, "Bearer gw-not-a-key"], ids=["no-key", "bad-key"])
def test_the_upgrade_needs_a_valid_key(gateway, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    with pytest.raises(InvalidStatus) as refused:
        connect(gateway.ws_url, additional_headers=headers, proxy=None)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] in {"missing_api_key", "invalid_api_key"}


def test_each_message_spends_the_completion_rate_limit(gateway, upstream):
    with gateway.socket("limited") as ws:  # its own limit: 3 per minute
        answered = [turn(ws, model="fake-model", input=f"Message {n}.")[-1]["type"] for n in range(3)]
        limited = turn(ws, model="fake-model", input="One too many.")
    assert answered == ["response.completed"] * 3
    assert len(limited) == 1
    check_error(limited[0], 429, "rate_limit_exceeded")
    assert int(limited[0]["error"]["headers"]["retry-after"]) > 0
    assert len(upstream.chat_requests()) == 3


def test_each_message_is_charged_to_the_keys_budget(gateway, upstream):
    with gateway.socket("broke") as ws:  # a budget of 1 token a day
        refused = turn(ws, model="fake-model", input="Too dear.")
    assert len(refused) == 1
    check_error(refused[0], 429, "daily_token_budget_exceeded")
    assert int(refused[0]["error"]["headers"]["retry-after"]) > 0
    assert upstream.chat_requests() == []


def test_each_message_is_a_request_in_the_log_and_a_plain_get_is_told_to_upgrade(gateway, upstream):
    def message_lines() -> list[dict]:
        return [line for line in gateway.served.request_lines() if line["method"] == "WEBSOCKET"]

    before = len(message_lines())
    with gateway.socket() as ws:
        turn(ws, model="fake-model", input="Logged?")
        ws.send("not json")
        rest_of_turn(ws)
    plain = gateway.get("/v1/responses")
    assert plain.status_code == 426 and plain.headers["Upgrade"] == "websocket"
    assert plain.json()["error"]["code"] == "upgrade_required"
    assert poll_until(lambda: len(message_lines()) == before + 2)
    lines = message_lines()[before:]
    assert [line["status"] for line in lines] == [200, 400]
    assert lines[0]["usage"]["total_tokens"] == 18 and lines[0]["stream_outcome"] == "completed"
    assert all(line["client_key"] and line["route"] == "/v1/responses" for line in lines)


def test_a_key_revoked_while_its_connection_is_open_is_refused_from_its_next_message(gateway, upstream):
    """The key is read again for each message, as for each POST: revoked (by the CLI, in
    another process) after a first answer, the next message gets a 401 error event, nothing
    is sent upstream, and the connection is closed."""
    doomed = _key(gateway.env, "doomed")
    gateway.keys["doomed"] = doomed
    with gateway.socket("doomed") as ws:
        assert turn(ws, model="fake-model", input="Before.")[-1]["type"] == "response.completed"
        revoked = run_flask(gateway.env, "keys", "revoke", doomed[:PREFIX_LENGTH])
        assert revoked.returncode == 0, revoked.stderr
        refused = turn(ws, model="fake-model", input="After.")
        check_error(refused[0], 401, "invalid_api_key")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008
    assert [request["messages"][-1]["content"] for request in upstream.chat_requests()] == ["Before."]
