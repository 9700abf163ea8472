"""A previous_response_id chain is read in one statement, however long (issue 22, item 3):
a request that continues a chain of 80 links runs as many statements as one that
continues a chain of 3, on SQLite and PostgreSQL."""

from __future__ import annotations

from support import executed

from database import unit_of_work
from services.responses import store


def _chain(client, links: int) -> str:
    """The id of the last response of a chain of `links` responses."""
    previous = None
    for number in range(links):
        body = {"model": "fake-model", "input": f"turn {number}", "truncation": "auto"}
        if previous:
            body["previous_response_id"] = previous
        answer = client.post("/v1/responses", json=body)
        assert answer.status_code == 200, answer.get_json()
        previous = answer.get_json()["id"]
    return previous


def _continue(app, client, previous: str) -> list[str]:
    body = {"model": "fake-model", "input": "and now?", "previous_response_id": previous, "truncation": "auto"}
    with executed(app) as seen:
        answer = client.post("/v1/responses", json=body)
    assert answer.status_code == 200, answer.get_json()
    return [statement for statement, _ in seen]


def test_continuing_a_long_chain_runs_as_many_statements_as_a_short_one(make_app, upstream):
    app = make_app()
    client = app.test_client()
    short, long = _chain(client, 3), _chain(client, 80)
    _continue(app, client, short)  # statements compiled and cached, key looked up

    assert len(_continue(app, client, long)) == len(_continue(app, client, short))
    # The 80 links, and the last turn before the new one, were sent (within HISTORY_MAX_MESSAGES).
    assert upstream.chat_requests()[-2]["messages"][-2:] == [
        {"role": "assistant", "content": "echo: turn 79"},
        {"role": "user", "content": "and now?"},
    ]


def test_the_chain_is_one_statement_and_ends_at_a_missing_link(make_app, upstream):
    app = make_app()
    client = app.test_client()
    last = _chain(client, 40)
    with app.app_context():
        with executed(app) as seen, unit_of_work(write=False) as session:
            chain = store.response_chain(session, last, None)
        assert len(seen) == 1
        assert chain is not None and len(chain[1]) == 40
        second = client.post("/v1/responses", json={"model": "fake-model", "input": "x"}).get_json()["id"]
        third = client.post(
            "/v1/responses", json={"model": "fake-model", "input": "y", "previous_response_id": second}
        ).get_json()["id"]
        client.delete(f"/v1/responses/{second}")
        with unit_of_work(write=False) as session:
            assert store.response_chain(session, third, None) is None  # a link erased: no chain
            assert store.response_chain(session, "resp_unknown", None) is None
