"""Money (issue 25): each reply's cost, recorded from the upstream's usage at the prices of
that moment, and keys' budgets in USD, reserved and settled as token budgets are.

Prices are USD per million tokens: the shipped table (services/prices.yaml), PRICES_FILE
over it, the routing file's `price` over both. A price per million tokens is micro-dollars
per token, so the expected costs below are plain integer arithmetic.
"""

from __future__ import annotations

import json
import threading
from concurrent import futures as concurrent_futures

import openai
import pytest
import requests
import sqlalchemy as sa
from fake_upstream import Hang, Reply, StreamReply
from support import bearer, deployment

from config import ConfigError
from extensions import db

# gpt-4o-mini in the shipped table: input 0.15, cached input 0.075, output 0.60 per million.
MINI = {"input": 0.15, "cached": 0.075, "output": 0.60}


def _reply_costs(app, conversation: str) -> list[int | None]:
    """The cost_micros of the conversation's replies, oldest first."""
    query = sa.text("SELECT cost_micros FROM messages WHERE user_id = :c AND role = 'assistant' ORDER BY id")
    with app.app_context(), db.engine.connect() as conn:
        return [row[0] for row in conn.execute(query, {"c": conversation})]


def _usage_cost(app, conversation: str) -> dict:
    answer = app.test_client().get(f"/conversations/{conversation}/usage")
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["cost"]


def _sdk(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def test_each_reply_records_its_cost_from_the_upstreams_usage_cached_tokens_included(make_app, upstream, serve):
    app = make_app()
    server = serve(app)
    upstream.enqueue(
        Reply(text="plain", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500, cached_tokens=400),
        StreamReply(pieces=["stre", "amed"], model="gpt-4o-mini", prompt_tokens=2000, completion_tokens=100),
    )
    with _sdk(server.url) as sdk:
        headers = {"X-Conversation-Id": "priced"}
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers=headers
        )
        stream = sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}], stream=True, extra_headers=headers
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == "streamed"
    assert server.wait_idle()

    # 600 uncached and 400 cached prompt tokens, 500 completion; then 2000 and 100, none cached.
    plain = 600 * MINI["input"] + 400 * MINI["cached"] + 500 * MINI["output"]
    streamed = 2000 * MINI["input"] + 100 * MINI["output"]
    assert _reply_costs(app, "priced") == [round(plain), round(streamed)]  # 420 and 360 micro-dollars
    assert _usage_cost(app, "priced") == {"currency": "USD", "amount": 0.00078, "unpriced_replies": 0}


def test_an_unpriced_model_costs_nothing_and_is_flagged_never_guessed(make_app, upstream, serve):
    app = make_app()
    server = serve(app)
    upstream.enqueue(Reply(text="who knows", model="fake-model", prompt_tokens=1000, completion_tokens=1000))
    with _sdk(server.url) as sdk:
        sdk.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Conversation-Id": "free"},
        )
    assert server.wait_idle()

    assert _reply_costs(app, "free") == [None]
    assert _usage_cost(app, "free") == {"currency": "USD", "amount": 0.0, "unpriced_replies": 1}


def test_the_offline_model_costs_nothing_whatever_model_was_asked(make_app):
    """With no upstream the built-in offline model answers every model name; it spends
    nothing, so its reply costs 0, not the price of the model the client named."""
    app = make_app(OPENAI_API_KEY=None, OPENAI_BASE_URL=None)
    answer = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-Conversation-Id": "offline"},
    )
    assert answer.status_code == 200 and answer.get_json()["model"] == "offline"
    assert _reply_costs(app, "offline") == [0]
    assert _usage_cost(app, "offline") == {"currency": "USD", "amount": 0.0, "unpriced_replies": 0}


def test_a_price_in_the_routing_file_overrides_the_table(routed, fault_upstreams):
    """gpt-4o's table price is 2.50 / 10.00; the routing file says 1.00 / 2.00 for one
    deployment, and 3.00 / 4.00 for its group (which the other deployment takes)."""
    cheap_server, group_server = fault_upstreams(2)
    cheap_server.default = Reply(text="cheap", prompt_tokens=1000, completion_tokens=100)
    group_server.default = Reply(text="group", prompt_tokens=1000, completion_tokens=100)
    cheap = deployment(cheap_server, "cheap", model="gpt-4o", price={"input": 1.0, "output": 2.0})
    priced_by_group = deployment(group_server, "grouped", model="gpt-4o")
    groups = {
        "gpt-4o": {"deployments": [cheap]},
        "team-4o": {"deployments": [priced_by_group], "price": {"input": 3.0, "output": 4.0}},
    }
    app, server = routed(groups)
    with _sdk(server.url) as sdk:
        for model in ("gpt-4o", "team-4o"):
            sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Conversation-Id": model}
            )
    assert server.wait_idle()

    assert _reply_costs(app, "gpt-4o") == [1000 * 1 + 100 * 2]
    assert _reply_costs(app, "team-4o") == [1000 * 3 + 100 * 4]


def test_a_price_change_after_recording_does_not_change_recorded_costs(make_app, upstream, serve, tmp_path):
    before = make_app()
    upstream.enqueue(Reply(text="old price", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=1000))
    server = serve(before)
    with _sdk(server.url) as sdk:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Conversation-Id": "c"}
        )
    assert server.wait_idle()
    recorded = 1000 * MINI["input"] + 1000 * MINI["output"]

    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  gpt-4o-mini: {input: 10, output: 20}\n", encoding="utf-8")
    after = make_app(PRICES_FILE=str(prices))
    upstream.enqueue(Reply(text="new price", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=1000))
    server = serve(after)
    with _sdk(server.url) as sdk:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Conversation-Id": "c"}
        )
    assert server.wait_idle()

    assert _reply_costs(after, "c") == [round(recorded), 1000 * 10 + 1000 * 20]
    assert _usage_cost(after, "c")["amount"] == (round(recorded) + 30_000) / 1_000_000


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("models:\n  gpt-4o: {input: -1, output: 2}\n", "models.gpt-4o.input"),
        ("models:\n  gpt-4o: {input: 1, outptu: 2}\n", "models.gpt-4o.outptu"),
        ("currency: EUR\n", "currency"),
    ],
)
def test_a_bad_price_file_stops_start_up_naming_the_field(make_app, tmp_path, text, named):
    prices = tmp_path / "prices.yaml"
    prices.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"PRICES_FILE {prices} is invalid: .*{named}"):
        make_app(PRICES_FILE=str(prices))


# -- budgets in USD ------------------------------------------------------------------------

# "hi" is estimated at 5 prompt tokens; with max_tokens 1000 a gpt-4o-mini request's worst
# case is 5 x 0.15 + 1000 x 0.60 = 600.75 micro-dollars, reserved as 601.
MAX_TOKENS = 1000
WORST_CASE_MICROS = 601
HI = [{"role": "user", "content": "hi"}]


def _usd_key(app, *options: str) -> str:
    result = app.test_cli_runner().invoke(args=["keys", "create", "--name", "metered", *options])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def _listed(app) -> dict:
    (line,) = app.test_cli_runner().invoke(args=["keys", "list", "--json"]).stdout.splitlines()
    return json.loads(line)


def test_concurrent_requests_cannot_overspend_a_daily_usd_budget(make_app, upstream, serve):
    app = make_app(REQUIRE_API_KEY=True)
    key = _usd_key(app, "--daily-usd", "0.0025")  # 2500 micro-dollars: 4 worst cases of 601
    concurrent, admitted = 12, 2500 // WORST_CASE_MICROS
    release, progress = threading.Event(), threading.Condition()
    arrived, refused = [], []
    spent = Reply(text="ok", model="gpt-4o-mini", prompt_tokens=5, completion_tokens=MAX_TOKENS)
    upstream.enqueue(*[Hang(release, spent)] * concurrent)

    def at_upstream(received) -> None:
        with progress:
            arrived.append(received)
            progress.notify_all()

    def ask() -> int:
        try:
            with _sdk(server.url, key) as sdk:
                sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=MAX_TOKENS)
            return 200
        except openai.RateLimitError as exc:
            with progress:
                refused.append(exc.body)
                progress.notify_all()
            return 429

    upstream.on_request = at_upstream
    server = serve(app)
    with concurrent_futures.ThreadPoolExecutor(concurrent) as pool:
        futures = [pool.submit(ask) for _ in range(concurrent)]
        with progress:  # each request reached the upstream (held there) or was refused
            assert progress.wait_for(lambda: len(arrived) + len(refused) == concurrent, timeout=60)
        release.set()
        statuses = sorted(future.result() for future in futures)
    assert server.wait_idle()

    assert statuses == [200] * admitted + [429] * (concurrent - admitted)
    assert len(upstream.chat_requests()) == admitted
    assert {body["code"] for body in refused} == {"daily_usd_budget_exceeded"}
    listed = _listed(app)
    assert (listed["usd_today"], listed["usd_reserved_today"]) == (admitted * WORST_CASE_MICROS / 1e6, 0)
    assert listed["usd_today"] <= listed["daily_usd"] == 0.0025
    assert listed["usd_this_month"] == listed["usd_today"]


def test_a_spent_usd_budget_answers_429_naming_the_currency(make_app, upstream, serve):
    app = make_app(REQUIRE_API_KEY=True)
    daily = _usd_key(app, "--daily-usd", "0.0006")  # below one worst case
    server = serve(app)
    with _sdk(server.url, daily) as sdk, pytest.raises(openai.RateLimitError) as raised:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=MAX_TOKENS)
    body, headers = raised.value.body, raised.value.response.headers
    assert (body["code"], body["type"]) == ("daily_usd_budget_exceeded", "rate_limit_error")
    assert int(headers["Retry-After"]) >= 1
    assert "Daily budget of 0.0006 USD" in body["message"] and "up to 0.000601 USD" in body["message"]

    # The service's own routes answer with the token budget's shape: the figures, in USD.
    payload = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": MAX_TOKENS}
    own = requests.post(f"{server.url}/process-payload/", json=payload, headers=bearer(daily), timeout=30)
    assert own.status_code == 429 and int(own.headers["Retry-After"]) >= 1
    answer = own.json()
    assert answer["code"] == "daily_usd_budget_exceeded"
    assert answer["budget"] == {
        "daily_usd": 0.0006,
        "currency": "USD",
        "used_today": 0.0,
        "reserved_today": 0.0,
        "request_worst_case": WORST_CASE_MICROS / 1e6,
        "resets_at": answer["budget"]["resets_at"],
    }
    assert upstream.chat_requests() == []


def test_a_monthly_usd_budget_counts_what_the_replies_cost(make_app, upstream, serve):
    app = make_app(REQUIRE_API_KEY=True)
    key = _usd_key(app, "--monthly-usd", "0.001")  # one worst case fits, two do not
    upstream.enqueue(Reply(text="ok", model="gpt-4o-mini", prompt_tokens=5, completion_tokens=MAX_TOKENS))
    server = serve(app)
    with _sdk(server.url, key) as sdk:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=MAX_TOKENS)
        with pytest.raises(openai.RateLimitError) as raised:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=MAX_TOKENS)
    body = raised.value.body
    assert body["code"] == "monthly_usd_budget_exceeded"
    assert "Monthly budget of 0.001 USD" in body["message"] and "0.000601 USD used" in body["message"]
    assert len(upstream.chat_requests()) == 1
    assert _listed(app)["usd_this_month"] == 0.000601


def test_an_unpriced_model_is_never_refused_for_money(make_app, upstream, serve):
    """It costs 0: a USD budget reserves and charges nothing for it (its tokens still count)."""
    app = make_app(REQUIRE_API_KEY=True)
    key = _usd_key(app, "--daily-usd", "0.000001")
    server = serve(app)
    with _sdk(server.url, key) as sdk:
        for _ in range(2):
            sdk.chat.completions.create(model="fake-model", messages=HI, max_tokens=MAX_TOKENS)
    listed = _listed(app)
    assert (listed["usd_today"], listed["requests_today"]) == (0, 2)


@pytest.mark.parametrize("amount", ["0", "-1", "abc", "0.0000001"])
def test_keys_create_refuses_an_amount_that_is_no_budget(make_app, amount):
    result = make_app().test_cli_runner().invoke(args=["keys", "create", "--name", "x", "--daily-usd", amount])
    assert result.exit_code == 2 and "is not an amount of USD" in result.output
