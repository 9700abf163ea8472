"""Issue 21, streams: an answer cut or stalled mid-way is continued on another deployment
(behaviour 6), a malformed event or a missing [DONE] does not spoil a good answer
(behaviour 7), on every chat route that streams (behaviour 14), against real local
upstreams (tests/fault_upstream.py). Silence timeouts are 1 s here (20 s by default).
"""

from __future__ import annotations

import json
import re

import pytest
import requests
from fault_upstream import PREFILL_REJECTED, FaultStream
from support import CHAT_ROUTES, ask_route, deployment, sse_events

QUICK = {"backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "deadline_seconds": 30, "retries_per_deployment": 1}
SHORT = {"connect": 2, "first_token": 2, "silence": 1, "total": 20}
PIECES = ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog."]
WHOLE = "".join(PIECES)
PARTIAL = "The quick brown "  # what the first three pieces make
INSTRUCTION = "Continue exactly where your previous message stopped."
VLLM_PREFILL = {"continue_final_message": True, "add_generation_prompt": False}

FAULTS = {
    "cut": FaultStream(PIECES, cut_after=3),
    "cut-rst": FaultStream(PIECES, cut_after=3, cut_with_reset=True),
    "stall-close": FaultStream(PIECES, stall_after=3, stall_seconds=60, after_stall="close"),
    "stall-resume": FaultStream(PIECES, stall_after=3, stall_seconds=60, after_stall="resume"),
}


def _group(*deployments) -> dict:
    return {"fake-model": {"deployments": list(deployments)}}


def _raw_chat_stream(server, text: str = "tell me") -> list[str]:
    """The data lines of a streamed /v1/chat/completions (usage asked for), read to the end."""
    body = {
        "model": "fake-model",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": text}],
    }
    with requests.post(f"{server.url}/v1/chat/completions", json=body, stream=True, timeout=(5, 15)) as response:
        assert response.status_code == 200, response.text
        return [data for _, data in sse_events(response.iter_lines(decode_unicode=True))]


def _chunks_and_text(data: list[str]) -> tuple[list[dict], str]:
    """The chunks of a stream's data lines ([DONE] left out) and the text they carry."""
    chunks = [json.loads(d) for d in data if d != "[DONE]"]
    return chunks, "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def _last_messages(server, count: int) -> list[list[dict]]:
    """The last `count` messages of each chat request `server` received."""
    return [body["messages"][-count:] for body in server.chat_requests()]


@pytest.mark.parametrize("route", CHAT_ROUTES)
def test_a_stream_cut_mid_answer_is_continued_on_a_prefill_deployment_on_every_route(routed, fault_upstreams, route):
    """Behaviours 6 and 14: the primary's stream breaks off after "The quick brown " (the
    connection dropped); a deployment that accepts an assistant prefill is sent that partial
    answer and continues it; the client, on every streaming chat route (/v1/responses too),
    receives the one whole answer, each word once, ending as complete."""
    primary, continuer = fault_upstreams(1) + fault_upstreams(1, prefill=True)
    primary.default = FaultStream(PIECES, cut_after=3)
    continuer.default = FaultStream(PIECES)
    _, server = routed(
        _group(
            deployment(primary, "primary", priority=1, timeouts=SHORT),
            deployment(continuer, "continuer", priority=2, capabilities={"prefill": True}),
        ),
        QUICK,
    )

    answer = ask_route(server.url, route, "tell me", stream=True)

    assert (answer.text, answer.whole, answer.error) == (WHOLE, True, None)
    assert len(primary.arrivals()) == 1
    assert _last_messages(continuer, 1) == [[{"role": "assistant", "content": PARTIAL}]]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_stream_cut_or_stalled_is_continued_and_the_service_stays_healthy(routed, fault_upstreams, fault):
    """Behaviour 6: a stream that drops (FIN or RST) or goes silent mid-answer (for 60 s;
    the silence timeout, 1 s here, ends it) is continued elsewhere: the client gets the whole
    answer, [DONE] once; the stall detector is bounded and the service answers afterwards."""
    primary, continuer = fault_upstreams(1) + fault_upstreams(1, prefill=True)
    primary.enqueue(FAULTS[fault])
    primary.default = FaultStream(["After ", "the ", "fault."])
    continuer.default = FaultStream(PIECES)
    _, server = routed(
        _group(
            deployment(primary, "primary", priority=1, timeouts=SHORT),
            deployment(continuer, "continuer", priority=2, capabilities={"prefill": True}),
        ),
        QUICK,
    )

    data = _raw_chat_stream(server)
    chunks, text = _chunks_and_text(data)

    assert text == WHOLE
    assert data.count("[DONE]") == 1 and data[-1] == "[DONE]"
    assert [
        c["choices"][0]["finish_reason"] for c in chunks if c.get("choices") and c["choices"][0].get("finish_reason")
    ] == ["stop"]
    assert _last_messages(continuer, 1) == [[{"role": "assistant", "content": PARTIAL}]]
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert ask_route(server.url, "chat-completions", "again", stream=True).text == "After the fault."


def test_a_continuation_sends_the_deployments_prefill_extra_body(routed, fault_upstreams):
    """Behaviour 6: a vLLM deployment continues a prefill only when told to
    (`continue_final_message: true, add_generation_prompt: false`): its prefill_extra_body
    goes with the continuation, and the client gets the whole answer."""
    primary, vllm = fault_upstreams(1) + fault_upstreams(1, prefill=True)
    primary.default = FaultStream(PIECES, cut_after=3)
    vllm.default = FaultStream(PIECES)
    _, server = routed(
        _group(
            deployment(primary, "primary", priority=1, timeouts=SHORT),
            deployment(vllm, "vllm", priority=2, capabilities={"prefill": True}, prefill_extra_body=VLLM_PREFILL),
        ),
        QUICK,
    )

    answer = ask_route(server.url, "chat-completions", "tell me", stream=True)

    assert (answer.text, answer.whole) == (WHOLE, True)
    (sent,) = vllm.chat_requests()
    assert {name: sent.get(name) for name in VLLM_PREFILL} == VLLM_PREFILL
    assert sent["messages"][-1] == {"role": "assistant", "content": PARTIAL}


def test_a_continuation_instruction_deployment_gets_the_partial_answer_then_the_instruction(routed, fault_upstreams):
    """Behaviour 6: a deployment without prefill that declares a continuation instruction is
    sent the partial answer as an assistant message, then the instruction as a user message;
    the client gets only the new text after the partial one: one whole answer."""
    primary, instructed = fault_upstreams(1) + fault_upstreams(1, continuation_instruction=INSTRUCTION)
    primary.default = FaultStream(PIECES, cut_after=3)
    instructed.default = FaultStream(PIECES)
    _, server = routed(
        _group(
            deployment(primary, "primary", priority=1, timeouts=SHORT),
            deployment(
                instructed,
                "instructed",
                priority=2,
                capabilities={"prefill": False},
                continuation_instruction=INSTRUCTION,
            ),
        ),
        QUICK,
    )

    answer = ask_route(server.url, "chat-completions", "tell me", stream=True)

    assert (answer.text, answer.whole) == (WHOLE, True)
    assert _last_messages(instructed, 2) == [
        [{"role": "assistant", "content": PARTIAL}, {"role": "user", "content": INSTRUCTION}]
    ]


def test_a_deployment_that_rejects_prefill_is_never_sent_one(routed, fault_upstreams):
    """Behaviour 6: between the cut primary and a deployment that takes prefill sits one
    that does not (it would answer 400): it is never sent a prefill; the third continues."""
    primary, refuser, continuer = (
        fault_upstreams(1) + fault_upstreams(1, rejects_prefill=True) + fault_upstreams(1, prefill=True)
    )
    primary.default = FaultStream(PIECES, cut_after=3)
    refuser.default = continuer.default = FaultStream(PIECES)
    _, server = routed(
        _group(
            deployment(primary, "primary", priority=1, timeouts=SHORT),
            deployment(refuser, "refuser", priority=2, capabilities={"prefill": False}),
            deployment(continuer, "continuer", priority=3, capabilities={"prefill": True}),
        ),
        QUICK,
    )

    answer = ask_route(server.url, "chat-completions", "tell me", stream=True)

    assert (answer.text, answer.whole) == (WHOLE, True)
    assert not [m for m in _last_messages(refuser, 1) if m[0]["role"] == "assistant"]
    assert _last_messages(continuer, 1) == [[{"role": "assistant", "content": PARTIAL}]]


@pytest.mark.parametrize("prefill_declared", [False, True], ids=["declared-without", "misdeclared-with"])
def test_a_cut_with_nowhere_to_continue_ends_with_the_in_band_error_never_as_complete(
    routed, fault_upstreams, prefill_declared
):
    """Behaviour 6: the only other deployment cannot continue (it refuses prefill, whether
    it says so or, misconfigured, claims it can): the stream ends with the in-band error
    event, after the partial text, with no [DONE] and no finish_reason "stop"; the
    deployment's prefill 400 never becomes the client's error, masking the real failure."""
    primary, refuser = fault_upstreams(1) + fault_upstreams(1, rejects_prefill=True)
    primary.default = FaultStream(PIECES, cut_after=3)
    refuser.default = FaultStream(PIECES)
    _, server = routed(
        _group(
            deployment(primary, "primary", priority=1, timeouts=SHORT),
            deployment(refuser, "refuser", priority=2, capabilities={"prefill": prefill_declared}),
        ),
        QUICK,
    )

    data = _raw_chat_stream(server)

    chunks, text = _chunks_and_text(data)
    assert text == PARTIAL
    assert "[DONE]" not in data
    assert not any(c["choices"][0].get("finish_reason") == "stop" for c in chunks if c.get("choices"))
    assert "error" in chunks[-1]
    assert PREFILL_REJECTED not in chunks[-1]["error"]["message"]
    if not prefill_declared:
        assert not [m for m in _last_messages(refuser, 1) if m[0]["role"] == "assistant"]


@pytest.mark.parametrize("route", ["openai-completion", "responses"])
def test_a_cut_with_nowhere_to_continue_is_never_complete_on_the_other_routes(routed, fault_upstreams, route):
    """Behaviours 6 and 14: the same dead end on the seed route (its `error` event, no
    `done`) and /v1/responses (response.failed, not response.completed)."""
    (primary,) = fault_upstreams(1)
    primary.default = FaultStream(PIECES, cut_after=3)
    _, server = routed(_group(deployment(primary, "primary", timeouts=SHORT)), QUICK)

    answer = ask_route(server.url, route, "tell me", stream=True)

    assert (answer.text, answer.whole) == (PARTIAL, False)
    assert answer.error


@pytest.mark.parametrize("route", ["chat-completions", "openai-completion"])
def test_a_malformed_event_mid_stream_is_skipped_counted_and_the_answer_arrives_whole(routed, fault_upstreams, route):
    """Behaviour 7: one broken event (`data: {"choices": [`) among good ones is skipped,
    logged and counted (gateway_upstream_malformed_chunks_total), and the rest relayed: the
    client gets the whole answer, from that one attempt."""
    (primary,) = fault_upstreams(1)
    primary.default = FaultStream(PIECES, malformed_after=4)
    routed_deployment = deployment(primary, "primary", timeouts=SHORT)
    _, server = routed(_group(routed_deployment), QUICK)

    answer = ask_route(server.url, route, "tell me", stream=True)

    assert (answer.text, answer.whole, answer.error) == (WHOLE, True, None)
    assert len(primary.arrivals()) == 1
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    counted = re.search(
        rf'^gateway_upstream_malformed_chunks_total\{{deployment="{routed_deployment.name}"\}} (\S+)$', metrics, re.M
    )
    assert counted and float(counted.group(1)) == 1.0


@pytest.mark.parametrize("after_end", ["hang", "close"])
def test_a_stream_ending_without_done_but_with_a_finish_reason_finishes_promptly_with_usage(
    routed, fault_upstreams, after_end
):
    """Behaviour 7: the upstream sends finish_reason and usage but no [DONE], then keeps the
    connection open for 60 s (or closes it): the client's stream ends at once (well before
    the upstream lets go; its read timeout is 15 s) with the whole text, the usage and our
    own [DONE]; nothing is retried."""
    (primary,) = fault_upstreams(1)
    primary.default = FaultStream(PIECES, done=False, after_end=after_end, hang_seconds=60, completion_tokens=9)
    _, server = routed(_group(deployment(primary, "primary", timeouts={**SHORT, "silence": 20})), QUICK)

    data = _raw_chat_stream(server)

    chunks = [json.loads(d) for d in data if d != "[DONE]"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")) == WHOLE
    assert chunks[-1]["usage"] == {"prompt_tokens": 11, "completion_tokens": 9, "total_tokens": 20}
    assert data[-1] == "[DONE]"
    assert len(primary.arrivals()) == 1
