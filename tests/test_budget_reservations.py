"""Daily token budgets hold under concurrency: each request reserves its worst case first.

A request reserves its estimated prompt tokens plus its max_tokens (BUDGET_DEFAULT_MAX_TOKENS
when it sets none) before the upstream is called, and the reservation is settled to the real
usage when it ends. A request whose worst case does not fit is answered 429 and never
reaches the upstream, however many requests of the key are running.
"""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
import requests
from fake_upstream import Hang, Reply, Status
from support import LiveServer, all_rows, bearer, create_client_key

CONCURRENT = 20
BUDGET = 100
MAX_TOKENS = 20
# "hi" is estimated at 5 prompt tokens (4 of framing, 1 of text): each request's worst case
# is 25, so exactly 4 fit in the budget at once.
WORST_CASE = 5 + MAX_TOKENS
PAYLOAD = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS}


def _usage(app) -> dict[str, int]:
    (row,) = all_rows(app)["api_key_usage"]
    return dict(zip(("requests", "prompt", "completion", "total", "reserved"), row[2:7], strict=True))


@pytest.mark.parametrize("prompt_tokens", [5, 11], ids=["estimate-exact", "estimate-6-under"])
def test_concurrent_requests_spend_at_most_the_budget_and_the_rest_never_reach_the_upstream(
    make_app, upstream, prompt_tokens
):
    app = make_app(REQUIRE_API_KEY=True)
    key = bearer(create_client_key(app, "metered", "--daily-tokens", str(BUDGET)))
    release, progress = threading.Event(), threading.Condition()
    arrived, refused = [], []
    upstream.enqueue(*[Hang(release, Reply(prompt_tokens=prompt_tokens, completion_tokens=MAX_TOKENS))] * CONCURRENT)

    def at_upstream(received) -> None:
        with progress:
            arrived.append(received)
            progress.notify_all()

    def post() -> requests.Response:
        response = requests.post(server.url + "/process-payload/", json=PAYLOAD, headers=key, timeout=60)
        if response.status_code == 429:
            with progress:
                refused.append(response)
                progress.notify_all()
        return response

    upstream.on_request = at_upstream
    server = LiveServer(app)
    try:
        with concurrent.futures.ThreadPoolExecutor(CONCURRENT) as pool:
            futures = [pool.submit(post) for _ in range(CONCURRENT)]
            # Every request has either reached the upstream (where it is held) or been refused:
            # the admitted ones hold their reservations while the others ask.
            with progress:
                assert progress.wait_for(lambda: len(arrived) + len(refused) == CONCURRENT, timeout=60)
            release.set()
            answers = [future.result() for future in futures]
        assert server.wait_idle()
    finally:
        server.stop()

    statuses = sorted(answer.status_code for answer in answers)
    admitted = BUDGET // WORST_CASE
    assert statuses == [200] * admitted + [429] * (CONCURRENT - admitted)
    assert len(upstream.chat_requests()) == admitted
    assert {answer.json()["code"] for answer in refused} == {"daily_token_budget_exceeded"}
    usage = _usage(app)
    underestimate = prompt_tokens - 5  # per request: the upstream counted more prompt than we estimated
    assert usage == {
        "requests": admitted,
        "prompt": admitted * prompt_tokens,
        "completion": admitted * MAX_TOKENS,
        "total": admitted * (prompt_tokens + MAX_TOKENS),
        "reserved": 0,
    }
    assert usage["total"] <= BUDGET + admitted * underestimate


def test_a_request_without_max_tokens_reserves_the_default_cap(make_app, upstream):
    app = make_app(REQUIRE_API_KEY=True)  # BUDGET_DEFAULT_MAX_TOKENS: 1024
    key = bearer(create_client_key(app, "metered", "--daily-tokens", "1000"))
    client = app.test_client()

    uncapped = client.post("/process-payload/", json={"messages": PAYLOAD["messages"]}, headers=key)
    capped = client.post("/v1/chat/completions", json={**PAYLOAD, "model": "fake-model"}, headers=key)

    assert uncapped.status_code == 429
    assert uncapped.get_json()["budget"]["request_worst_case"] == 5 + 1024
    assert "this request may take up to 1029" in uncapped.get_json()["error"]
    assert capped.status_code == 200
    assert len(upstream.chat_requests()) == 1


def test_max_completion_tokens_and_n_choices_count_on_the_openai_route(make_app, upstream):
    app = make_app(REQUIRE_API_KEY=True)
    key = bearer(create_client_key(app, "metered", "--daily-tokens", "100"))
    client = app.test_client()
    chat = {"model": "fake-model", "messages": PAYLOAD["messages"], "max_completion_tokens": 40}

    too_many = client.post("/v1/chat/completions", json={**chat, "n": 3}, headers=key)  # 5 + 3 x 40
    fits = client.post("/v1/chat/completions", json={**chat, "n": 2}, headers=key)  # 5 + 2 x 40

    assert too_many.status_code == 429
    assert too_many.get_json()["error"]["code"] == "daily_token_budget_exceeded"
    assert fits.status_code == 200
    assert len(upstream.chat_requests()) == 1


def test_a_failed_upstream_call_gives_its_reservation_back(make_app, upstream):
    app = make_app(REQUIRE_API_KEY=True)
    key = bearer(create_client_key(app, "metered", "--daily-tokens", str(BUDGET)))
    client = app.test_client()
    upstream.enqueue(Status(500, "upstream broke"))

    assert client.post("/process-payload/", json={**PAYLOAD, "max_tokens": 95}, headers=key).status_code == 502
    assert _usage(app) == {"requests": 0, "prompt": 0, "completion": 0, "total": 0, "reserved": 0}
    # The whole budget is there again for a request whose worst case is all of it.
    assert client.post("/process-payload/", json={**PAYLOAD, "max_tokens": 95}, headers=key).status_code == 200
