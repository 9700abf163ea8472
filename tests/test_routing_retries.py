"""Issue 21, retries and failover: rate limits, 5xx, resets, rejected requests and bad
credentials, each against real local upstreams that misbehave on purpose (tests/fault_upstream.py),
through the service's routing file, with every chat route (behaviours 1, 2, 3, 8, 10, 14).

The numbers are scaled down so the suite stays fast; each docstring gives the real ones.
"""

from __future__ import annotations

import itertools

import openai
import pytest
from fake_upstream import Reply, Status
from fault_upstream import Reset, content_policy, context_too_long, forbidden, overloaded, rate_limited, server_error
from support import CHAT_ROUTES, ask_route, deployment, routing_key

# Waits a test can afford; the real defaults are 0.5 s, doubling up to 4 s.
QUICK = {"backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "deadline_seconds": 30}
ROUTES = [
    pytest.param(route, stream, id=f"{route}-{'streamed' if stream else 'plain'}")
    for route in CHAT_ROUTES
    for stream in (False, True)
]


def _group(*deployments, **extra) -> dict:
    return {"fake-model": {"deployments": list(deployments), **extra}}


def _chat(server, text: str = "hi", **options):
    """One /v1/chat/completions call through the SDK (no retries of its own): the raw response."""
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        return client.chat.completions.with_raw_response.create(
            model="fake-model", messages=[{"role": "user", "content": text}], **options
        )


def test_a_429_with_retry_after_is_waited_for_when_there_is_nowhere_else_to_go(routed, fault_upstreams):
    """Behaviour 1: a 429 with `Retry-After: 2` (the issue's own number) on the only
    deployment is waited for, about 2 s, then retried and answered; never a tight loop."""
    (solo,) = fault_upstreams(1)
    solo.enqueue(rate_limited(retry_after="2"), Reply(text="after the wait"))
    _, server = routed(_group(deployment(solo, "solo")), {**QUICK, "retries_per_deployment": 1})

    answer = _chat(server).parse()

    assert answer.choices[0].message.content == "after the wait"
    first, second = solo.arrivals()
    assert second - first >= 1.9  # the upstream's Retry-After was honoured


def test_a_429_with_retry_after_fails_over_and_never_hammers_the_limited_deployment(routed, fault_upstreams):
    """Behaviour 1: a primary that keeps answering 429 with `Retry-After: 2` while a second
    deployment is healthy: the second answers, and the primary is never retried sooner than
    its Retry-After asked (wait about 2 s, or fail over at once)."""
    primary, backup = fault_upstreams(2)
    primary.default = rate_limited(retry_after="2")
    backup.enqueue(Reply(text="from the backup"))
    _, server = routed(
        _group(deployment(primary, "primary", priority=1), deployment(backup, "backup", priority=2)),
        {**QUICK, "retries_per_deployment": 1},
    )

    answer = _chat(server).parse()

    assert answer.choices[0].message.content == "from the backup"
    arrivals = primary.arrivals()
    assert 1 <= len(arrivals) <= 2
    assert all(later - earlier >= 1.9 for earlier, later in itertools.pairwise(arrivals))


def test_a_persistent_429_without_retry_after_backs_off_and_ends_in_a_clean_429(routed, fault_upstreams):
    """Behaviour 1 with the router's defaults (max_attempts 6, one retry per deployment,
    backoff 0.5 s doubling with jitter): three deployments that all answer 429 with no
    Retry-After get at most 6 attempts in all, at most 4 in the first 3 s, each deployment
    one at least; the client gets OpenAI's 429, told apart from our own limiter's by
    `X-Upstream-Error: rate_limited`, with no invented Retry-After and `x-should-retry: false`."""
    servers = fault_upstreams(3)
    for server in servers:
        server.default = rate_limited()
    _, service = routed(_group(*(deployment(s, f"limited{i}", priority=i + 1) for i, s in enumerate(servers))))

    with pytest.raises(openai.RateLimitError) as caught:
        _chat(service)

    arrivals = sorted(itertools.chain.from_iterable(s.arrivals() for s in servers))
    assert all(s.arrivals() for s in servers)
    assert len(arrivals) <= 6
    assert len([a for a in arrivals if a - arrivals[0] < 3]) <= 4
    error = caught.value
    assert (error.status_code, error.code) == (429, "rate_limit_exceeded")
    assert error.response.headers["X-Upstream-Error"] == "rate_limited"
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers


def test_a_500_once_is_retried_on_the_same_deployment_and_answered(routed, fault_upstreams):
    """Behaviour 2: one 500 from the primary is retried there (retries_per_deployment 1) and
    answered by it; the backup is never asked."""
    primary, backup = fault_upstreams(2)
    primary.enqueue(server_error(), Reply(text="from the primary, second try"))
    _, server = routed(
        _group(deployment(primary, "primary", priority=1), deployment(backup, "backup", priority=2)),
        {**QUICK, "retries_per_deployment": 1},
    )

    answer = _chat(server).parse()

    assert answer.choices[0].message.content == "from the primary, second try"
    assert (len(primary.arrivals()), len(backup.arrivals())) == (2, 0)


@pytest.mark.parametrize(("route", "stream"), ROUTES)
def test_a_persistent_503_fails_over_on_every_chat_route(routed, fault_upstreams, upstream, route, stream):
    """Behaviours 2 and 14: a primary that answers 503 to everything: every chat route,
    streamed and not (/v1/responses too), is answered whole by the backup, within the retry
    budget (the primary tried at most 1 + retries_per_deployment times)."""
    primary, backup = fault_upstreams(2)
    primary.default = overloaded()
    backup.default = Reply(text="answered by the backup")
    backup_deployment = deployment(backup, "backup", priority=2)
    _, server = routed(
        _group(deployment(primary, "primary", priority=1), backup_deployment), {**QUICK, "retries_per_deployment": 1}
    )

    answer = ask_route(server.url, route, "fail over please", stream=stream)

    assert (answer.status, answer.text, answer.whole, answer.error) == (200, "answered by the backup", True, None)
    assert answer.model == backup_deployment.model
    assert 1 <= len(primary.arrivals()) <= 2
    assert len(backup.arrivals()) == 1
    assert upstream.chat_requests() == []  # nothing went to the one-upstream setting's server


def test_a_persistent_503_with_nowhere_to_go_is_our_503_with_its_retry_after(routed, fault_upstreams):
    """Behaviour 2: the only deployment answers 503 with `Retry-After: 30` (beyond
    max_retry_after_seconds, so not waited for): the client gets the original error, our
    503 with that Retry-After, after at most 1 + retries_per_deployment attempts."""
    (solo,) = fault_upstreams(1)
    solo.default = overloaded(retry_after="30")
    _, server = routed(_group(deployment(solo, "solo")), {**QUICK, "retries_per_deployment": 1})

    with pytest.raises(openai.InternalServerError) as caught:
        _chat(server)

    assert caught.value.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "30"
    assert 1 <= len(solo.arrivals()) <= 2


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_reset_before_any_byte_is_retried_and_answered(routed, fault_upstreams, stream):
    """Behaviour 3: the only deployment resets the connection (a real RST) before any byte,
    once: the call is retried there and answered."""
    (solo,) = fault_upstreams(1)
    solo.enqueue(Reset(), Reply(text="after the reset"))
    _, server = routed(_group(deployment(solo, "solo")), {**QUICK, "retries_per_deployment": 1})

    answer = ask_route(server.url, "chat-completions", "hi", stream=stream)

    assert (answer.status, answer.text, answer.whole) == (200, "after the reset", True)
    assert len(solo.arrivals()) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_deployment_that_keeps_resetting_is_failed_over(routed, fault_upstreams, stream):
    """Behaviour 3: a primary that resets every connection: the backup answers."""
    primary, backup = fault_upstreams(2)
    primary.default = Reset()
    backup.default = Reply(text="answered by the backup")
    _, server = routed(
        _group(deployment(primary, "primary", priority=1), deployment(backup, "backup", priority=2)),
        {**QUICK, "retries_per_deployment": 1},
    )

    answer = ask_route(server.url, "chat-completions", "reset", stream=stream)

    assert (answer.status, answer.text, answer.whole) == (200, "answered by the backup", True)
    assert 1 <= len(primary.arrivals()) <= 2


def test_context_length_exceeded_goes_to_the_context_window_fallback_never_the_same_model(routed, fault_upstreams):
    """Behaviour 8: a 400 `context_length_exceeded` is never retried on the same model (not
    on the deployment, nor on a second deployment of that model) and goes to the group's
    context-window fallback, which answers."""
    small, small_twin, large = fault_upstreams(3)
    small.default = small_twin.default = context_too_long()
    large.default = Reply(text="answered with the large window")
    groups = {
        **_group(
            deployment(small, "small", model="small-model", priority=1),
            deployment(small_twin, "smalltwin", model="small-model", priority=2),
            context_window_fallbacks=["fake-model-long"],
        ),
        "fake-model-long": {"deployments": [deployment(large, "large", model="large-model")]},
    }
    _, server = routed(groups, QUICK)

    answer = _chat(server, "a long prompt").parse()

    assert (answer.choices[0].message.content, answer.model) == ("answered with the large window", "large-model")
    assert (len(small.arrivals()), len(small_twin.arrivals()), len(large.arrivals())) == (1, 0, 1)


def test_a_deployment_whose_window_cannot_hold_the_prompt_is_skipped_before_any_call(routed, fault_upstreams):
    """Behaviour 8: a deployment with context_window 200 is never sent a prompt of about 500
    tokens plus max_tokens 50; the fallback answers it. A short prompt still goes to it."""
    small, large = fault_upstreams(2)
    large.default = Reply(text="answered with the large window")
    groups = {
        **_group(deployment(small, "small", context_window=200), context_window_fallbacks=["fake-model-long"]),
        "fake-model-long": {"deployments": [deployment(large, "large", context_window=128000)]},
    }
    _, server = routed(groups, QUICK)

    long_answer = _chat(server, "word " * 500, max_tokens=50).parse()
    short_answer = _chat(server, "short", max_tokens=50).parse()

    assert long_answer.choices[0].message.content == "answered with the large window"
    assert short_answer.choices[0].message.content == "echo: short"
    assert [r["messages"][-1]["content"] for r in small.chat_requests()] == ["short"]
    assert len(large.arrivals()) == 1


def test_context_length_exceeded_with_no_fallback_is_the_upstreams_400_sent_once(routed, fault_upstreams):
    """Behaviour 8: with no context-window fallback, the client gets the upstream's 400 with
    its message, param and code, after one attempt."""
    (solo,) = fault_upstreams(1)
    solo.default = context_too_long()
    _, server = routed(_group(deployment(solo, "solo")), {**QUICK, "retries_per_deployment": 1})

    with pytest.raises(openai.BadRequestError) as caught:
        _chat(server, "too long")

    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "messages")
    assert context_too_long().message in caught.value.message
    assert len(solo.arrivals()) == 1


def test_content_policy_violation_is_never_retried_and_its_reason_is_passed_on(routed, fault_upstreams):
    """Behaviour 8: a 400 `content_policy_violation` is sent once: not retried on the
    deployment nor on another of the same model; the client gets the provider's reason."""
    first, twin = fault_upstreams(2)
    first.default = content_policy()
    _, server = routed(
        _group(
            deployment(first, "first", model="same-model", priority=1),
            deployment(twin, "twin", model="same-model", priority=2),
        ),
        {**QUICK, "retries_per_deployment": 1},
    )

    with pytest.raises(openai.BadRequestError) as caught:
        _chat(server, "something refused")

    assert caught.value.code == "content_policy_violation"
    assert content_policy().message in caught.value.message
    assert (len(first.arrivals()), len(twin.arrivals())) == (1, 0)


@pytest.mark.parametrize("fault", ["401", "403"])
def test_bad_credentials_cool_the_deployment_down_and_the_call_fails_over(routed, fault_upstreams, fault):
    """Behaviour 10: a deployment whose key is refused (a real 401 naming the key presented,
    or a 403) is failed over at once and cooled down (auth_cooldown_seconds, 300 s by
    default): a second call does not try it again. No answer shows its key."""
    revoked, backup = fault_upstreams(2)
    stale_key = "sk-" + "revoked" * 4
    primary = deployment(revoked, "revoked", priority=1, key=stale_key if fault == "401" else None)
    if fault == "403":
        revoked.default = forbidden()
    backup.default = Reply(text="answered by the backup")
    _, server = routed(
        _group(primary, deployment(backup, "backup", priority=2)),
        {**QUICK, "retries_per_deployment": 1, "breaker": {"auth_cooldown_seconds": 300}},
    )

    answers = [_chat(server, f"call {n}") for n in (1, 2)]

    assert [a.parse().choices[0].message.content for a in answers] == ["answered by the backup"] * 2
    assert len(revoked.arrivals()) == 1
    assert len(backup.arrivals()) == 2
    for answer in answers:
        shown = answer.http_response.text + repr(dict(answer.headers))
        assert stale_key not in shown and routing_key(revoked) not in shown


@pytest.mark.parametrize("fault", ["401", "403"])
def test_bad_credentials_with_nowhere_to_go_are_a_502_never_a_401_and_never_show_the_key(
    routed, fault_upstreams, fault
):
    """Behaviours 10 and 12: the only deployment refuses the key: the client gets a 502
    (its own key is fine; ours is not), not told to retry, and no key in the answer."""
    (solo,) = fault_upstreams(1)
    stale_key = "sk-" + "revoked" * 4
    if fault == "403":
        solo.default = forbidden()
    _, server = routed(
        _group(deployment(solo, "solo", key=stale_key if fault == "401" else None)),
        {**QUICK, "retries_per_deployment": 1},
    )

    with pytest.raises(openai.APIStatusError) as caught:
        _chat(server)

    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    shown = caught.value.response.text + repr(dict(caught.value.response.headers))
    assert stale_key not in shown and routing_key(solo) not in shown
    assert len(solo.arrivals()) == 1


def _default_sdk_call(server, sent: list) -> openai.APIStatusError:
    """One chat completion through the SDK as its README uses it (default max_retries, 2),
    every HTTP request it sends appended to `sent`; the error it ends with."""
    http_client = openai.DefaultHttpxClient(event_hooks={"request": [sent.append]})
    with (
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", http_client=http_client, timeout=60) as client,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    return caught.value


@pytest.mark.parametrize("fault", ["429", "503"])
def test_the_default_sdk_against_persistently_failing_deployments_causes_at_most_6_attempts(
    routed, fault_upstreams, fault
):
    """Behaviour 12: the official SDK with its default retries against two deployments that
    answer 429 (or 503) to everything, no Retry-After, the router's defaults otherwise
    (max_attempts 6): the SDK sends its request once (the answer says `x-should-retry:
    false` and invents no Retry-After), so the upstreams see at most 6 attempts in all (the
    issue measured 9 with one upstream); a rate limit reaches the client as OpenAI's 429
    (openai.RateLimitError) marked `X-Upstream-Error: rate_limited`, a 503 as our 503."""
    servers = fault_upstreams(2)
    for server in servers:
        server.default = rate_limited() if fault == "429" else overloaded()
    _, service = routed(
        _group(*(deployment(s, f"failing{i}", priority=i + 1) for i, s in enumerate(servers))),
        {"deadline_seconds": 30},
    )
    sent: list = []

    error = _default_sdk_call(service, sent)

    assert len(sent) == 1
    assert sum(len(s.arrivals()) for s in servers) <= 6
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    if fault == "429":
        assert isinstance(error, openai.RateLimitError)
        assert (error.code, error.response.headers["X-Upstream-Error"]) == ("rate_limit_exceeded", "rate_limited")
    else:
        assert error.status_code == 503


@pytest.mark.parametrize("fault", ["429", "503"])
def test_one_upstream_and_the_default_sdk_no_longer_multiply_attempts(make_app, upstream, serve, fault):
    """Behaviour 12 as the issue measured it: no routing file (OPENAI_MAX_RETRIES=2, the
    default), one upstream answering 429 with no Retry-After (or 503) to everything, the
    SDK with its default retries: today 9 upstream attempts (our 503 with an invented
    `Retry-After: 10`, retried twice by the SDK); now the SDK asks once and the upstream sees
    3, the router's own attempts; the 429 is OpenAI's, marked as the upstream's."""
    app = make_app(OPENAI_MAX_RETRIES=2)
    upstream.default = Status(429, "Rate limit reached") if fault == "429" else Status(503, "overloaded")
    sent: list = []

    error = _default_sdk_call(serve(app), sent)

    assert len(sent) == 1
    assert len(upstream.chat_requests()) == 3
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    assert error.status_code == int(fault)
    if fault == "429":
        assert error.response.headers["X-Upstream-Error"] == "rate_limited"
