"""History: trimmed to whole exchanges within the limits, never interleaved under concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests
from support import rows_of

from services.history import HistoryLimits, trim_exchanges
from services.tokens import estimate_message_tokens


def _turns(client, user_id: str, count: int) -> None:
    for i in range(count):
        response = client.post("/openai-completion", json={"prompt": f"turn {i}", "user_id": user_id})
        assert response.status_code == 200


def test_history_keeps_the_newest_whole_exchanges_within_max_messages(make_app, upstream):
    app = make_app(HISTORY_MAX_MESSAGES=4, SYSTEM_PROMPT="rules")
    client = app.test_client()
    _turns(client, "trim-1", 5)

    client.post("/openai-completion", json={"prompt": "now", "user_id": "trim-1"})

    assert upstream.chat_requests()[-1]["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "turn 3"},
        {"role": "assistant", "content": "echo: turn 3"},
        {"role": "user", "content": "turn 4"},
        {"role": "assistant", "content": "echo: turn 4"},
        {"role": "user", "content": "now"},
    ]
    assert len(rows_of(app, "trim-1")) == 12  # trimming limits what is sent, not what is kept


def test_max_messages_never_splits_an_exchange(make_app, upstream):
    app = make_app(HISTORY_MAX_MESSAGES=3)
    client = app.test_client()
    _turns(client, "trim-2", 3)
    client.post("/openai-completion", json={"prompt": "now", "user_id": "trim-2"})
    # 3 messages allow one whole exchange (2 messages), not one and a half.
    assert [m["content"] for m in upstream.chat_requests()[-1]["messages"]] == ["turn 2", "echo: turn 2", "now"]


def test_token_budget_drops_the_oldest_exchanges(make_app, upstream):
    exchange_cost = estimate_message_tokens({"role": "user", "content": "turn 9"}) + estimate_message_tokens(
        {"role": "assistant", "content": "echo: turn 9"}
    )
    new_turn_cost = estimate_message_tokens({"role": "user", "content": "now"})
    # Room for the new turn and two whole exchanges, but not quite three.
    budget = new_turn_cost + 3 * exchange_cost - 1
    app = make_app(HISTORY_MAX_TOKENS=budget)
    client = app.test_client()
    _turns(client, "budget", 4)

    client.post("/openai-completion", json={"prompt": "now", "user_id": "budget"})

    sent = upstream.chat_requests()[-1]["messages"]
    assert [m["content"] for m in sent] == ["turn 2", "echo: turn 2", "turn 3", "echo: turn 3", "now"]
    assert sum(estimate_message_tokens(m) for m in sent) <= budget


def test_system_prompt_and_new_turn_are_kept_even_over_the_budget(make_app, upstream):
    app = make_app(HISTORY_MAX_TOKENS=10, SYSTEM_PROMPT="a long system prompt " * 10)
    client = app.test_client()
    _turns(client, "over", 2)
    long_prompt = "a prompt far longer than the whole budget " * 5

    response = client.post("/openai-completion", json={"prompt": long_prompt, "user_id": "over"})

    assert response.status_code == 200
    assert upstream.chat_requests()[-1]["messages"] == [
        {"role": "system", "content": "a long system prompt " * 10},
        {"role": "user", "content": long_prompt},
    ]


def test_zero_max_messages_turns_memory_off(make_app, upstream):
    client = make_app(HISTORY_MAX_MESSAGES=0).test_client()
    _turns(client, "nomem", 2)
    assert upstream.chat_requests()[-1]["messages"] == [{"role": "user", "content": "turn 1"}]


def test_trim_exchanges_walks_from_the_newest_and_stops_at_the_first_misfit():
    small = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    huge = [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "y"}]
    newer = [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    cost_small = sum(estimate_message_tokens(m) for m in small)

    kept = trim_exchanges([small, huge, newer], HistoryLimits(max_messages=10, max_tokens=cost_small * 3), 0)

    # `huge` does not fit, and the older `small` is not taken past the gap it leaves.
    assert kept == [newer]


def test_concurrent_requests_for_one_user_are_recorded_as_whole_exchanges(make_app, upstream):
    app = make_app()
    from support import LiveServer

    server = LiveServer(app)
    parallel = 6
    # Hold every upstream call until all six are in flight at once, so the user turns
    # and replies of the six exchanges really are written interleaved.
    everyone_in = threading.Barrier(parallel, timeout=20)
    upstream.on_request = lambda _received: everyone_in.wait()
    try:
        with ThreadPoolExecutor(parallel) as pool:
            answers = list(
                pool.map(
                    lambda i: requests.post(
                        f"{server.url}/openai-completion", json={"prompt": f"q{i}", "user_id": "same"}, timeout=30
                    ),
                    range(parallel),
                )
            )
        upstream.on_request = None
        assert [a.status_code for a in answers] == [200] * parallel
        follow_up = requests.post(
            f"{server.url}/openai-completion", json={"prompt": "summary", "user_id": "same"}, timeout=30
        )
        assert follow_up.status_code == 200
    finally:
        server.stop()

    # None of the six saw another's turn: each started while the others were pending.
    for body in upstream.chat_requests()[:parallel]:
        assert len(body["messages"]) == 1
    history = upstream.chat_requests()[-1]["messages"][:-1]
    assert len(history) == 2 * parallel
    pairs = [(history[i]["content"], history[i + 1]["content"]) for i in range(0, len(history), 2)]
    assert all(answer == f"echo: {question}" for question, answer in pairs)
    assert sorted(q for q, _ in pairs) == sorted(f"q{i}" for i in range(parallel))
    rows = rows_of(app, "same")
    assert len(rows) == 2 * (parallel + 1)
    assert {r["status"] for r in rows} == {"completed"}


def test_a_conversations_recent_exchanges_are_its_keys_completed_ones_in_the_order_they_began(make_app):
    """The history read (one statement): per key scope, the newest completed exchanges,
    oldest first, each exchange's rows together in order, even when two exchanges' rows
    were written interleaved; pending and failed exchanges, and other keys' rows under the
    same conversation id, are never part of it."""
    from database import unit_of_work
    from services.client_keys import create_key
    from services.exchanges import record_failure, record_reply, record_turn
    from services.history import HistoryLimits, rebuild_history

    def turn(exchange: str, key: int | None, text: str) -> None:
        with unit_of_work() as session:
            record_turn(session, exchange, "shared", key, [{"role": "user", "content": text}])

    def reply(exchange: str, key: int | None, text: str) -> None:
        with unit_of_work() as session:
            record_reply(session, exchange, "shared", key, {"role": "assistant", "content": text, "model": "m"})

    with make_app().app_context():
        with unit_of_work() as session:
            mine = create_key(session, "mine")[0]["id"]
            theirs = create_key(session, "theirs")[0]["id"]
        turn("a", mine, "a?")
        turn("c", mine, "c?")  # begun after a, answered before it: rows a?, c?, c!, a!
        reply("c", mine, "c!")
        reply("a", mine, "a!")
        turn("pending", mine, "p?")
        turn("failed", mine, "f?")
        with unit_of_work() as session:
            record_failure(session, "failed", "upstream broke")
        turn("d", mine, "d?")
        reply("d", mine, "d!")
        turn("other", theirs, "o?")
        reply("other", theirs, "o!")
        turn("keyless", None, "k?")
        reply("keyless", None, "k!")

        def read(key: int | None, newest: int) -> list[tuple[str, str]]:
            with unit_of_work(write=False) as session:
                history = rebuild_history(session, "shared", key, HistoryLimits(2 * newest, 10**6))
            return [(message["role"], message["content"]) for message in history.messages]

        a, c, d = ([("user", f"{x}?"), ("assistant", f"{x}!")] for x in "acd")
        assert read(mine, 10) == [*a, *c, *d]
        assert read(mine, 2) == [*c, *d]
        assert read(mine, 1) == d
        assert read(theirs, 10) == [("user", "o?"), ("assistant", "o!")]
        assert read(None, 10) == [("user", "k?"), ("assistant", "k!")]
