"""The fault upstreams do on the wire what they claim (tests/fault_upstream.py), so a routing
test that fails, fails because of the service, never because its fake misbehaved otherwise."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests
from fake_upstream import Reply
from fault_upstream import (
    PREFILL_REJECTED,
    Failure,
    FaultStream,
    Flapping,
    Reset,
    Silent,
    context_too_long,
    rate_limited,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STREAMED = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


def _raw_post(server, body: dict, read_timeout: float = 5) -> socket.socket:
    """A chat completion request written on a raw socket; the socket, to read the answer."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout)
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def _data_lines(response) -> list[str]:
    return [line[6:] for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]


def test_a_reset_is_a_real_rst_before_any_byte(fault_upstreams):
    (server,) = fault_upstreams(1)
    server.enqueue(Reset())
    sock = _raw_post(server, CHAT)
    with sock, pytest.raises(ConnectionResetError):
        sock.recv(1024)
    assert len(server.chat_requests()) == 1  # it read and recorded the request first


def test_silent_sends_nothing_until_released_then_closes_without_a_byte(fault_upstreams):
    (server,) = fault_upstreams(1)
    release = threading.Event()
    server.enqueue(Silent(seconds=30, release=release))
    with _raw_post(server, CHAT, read_timeout=0.5) as sock:
        with pytest.raises(TimeoutError):
            sock.recv(1024)
        release.set()
        sock.settimeout(5)
        assert sock.recv(1024) == b""  # closed, never answered


def test_silent_then_answers_after_its_wait(fault_upstreams):
    (server,) = fault_upstreams(1)
    server.enqueue(Silent(seconds=0.2, then=Reply(text="late")))
    answer = requests.post(server.base_url + "/chat/completions", json=CHAT, timeout=5)
    assert answer.json()["choices"][0]["message"]["content"] == "late"


def test_stopping_ends_a_held_answer_at_once(fault_upstreams):
    (server,) = fault_upstreams(1)
    server.enqueue(Silent(seconds=600))
    sock = _raw_post(server, CHAT, read_timeout=30)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(timeout=10)
    assert not stopper.is_alive()
    with sock:
        try:
            answered = sock.recv(1024)
        except ConnectionResetError:  # a connection dropped while the server shuts down may end in an RST
            answered = b""
    assert answered == b""  # ended, never answered


def test_first_token_after_sends_headers_at_once_and_tokens_after_release(fault_upstreams):
    (server,) = fault_upstreams(1)
    release = threading.Event()
    server.enqueue(FaultStream(["a ", "b"], first_token_after=30, release=release))
    with requests.post(server.base_url + "/chat/completions", json=STREAMED, stream=True, timeout=5) as response:
        assert response.status_code == 200  # the headers came while the tokens are held
        assert len(server.chat_requests()) == 1  # (the request was read)
        release.set()
        data = _data_lines(response)
    texts = [c["choices"][0]["delta"].get("content") for c in map(json.loads, data[:-1]) if c["choices"]]
    assert "".join(t or "" for t in texts) == "a b"
    assert data[-1] == "[DONE]"


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_cut_stream_breaks_off_after_its_pieces(fault_upstreams, reset):
    (server,) = fault_upstreams(1)
    server.enqueue(FaultStream(["one ", "two ", "three"], cut_after=2, cut_with_reset=reset))
    received = []
    with (
        requests.post(server.base_url + "/chat/completions", json=STREAMED, stream=True, timeout=5) as response,
        pytest.raises(requests.exceptions.RequestException),
    ):
        for line in response.iter_lines(decode_unicode=True):
            received.append(line)
    contents = [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in received if line]
    assert contents == ["", "one ", "two "]


def test_a_stall_goes_silent_mid_stream(fault_upstreams):
    (server,) = fault_upstreams(1)
    server.enqueue(FaultStream(["one ", "two"], stall_after=1, stall_seconds=30))
    url = server.base_url + "/chat/completions"
    with requests.post(url, json=STREAMED, stream=True, timeout=(5, 0.5)) as response:
        data = (line for line in response.iter_lines(decode_unicode=True) if line)
        seen = [next(data), next(data)]  # the role chunk, "one "
        with pytest.raises(requests.exceptions.ConnectionError):  # the next read times out: silence
            next(data)
    assert json.loads(seen[1][6:])["choices"][0]["delta"]["content"] == "one "


def test_a_stall_then_resumes(fault_upstreams):
    (server,) = fault_upstreams(1)
    server.enqueue(FaultStream(["one ", "two"], stall_after=1, stall_seconds=0.2))
    with requests.post(server.base_url + "/chat/completions", json=STREAMED, stream=True, timeout=5) as response:
        data = _data_lines(response)
    assert json.loads(data[2])["choices"][0]["delta"]["content"] == "two"
    assert data[-1] == "[DONE]"


def test_a_malformed_event_sits_mid_stream_and_the_rest_follows(fault_upstreams):
    (server,) = fault_upstreams(1)
    server.enqueue(FaultStream(["one ", "two"], malformed_after=1))
    with requests.post(server.base_url + "/chat/completions", json=STREAMED, stream=True, timeout=5) as response:
        data = _data_lines(response)
    assert data[2] == '{"choices": ['
    assert json.loads(data[3])["choices"][0]["delta"]["content"] == "two"
    assert data[-1] == "[DONE]"


def test_a_stream_without_done_then_hangs_after_finish_and_usage(fault_upstreams):
    (server,) = fault_upstreams(1)
    server.enqueue(FaultStream(["one"], done=False, after_end="hang"))
    received = []
    with (
        requests.post(server.base_url + "/chat/completions", json=STREAMED, stream=True, timeout=(5, 0.5)) as response,
        pytest.raises(requests.exceptions.ConnectionError),
    ):
        for line in response.iter_lines(decode_unicode=True):
            if line:
                received.append(json.loads(line[6:]))
    assert received[-2]["choices"][0]["finish_reason"] == "stop"
    assert received[-1]["usage"]["total_tokens"] == 18


def test_errors_are_openais_shape_with_their_headers(fault_upstreams):
    (server,) = fault_upstreams(1)
    server.enqueue(rate_limited(retry_after="2"), context_too_long())
    limited = requests.post(server.base_url + "/chat/completions", json=CHAT, timeout=5)
    too_long = requests.post(server.base_url + "/chat/completions", json=CHAT, timeout=5)
    assert (limited.status_code, limited.headers["Retry-After"], limited.json()["error"]["code"]) == (
        429,
        "2",
        "rate_limit_exceeded",
    )
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    assert too_long.json()["error"]["param"] == "messages"


def test_a_default_answer_persists_and_flapping_turns_healthy_at_its_time(fault_upstreams):
    (server,) = fault_upstreams(1)
    server.default = Failure(503, "down", type="server_error")
    statuses = [requests.post(server.base_url + "/chat/completions", json=CHAT, timeout=5).status_code for _ in "ab"]
    server.default = Flapping(until=time.monotonic() + 60)
    still_down = requests.post(server.base_url + "/chat/completions", json=CHAT, timeout=5)
    server.default = Flapping(until=time.monotonic() - 1)
    recovered = requests.post(server.base_url + "/chat/completions", json=CHAT, timeout=5)
    assert statuses == [503, 503]
    assert still_down.status_code == 503
    assert recovered.json()["choices"][0]["message"]["content"] == "echo: hi"
    arrivals = server.arrivals()
    assert len(arrivals) == 4 and arrivals == sorted(arrivals)


def test_only_its_own_key_is_accepted_and_the_401_names_the_key_presented(fault_upstreams):
    (server,) = fault_upstreams(1, key="sk-right")
    wrong = requests.post(
        server.base_url + "/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-wrong"}, timeout=5
    )
    right = requests.post(
        server.base_url + "/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-right"}, timeout=5
    )
    azure = requests.post(
        server.endpoint + "/openai/deployments/m/chat/completions",
        json=CHAT,
        headers={"api-key": "sk-right"},
        timeout=5,
    )
    assert wrong.status_code == 401 and "sk-wrong" in wrong.json()["error"]["message"]
    assert right.status_code == 200 and azure.status_code == 200


def test_prefill_is_continued_where_the_partial_text_stops(fault_upstreams):
    prefilling, instructed = fault_upstreams(1, prefill=True) + fault_upstreams(1, continuation_instruction="Continue.")
    partial = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "The quick br"}]
    prefilling.enqueue(Reply(text="The quick brown fox"), FaultStream(["The ", "quick ", "brown ", "fox"]))
    instructed.enqueue(Reply(text="The quick brown fox"))
    plain = requests.post(prefilling.base_url + "/chat/completions", json={**CHAT, "messages": partial}, timeout=5)
    with requests.post(
        prefilling.base_url + "/chat/completions", json={**STREAMED, "messages": partial}, stream=True, timeout=5
    ) as response:
        chunks = [json.loads(d) for d in _data_lines(response)[:-1]]
    told = partial + [{"role": "user", "content": "Continue."}]
    instructed_answer = requests.post(
        instructed.base_url + "/chat/completions", json={**CHAT, "messages": told}, timeout=5
    )
    assert plain.json()["choices"][0]["message"]["content"] == "own fox"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "own fox"
    assert instructed_answer.json()["choices"][0]["message"]["content"] == "own fox"


def test_a_server_that_rejects_prefill_answers_400_to_a_trailing_assistant_message(fault_upstreams):
    (server,) = fault_upstreams(1, rejects_prefill=True)
    partial = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "The"}]
    rejected = requests.post(server.base_url + "/chat/completions", json={**CHAT, "messages": partial}, timeout=5)
    fine = requests.post(server.base_url + "/chat/completions", json=CHAT, timeout=5)
    assert rejected.status_code == 400 and rejected.json()["error"]["message"] == PREFILL_REJECTED
    assert fine.status_code == 200
