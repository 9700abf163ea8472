"""Money (issue 25): each reply's cost, recorded from the upstream's usage at the prices of
that moment, and keys' budgets in USD, reserved and settled as token budgets are.

Prices are USD per million tokens: the shipped table (services/prices.yaml), PRICES_FILE
over it, the routing file's `price` over both. A price per million tokens is micro-dollars
per token, so the expected costs below are plain integer arithmetic.
"""

from __future__ import annotations

import openai
import pytest
import sqlalchemy as sa
from fake_upstream import Reply, StreamReply
from support import deployment

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
