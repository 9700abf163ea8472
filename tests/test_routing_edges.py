"""Issue 21, the edges a review found: a model that reasons before it answers, a deployment
that does not know its model (404), deployments at their max_in_flight, a stream's first
token bounded by the call's deadline, a client that leaves mid-stream, an error event
after a finished answer, and a deployment's output cap. Real local upstreams
(tests/fault_upstream.py), scaled-down timeouts.
"""

from __future__ import annotations

import json
import threading
import time

import openai
import pytest
import requests
from fake_upstream import Reply
from fault_upstream import Failure, FaultStream, Reset, Silent, overloaded, rate_limited, server_error
from support import all_rows, deployment, poll_until, rows_of, sse_events

QUICK = {"backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "deadline_seconds": 30, "retries_per_deployment": 1}
SHORT = {"connect": 2, "first_token": 1, "silence": 1, "total": 20}
PIECES = ["The ", "answer ", "itself."]


def _group(*deployments) -> dict:
    return {"fake-model": {"deployments": list(deployments)}}


def _stream(server, text: str = "think first", timeout: float = 20) -> list[tuple[str | None, str]]:
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": text}]}
    with requests.post(f"{server.url}/v1/chat/completions", json=body, stream=True, timeout=(5, timeout)) as response:
        assert response.status_code == 200, response.text
        return sse_events(response.iter_lines(decode_unicode=True))


def _text(events) -> str:
    return "".join(
        (choice.get("delta") or {}).get("content") or ""
        for _, data in events
        if data != "[DONE]"
        for choice in json.loads(data).get("choices") or []
    )


def test_a_model_that_reasons_longer_than_its_first_token_wait_is_answered(routed, fault_upstreams):
    """Reasoning (`reasoning_content`, as vLLM and Ollama stream it) is the model talking:
    3 s of it, a chunk every 0.3 s, under first_token 1 s and silence 1 s, is answered."""
    (thinker,) = fault_upstreams(1)
    thinker.default = FaultStream(PIECES, reasoning=["hmm "] * 10, reasoning_every=0.3)
    _, server = routed(_group(deployment(thinker, "thinker", timeouts=SHORT)), QUICK)

    events = _stream(server)

    assert _text(events) == "".join(PIECES)
    assert events[-1][1] == "[DONE]"


def test_reasoning_relayed_then_cut_is_not_restarted_elsewhere(routed, fault_upstreams):
    """A stream that relayed reasoning and broke before its answer began is not started
    over on another deployment (the client would get the reasoning twice): it ends with
    the in-band error, and the backup is never asked."""
    thinker, backup = fault_upstreams(2)
    thinker.default = FaultStream(PIECES, reasoning=["hmm "] * 3, cut_after=0)
    backup.default = Reply(text="from the backup")
    _, server = routed(
        _group(deployment(thinker, "thinker", priority=1), deployment(backup, "backup", priority=2)), QUICK
    )

    events = _stream(server)

    assert events[-1][0] == "error" or '"error"' in events[-1][1]
    assert all(data != "[DONE]" for _, data in events)
    assert backup.arrivals() == []


def test_a_deployment_that_does_not_know_its_model_is_failed_over(routed, fault_upstreams):
    """A deployment's 404 (a wrong model or Azure deployment name) is the deployment's
    fault, not the client's: the call fails over, and the client never sees the 404."""
    broken, backup = fault_upstreams(2)
    broken.default = Failure(404, "The model `gpt-4o-typo` does not exist", code="model_not_found")
    backup.default = Reply(text="from the backup")
    _, server = routed(
        _group(deployment(broken, "broken", priority=1), deployment(backup, "backup", priority=2)), QUICK
    )

    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
        answer = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])

    assert answer.choices[0].message.content == "from the backup"
    assert len(backup.arrivals()) == 1


def test_deployments_at_their_max_in_flight_answer_503_retry_after_not_a_400(routed, fault_upstreams):
    """The only deployment holds its one call (max_in_flight 1): the next call is a 503 with
    Retry-After 1 (busy, come back), never a 400 blaming the request."""
    (solo,) = fault_upstreams(1)
    release = threading.Event()
    solo.enqueue(Silent(seconds=20, release=release, then=Reply(text="held")))
    _, server = routed(_group(deployment(solo, "solo", max_in_flight=1)), QUICK)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30)
    ask = {"model": "fake-model", "messages": [{"role": "user", "content": "hold"}]}
    held = threading.Thread(target=lambda: client.chat.completions.create(**ask))
    held.start()
    try:
        assert poll_until(lambda: solo.arrivals(), 5)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(**ask)
    finally:
        release.set()
        held.join(timeout=30)
        client.close()

    assert caught.value.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "1"
    assert len(solo.arrivals()) == 1


def test_a_streams_first_token_wait_is_bounded_by_the_calls_deadline(routed, fault_upstreams):
    """Headers after 2.5 s, then no token: with a 3 s deadline the call ends by ~3 s (the
    first-token wait counts from the call, not from the headers), with the in-band error."""
    (slow,) = fault_upstreams(1)
    slow.default = Silent(seconds=2.5, then=FaultStream(PIECES, first_token_after=30))
    timeouts = {"connect": 2, "first_token": 10, "silence": 10, "total": 60}
    _, server = routed(_group(deployment(slow, "slow", timeouts=timeouts)), {**QUICK, "deadline_seconds": 3})

    started = time.monotonic()
    events = _stream(server)
    took = time.monotonic() - started

    assert took < 4.5, took  # not 2.5 s + a fresh 3 s window
    assert all(data != "[DONE]" for _, data in events)


def test_a_client_that_leaves_mid_stream_leaves_its_attempt_recorded(routed, fault_upstreams):
    """The client hangs up mid-answer: the exchange is `disconnected` and its attempt row
    says which deployment served it (outcome `disconnected`)."""
    (slow,) = fault_upstreams(1)
    # A pause after the first words; the server sees the client gone at its next write.
    slow.default = FaultStream(PIECES * 20, stall_after=1, stall_seconds=1.5, after_stall="resume")
    serving = deployment(slow, "slow", timeouts={**SHORT, "silence": 30})
    app, server = routed(_group(serving), QUICK)
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "then leave"}]}

    with requests.post(f"{server.url}/v1/chat/completions", json=body, stream=True, timeout=(5, 20)) as response:
        lines = response.iter_lines(decode_unicode=True)
        assert any("The " in line for line in lines)  # the first words arrived; now leave

    assert poll_until(lambda: any(r["status"] == "disconnected" for r in rows_of(app)), 20), rows_of(app)
    attempts = all_rows(app)["upstream_attempts"]
    assert [(row[3], row[5]) for row in attempts] == [(serving.name, "disconnected")]


def test_an_error_event_after_a_finished_answer_does_not_spoil_it(routed, fault_upstreams):
    """The answer, its finish_reason, then an error event: the answer is whole, ends with
    [DONE], and nothing is continued or retried."""
    (late,) = fault_upstreams(1)
    late.default = FaultStream(PIECES, error_after_finish=True)
    _, server = routed(_group(deployment(late, "late", timeouts=SHORT)), QUICK)

    events = _stream(server)

    assert _text(events) == "".join(PIECES)
    assert events[-1][1] == "[DONE]"
    assert len(late.arrivals()) == 1


def test_a_deployment_is_not_sent_more_max_tokens_than_it_can_write(routed, fault_upstreams):
    """max_output_tokens 100: a request allowing 500 goes to the deployment that can write
    them; one allowing 50 goes to the first."""
    small, large = fault_upstreams(2)
    small.default, large.default = Reply(text="small"), Reply(text="large")
    _, server = routed(
        _group(
            deployment(small, "small", priority=1, max_output_tokens=100),
            deployment(large, "large", priority=2),
        ),
        QUICK,
    )
    ask = {"model": "fake-model", "messages": [{"role": "user", "content": "write"}]}

    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
        long = client.chat.completions.create(**ask, max_tokens=500)
        short = client.chat.completions.create(**ask, max_tokens=50)

    assert (long.choices[0].message.content, short.choices[0].message.content) == ("large", "small")


def _sdk_chat(server, **options):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        return client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], **options
        )


def test_a_503_that_says_when_is_retried_after_that_long(routed, fault_upstreams):
    """A 503 with `Retry-After: 1` from the only deployment: the retry comes after ~1 s (the
    upstream's word), not after a 0.05 s backoff, and is answered."""
    (solo,) = fault_upstreams(1)
    solo.enqueue(overloaded(retry_after="1"), Reply(text="after the wait"))
    _, server = routed(_group(deployment(solo, "solo")), QUICK)

    answer = _sdk_chat(server)

    first, second = solo.arrivals()
    assert answer.choices[0].message.content == "after the wait"
    assert second - first >= 0.9


def test_a_deployment_whose_breaker_opens_mid_call_is_not_tried_again_in_it(routed, fault_upstreams):
    """Breaker threshold 2, 3 retries a deployment: the primary's second 500 opens its
    breaker, so the same call goes to the backup rather than sending the primary 2 more."""
    primary, backup = fault_upstreams(2)
    primary.default, backup.default = server_error(), Reply(text="from the backup")
    _, server = routed(
        _group(deployment(primary, "primary", priority=1), deployment(backup, "backup", priority=2)),
        {**QUICK, "retries_per_deployment": 3, "breaker": {"failures": 2, "cooldown_seconds": 30}},
    )

    answer = _sdk_chat(server)

    assert answer.choices[0].message.content == "from the backup"
    assert (len(primary.arrivals()), len(backup.arrivals())) == (2, 1)


def test_the_client_is_told_of_the_failure_the_call_ended_on(routed, fault_upstreams):
    """A dead first deployment (resets) and two rate-limited ones: the call ends on the rate
    limits, so the client gets OpenAI's 429 (back off), not a 502 about the dead one."""
    dead, limited, also_limited = fault_upstreams(3)
    dead.default = Reset()
    limited.default = also_limited.default = rate_limited()
    _, server = routed(
        _group(
            deployment(dead, "dead", priority=1),
            deployment(limited, "limited", priority=2),
            deployment(also_limited, "also", priority=3),
        ),
        {**QUICK, "retries_per_deployment": 0},
    )

    with pytest.raises(openai.RateLimitError) as caught:
        _sdk_chat(server)

    assert caught.value.response.headers["X-Upstream-Error"] == "rate_limited"
