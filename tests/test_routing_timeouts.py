"""Issue 21, timeouts: upstreams that never answer or are slow to start, against the routing
file's per-deployment timeouts and the call's deadline (behaviours 4 and 5), through real
local upstreams (tests/fault_upstream.py).

The timeouts are scaled down (first token 1-6 s, silence 1 s, deadline 3 s) so the suite
stays fast; each docstring gives the real numbers.
"""

from __future__ import annotations

import time

import openai
import pytest
from fake_upstream import Reply
from fault_upstream import FaultStream, Silent
from support import ask_route, deployment

QUICK = {"backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "deadline_seconds": 30, "retries_per_deployment": 1}
SHORT = {"connect": 2, "first_token": 1, "silence": 1, "total": 20}
PIECES = ["Slow ", "but ", "whole."]


def _group(*deployments) -> dict:
    return {"fake-model": {"deployments": list(deployments)}}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_silent_deployment_times_out_once_and_the_call_fails_over(routed, fault_upstreams, stream):
    """Behaviour 4: a primary that reads the request and never answers is ended by its
    first-token timeout (1 s here; 60 s by default) and not tried again with the same wait
    (even with retries_per_deployment 1): the backup answers."""
    silent, backup = fault_upstreams(2)
    silent.default = Silent(seconds=60)
    backup.default = Reply(text="answered by the backup")
    _, server = routed(
        _group(deployment(silent, "silent", priority=1, timeouts=SHORT), deployment(backup, "backup", priority=2)),
        QUICK,
    )

    answer = ask_route(server.url, "chat-completions", "anyone there?", stream=stream)

    assert (answer.status, answer.text, answer.whole) == (200, "answered by the backup", True)
    assert len(silent.arrivals()) == 1
    assert len(backup.arrivals()) == 1


def test_the_whole_call_ends_inside_its_deadline_however_many_deployments_are_silent(routed, fault_upstreams):
    """Behaviours 4 and 12: three deployments that never answer, each with a 2 s first-token
    timeout, and a call deadline of 3 s (default 90 s; the issue measured 181 s with
    OPENAI_TIMEOUT 60 s x 3 attempts): the client gets a 504, not told to retry, inside the
    deadline (plus a margin for the answer to travel), and no deployment is tried twice."""
    servers = fault_upstreams(3)
    for server in servers:
        server.default = Silent(seconds=60)
    slow = {**SHORT, "first_token": 2}
    _, service = routed(
        _group(*(deployment(s, f"silent{i}", priority=i + 1, timeouts=slow) for i, s in enumerate(servers))),
        {**QUICK, "deadline_seconds": 3},
    )

    started = time.monotonic()
    with (
        openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused", max_retries=0, timeout=60) as client,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hello?"}])
    elapsed = time.monotonic() - started

    assert caught.value.status_code == 504
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert elapsed < 3 + 2.5
    assert len(servers[0].arrivals()) == 1
    assert all(len(s.arrivals()) <= 1 for s in servers)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_first_token_later_than_the_silence_timeout_is_still_answered(routed, fault_upstreams, stream):
    """Behaviour 5, literally: headers at once, the first token only after 2.5 s, which is
    longer than the deployment's silence timeout (1 s) and shorter than its first-token
    timeout (6 s): answered whole by that deployment, with no retry and no failover. (Real
    life: the first token after 20 s; silence 20 s, first token 60 s by default.)"""
    slow, backup = fault_upstreams(2)
    slow.default = FaultStream(PIECES, first_token_after=2.5)
    backup.default = Reply(text="answered by the backup")
    _, server = routed(
        _group(
            deployment(slow, "slow", priority=1, timeouts={**SHORT, "first_token": 6}),
            deployment(backup, "backup", priority=2),
        ),
        QUICK,
    )

    answer = ask_route(server.url, "chat-completions", "take your time", stream=stream)

    assert (answer.status, answer.text, answer.whole) == (200, "Slow but whole.", True)
    assert (len(slow.arrivals()), len(backup.arrivals())) == (1, 0)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_first_token_timeout_fails_over_to_a_healthy_deployment(routed, fault_upstreams, stream):
    """Behaviour 5: the same slow start against a first-token timeout of 1 s (configurable
    per deployment): the attempt ends and a healthy deployment answers."""
    slow, backup = fault_upstreams(2)
    slow.default = FaultStream(PIECES, first_token_after=60)
    backup.default = Reply(text="answered by the backup")
    _, server = routed(
        _group(deployment(slow, "slow", priority=1, timeouts=SHORT), deployment(backup, "backup", priority=2)),
        QUICK,
    )

    answer = ask_route(server.url, "chat-completions", "hurry", stream=stream)

    assert (answer.status, answer.text, answer.whole) == (200, "answered by the backup", True)
    assert (len(slow.arrivals()), len(backup.arrivals())) == (1, 1)
