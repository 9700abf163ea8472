"""Item ids and cursors say nothing of anyone else's writes (issue 22, item 5).

A row's items were msg_<row id>..., and its page cursor the row id: one counter every key's
writes advance, so a key that added an item, waited and added another learnt how many rows
everyone else wrote in between. Now every row has a random public id, kept for its life
(migration 0013 gave the existing rows theirs), which names its items, its `id` in
`GET /conversations/<user_id>` and the cursor after it; every route that takes an item id
or a cursor resolves it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import openai
import pytest
import sqlalchemy as sa
from fake_upstream import Reply, tool_call
from flask_migrate import upgrade
from support import bearer, create_client_key, rows_of

from app import create_app
from extensions import db

ROW_ITEM = re.compile(r"^(msg|fco)_[0-9a-f]{32}$|^fc_[0-9a-f]{32}_[0-9]+$")
PUBLIC = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def keyed(make_app, serve) -> Iterator[tuple[object, openai.OpenAI, openai.OpenAI, dict]]:
    """An app with client keys on, and the SDK for keys `a` and `b` over a live server."""
    app = make_app(REQUIRE_API_KEY=True)
    server = serve(app)
    keys = [create_client_key(app, name) for name in ("a", "b")]
    a, b = (openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0) for key in keys)
    yield app, a, b, bearer(keys[0])
    a.close()
    b.close()


def test_ids_and_cursors_are_random_not_a_count_of_everyones_rows(keyed):
    app, a, b, a_header = keyed
    mine = a.conversations.create(items=[{"type": "message", "role": "user", "content": "first"}])
    theirs = b.conversations.create()
    for number in range(5):
        b.conversations.items.create(theirs.id, items=[{"type": "message", "role": "user", "content": f"{number}"}])
    a.conversations.items.create(mine.id, items=[{"type": "message", "role": "user", "content": "second"}])

    ids = [item.id for item in a.conversations.items.list(mine.id, order="asc")]
    page = app.test_client().get(f"/conversations/{mine.id}?limit=1", headers=a_header).get_json()

    assert all(ROW_ITEM.match(item_id) for item_id in ids), ids
    rows = rows_of(app, mine.id)
    assert ids == [f"msg_{row['id']}" for row in rows]  # each names its row by its public id
    assert [PUBLIC.match(row["id"]) is not None for row in page["messages"]] == [True]
    assert page["next_cursor"] == page["messages"][0]["id"]
    with app.app_context():
        row_ids = db.session.execute(sa.text("SELECT id FROM messages ORDER BY id")).scalars().all()
    # Nothing a client is given carries the counter: not an id, not a cursor.
    assert not {f"msg_{row_id}" for row_id in row_ids} & set(ids)
    assert page["next_cursor"] not in {str(row_id) for row_id in row_ids}


def test_every_route_that_takes_an_id_or_cursor_resolves_the_opaque_ones(keyed, upstream):
    app, a, _, a_header = keyed
    upstream.enqueue(Reply(tool_calls=[tool_call("call_1", "f", {"x": 1})]))
    conversation = a.conversations.create(items=[{"type": "message", "role": "user", "content": "hello"}])
    asked = a.responses.create(model="fake-model", input="call f", conversation=conversation.id)
    a.responses.create(
        model="fake-model",
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "done"}],
        conversation=conversation.id,
    )
    items = list(a.conversations.items.list(conversation.id, order="asc", limit=1))  # `after` each time
    ids = [item.id for item in items]
    assert [item.type for item in items] == ["message", "message", "function_call", "function_call_output", "message"]
    assert ids[2] == asked.output[0].id  # a reply keeps the ids its response gave it
    assert all(ROW_ITEM.match(item_id) for item_id in ids[:2] + ids[3:4]), ids

    for item_id in ids:  # one by one, by id
        assert a.conversations.items.retrieve(item_id, conversation_id=conversation.id).id == item_id
    assert [item.id for item in a.responses.input_items.list(asked.id)] == [ids[1]]

    referenced = a.responses.create(model="fake-model", input=[{"type": "item_reference", "id": ids[0]}])
    assert upstream.chat_requests()[-1]["messages"] == [{"role": "user", "content": "hello"}]
    assert referenced.status == "completed"

    a.conversations.items.delete(ids[1], conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        a.conversations.items.retrieve(ids[1], conversation_id=conversation.id)
    left = [item.id for item in a.conversations.items.list(conversation.id, order="asc")]
    assert left == [ids[0], *ids[2:]]  # the others keep their ids

    client, seen, cursor = app.test_client(), [], None
    while True:  # our own conversation pages, one row at a time
        query = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        body = client.get(f"/conversations/{conversation.id}", query_string=query, headers=a_header).get_json()
        seen += [row["id"] for row in body["messages"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [row["id"] for row in rows_of(app, conversation.id)]


@pytest.fixture
def database_at_0012(database_url, tmp_path) -> str:
    """An empty database migrated up to 0012 (before public ids): a SQLite file, or a
    PostgreSQL schema of its own."""
    url = database_url
    if url.startswith("postgresql"):
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS opaque_ids CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA opaque_ids"))
        engine.dispose()
        url = sa.make_url(url).update_query_dict({"options": "-csearch_path=opaque_ids"})
        url = url.render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / 'at-0012.db'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "APP_ENV": "testing", "LLM_OFFLINE": True})
    with app.app_context():
        upgrade(revision="0012")
        db.engine.dispose()
    app.extensions["llm"].close()
    return url


def test_the_migration_gives_every_existing_row_a_public_id_that_resolves(database_at_0012, app_factory):
    engine = sa.create_engine(database_at_0012)
    content = "CAST(:content AS json)" if engine.dialect.name == "postgresql" else ":content"
    with engine.begin() as conn:
        for number in range(3):
            conn.execute(
                sa.text(
                    "INSERT INTO messages (user_id, exchange_id, timestamp, role, content, status) "
                    f"VALUES ('old', :exchange, CURRENT_TIMESTAMP, 'user', {content}, 'completed')"
                ),
                {"exchange": f"exchange-{number}", "content": f'"row {number}"'},
            )
    engine.dispose()
    app = app_factory(database_at_0012)
    with app.app_context():
        upgrade()
        db.engine.dispose()

    rows = rows_of(app, "old")
    assert [row["content"] for row in rows] == ["row 0", "row 1", "row 2"]
    assert all(PUBLIC.match(row["id"]) for row in rows) and len({row["id"] for row in rows}) == 3
    client = app.test_client()
    for row in rows:
        item = client.get(f"/v1/conversations/old/items/msg_{row['id']}").get_json()
        assert (item["id"], item["content"][0]["text"]) == (f"msg_{row['id']}", row["content"])
