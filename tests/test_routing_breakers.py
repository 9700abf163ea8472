"""Issue 21, circuit breakers (behaviour 9): a flapping primary is taken out of rotation and
brought back by a single probe; the state shows in /readyz and /metrics and is shared
through Redis by every process that uses it. Real local upstreams (tests/fault_upstream.py).

Scaled down: the primary is down ~6 s (60 s in the issue), a request every 0.5 s (4 s),
a cooldown of 1-1.5 s (15 s by default); the breaker opens after 2-3 failures (3).
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time

import openai
import pytest
import redis
import requests
from fake_upstream import Reply
from fault_upstream import Flapping, Silent, overloaded
from support import deployment, free_port

INTERVAL = 0.5
DOWN_SECONDS = 6.0
COOLDOWN = 1.5
SHORT = {"connect": 2, "first_token": 10, "silence": 5, "total": 20}


def _groups(primary, fallback) -> dict:
    """The primary's group falls back to a group of its own (a local model, say)."""
    return {
        "fake-model": {"deployments": [primary], "fallbacks": ["local"]},
        "local": {"deployments": [fallback]},
    }


def _router(failures: int, cooldown: float) -> dict:
    return {
        "retries_per_deployment": 0,
        "backoff_seconds": 0.05,
        "deadline_seconds": 30,
        "breaker": {"failures": failures, "cooldown_seconds": cooldown},
    }


def _ask(server, text: str = "hi") -> str:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=30) as client:
        answer = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": text}])
    return answer.choices[0].message.content


def _breaker_state(server, name: str) -> str:
    return requests.get(f"{server.url}/readyz", timeout=5).json()["upstreams"][name]


def _breaker_metric(server, name: str) -> float | None:
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    found = re.search(rf'^gateway_upstream_breaker_open\{{deployment="{re.escape(name)}"\}} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else None


def test_a_flapping_primary_is_broken_out_the_fallback_serves_and_traffic_returns_after_recovery(
    routed, fault_upstreams
):
    """Behaviour 9: the primary answers 503 for 6 s, then is healthy; a request every 0.5 s.
    Every request is answered (by the fallback group while the primary is down); after 3
    failures the breaker opens (/readyz "open", gateway_upstream_breaker_open 1) and the
    primary then gets only single probes, one per cooldown (1.5 s), never a stream of
    failures; after recovery a probe closes it and traffic returns to the primary within a
    cooldown and a request interval (the issue: within 30 s, cooldown 15 s)."""
    primary_server, fallback_server = fault_upstreams(2)
    primary = deployment(primary_server, "primary", timeouts=SHORT)
    fallback_server.default = Reply(text="answered by the fallback")
    _, server = routed(_groups(primary, deployment(fallback_server, "fallback")), _router(3, COOLDOWN))

    recovered_at = time.monotonic() + DOWN_SECONDS
    primary_server.default = Flapping(until=recovered_at, healthy=Reply(text="answered by the primary"))
    stop_at = recovered_at + COOLDOWN + 4 * INTERVAL + 1.0
    answers, seen_open = [], None
    started = time.monotonic()
    for index in range(int((stop_at - started) / INTERVAL) + 1):
        time.sleep(max(0.0, started + index * INTERVAL - time.monotonic()))  # the traffic's pace
        sent_at = time.monotonic()
        answers.append((sent_at, _ask(server, f"request {index}")))
        if seen_open is None and len(primary_server.arrivals()) == 3 and sent_at < recovered_at - COOLDOWN:
            seen_open = (_breaker_state(server, primary.name), _breaker_metric(server, primary.name))

    assert all(text in ("answered by the fallback", "answered by the primary") for _, text in answers), answers
    assert seen_open == ("open", 1.0)
    while_down = [at for at in primary_server.arrivals() if at < recovered_at]
    assert len(while_down) >= 3
    probes = while_down[2:]  # after the failures that opened it, one probe per cooldown at most
    assert all(later - earlier >= COOLDOWN - 0.1 for earlier, later in zip(probes, probes[1:], strict=False))
    back = [text for sent_at, text in answers if sent_at >= recovered_at + COOLDOWN + 2 * INTERVAL]
    assert len(back) >= 3 and set(back) == {"answered by the primary"}
    assert (_breaker_state(server, primary.name), _breaker_metric(server, primary.name)) == ("closed", 0.0)


def test_an_open_breaker_lets_a_single_probe_through_and_its_success_closes_it(routed, fault_upstreams):
    """Behaviour 9: once the cooldown is over, of many concurrent requests exactly one (the
    probe) goes to the primary while the others keep going to the fallback; the probe's
    success closes the breaker and the next request is the primary's again."""
    primary_server, fallback_server = fault_upstreams(2)
    primary = deployment(primary_server, "primary", timeouts=SHORT)
    fallback_server.default = Reply(text="answered by the fallback")
    _, server = routed(_groups(primary, deployment(fallback_server, "fallback")), _router(2, 1.0))
    primary_server.default = overloaded()
    assert [_ask(server), _ask(server)] == ["answered by the fallback"] * 2  # two failures: open
    release = threading.Event()
    primary_server.default = Silent(seconds=30, release=release, then=Reply(text="answered by the primary"))

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = []
        deadline = time.monotonic() + 10
        while len(primary_server.arrivals()) < 3 and time.monotonic() < deadline:
            futures += [pool.submit(_ask, server, "burst") for _ in range(3)]
            time.sleep(0.3)  # the traffic's pace, until the cooldown ends and the probe goes out
        assert len(primary_server.arrivals()) == 3, "no probe reached the primary within 10 s"
        during_probe = [pool.submit(_ask, server, "while probing") for _ in range(6)]
        assert [f.result(timeout=30) for f in during_probe] == ["answered by the fallback"] * 6
        assert len(primary_server.arrivals()) == 3  # still the one probe
        release.set()
        answers = [f.result(timeout=30) for f in futures]

    assert answers.count("answered by the primary") == 1
    assert _ask(server, "after the probe") == "answered by the primary"
    assert _breaker_state(server, primary.name) == "closed"


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "redis-emptied"])
def test_a_breaker_opened_by_one_app_is_seen_open_by_another_through_redis(routed, fault_upstreams, redis_url, shared):
    """Behaviour 9: two apps (two processes or hosts in production) on one Redis, the one the
    rate limits use: the breaker opened by the first app's traffic is open for the second,
    whose request goes straight to the fallback and whose /readyz says so. The state is
    Redis's: with Redis emptied in between, the second app tries the primary again."""
    primary_server, fallback_server = fault_upstreams(2)
    primary = deployment(primary_server, "primary", timeouts=SHORT)
    fallback_server.default = Reply(text="answered by the fallback")
    groups = _groups(primary, deployment(fallback_server, "fallback"))
    limits = {"RATELIMIT_ENABLED": True, "RATELIMIT_APPLICATION": "1000 per hour", "RATELIMIT_STORAGE_URI": redis_url}
    _, first = routed(groups, _router(2, 30), **limits)
    _, second = routed(groups, _router(2, 30), **limits)
    primary_server.default = overloaded()

    assert [_ask(first), _ask(first)] == ["answered by the fallback"] * 2
    assert len(primary_server.arrivals()) == 2
    if not shared:
        redis.Redis.from_url(redis_url).flushdb()

    assert _ask(second) == "answered by the fallback"
    if shared:
        assert len(primary_server.arrivals()) == 2  # the second app never tried the open primary
        assert _breaker_state(second, primary.name) == "open"
    else:
        assert len(primary_server.arrivals()) == 3


def test_an_unreachable_breaker_storage_degrades_readiness_but_never_fails_it(routed, fault_upstreams):
    """Behaviour 9: with the rate limits' Redis unreachable, breakers count per process (like
    the limits); /readyz stays 200 and says `"breaker_storage": "degraded"`, and requests
    are still answered."""
    (primary_server,) = fault_upstreams(1)
    primary_server.default = Reply(text="answered by the primary")
    primary = deployment(primary_server, "primary", timeouts=SHORT)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    _, server = routed(
        {"fake-model": {"deployments": [primary]}},
        _router(3, 15),
        RATELIMIT_ENABLED=True,
        RATELIMIT_APPLICATION="1000 per hour",
        RATELIMIT_STORAGE_URI=nowhere,
    )

    assert _ask(server, "still here") == "answered by the primary"
    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["breaker_storage"] == "degraded"
    assert ready.json()["upstreams"] == {primary.name: "closed"}
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert "gateway_upstream_breakers_degraded 1.0" in metrics  # the gauge says it too
