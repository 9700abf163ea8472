"""Another key's conversation costs what an unknown one does (issue 22, item 6).

Every read of a conversation names its client key, and the database finds its rows through
an index that begins with the key (migration 0012): asking for a conversation id, or an item
of it, that another key uses visits none of that key's rows, so neither the answer nor the
time it takes says whether the conversation exists, or how large it is. Checked on the query
plans of the statements each request runs (never with timings): on SQLite every read of
`messages` is a search of an index whose first constraint is the key (or a row id); on
PostgreSQL, EXPLAIN ANALYZE counts the rows examined, the same for another key's large
conversation as for an id nobody uses.
"""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select, text
from support import bearer, create_client_key, executed

from database import unit_of_work
from extensions import db
from models import ApiKey
from services.exchanges import record_reply, record_turn

ROWS_OF_THEIRS = 600  # the other key's conversation: 300 exchanges, a prompt and a reply each
# The shapes of the ids responses give their output: now (of response resp_<hex>), and before.
UNKNOWN_OUTPUT_ITEMS = ("msg_" + "0" * 48 + "_0", "msg_" + "0" * 48)


def _owned_by_the_other_key(app, key_name: str, conversation_id: str) -> str:
    """The public id of a row of a conversation of `key_name` of ROWS_OF_THEIRS rows."""
    with app.app_context(), unit_of_work() as session:
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.name == key_name))
        for number in range(ROWS_OF_THEIRS // 2):
            exchange = f"theirs-{number}"
            record_turn(session, exchange, conversation_id, key_id, [{"role": "user", "content": f"q{number}"}])
            reply = {"role": "assistant", "content": "a", "model": "m"}
            record_reply(session, exchange, conversation_id, key_id, reply)
        row_id = session.scalar(text("SELECT public_id FROM messages ORDER BY id LIMIT 1"))
        if db.engine.dialect.name == "postgresql":
            session.execute(text("ANALYZE messages"))
    return row_id


def _lookups(conversation_id: str, row_id: str) -> list[tuple[str, str]]:
    """Every route that reads one conversation of the caller's, by id or by one of its items."""
    return [
        *(("GET", f"/v1/conversations/{conversation_id}/items/{item}") for item in UNKNOWN_OUTPUT_ITEMS),
        ("GET", f"/v1/conversations/{conversation_id}/items/msg_{row_id}"),
        ("DELETE", f"/v1/conversations/{conversation_id}/items/{UNKNOWN_OUTPUT_ITEMS[0]}"),
        ("GET", f"/v1/conversations/{conversation_id}/items"),
        ("GET", f"/v1/conversations/{conversation_id}"),
        ("GET", f"/conversations/{conversation_id}/usage"),
        ("GET", f"/conversations/{conversation_id}"),
    ]


def _sqlite_searches(app, statement: str, parameters) -> list[str]:
    with app.app_context():
        plan = db.session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    return [row[3] for row in plan if "messages" in row[3].split(" USING ")[0]]


def _postgres_rows_examined(app, statement: str, parameters) -> int:
    with app.app_context():
        explained = (
            db.session.connection().exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters).scalar()
        )
        db.session.rollback()  # a DELETE explained with ANALYZE runs: undo it
    plan = explained if isinstance(explained, list) else json.loads(explained)

    def examined(node: dict) -> int:
        own = 0
        if node.get("Relation Name") == "messages":
            loops = node.get("Actual Loops", 1)
            removed = node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
            own = (node.get("Actual Rows", 0) + removed) * loops
        return own + sum(examined(child) for child in node.get("Plans", []))

    return examined(plan[0]["Plan"])


# A search of `messages` through an index that begins with the key, or of one row by a unique
# key (its id, its public id): at most one row whatever the size of anyone's conversation.
_BY_KEY = re.compile(r"^SEARCH messages USING (COVERING )?INDEX \S+ \(api_key_id(=\?| IS NULL)")
_BY_ROW_ID = re.compile(
    r"^SEARCH messages USING (INTEGER PRIMARY KEY \(rowid=\?\)|INDEX ix_messages_public_id \(public_id=\?\))$"
)


def _costs(app, client, headers: dict, conversation_id: str, row_id: str) -> dict[str, list]:
    """For each lookup of `conversation_id`: its statements' SQLite searches of `messages`,
    or the rows PostgreSQL examined for them."""
    sqlite = app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite")
    costs = {}
    for method, path in _lookups(conversation_id, row_id):
        with executed(app) as ran:
            assert client.open(path, method=method, headers=headers).status_code == 404, path
        statements = [(statement, parameters) for statement, parameters in ran if "messages" in statement]
        assert statements, path
        measure = _sqlite_searches if sqlite else _postgres_rows_examined
        costs[f"{method} {path.replace(conversation_id, '<id>')}"] = [measure(app, *s) for s in statements]
    return costs


@pytest.mark.parametrize("asker", ["keyed", "keyless"])
def test_another_keys_conversation_costs_what_an_unknown_one_does(make_app, asker):
    app = make_app(REQUIRE_API_KEY=asker == "keyed")
    headers = bearer(create_client_key(app, "asker")) if asker == "keyed" else {}
    create_client_key(app, "owner")
    row_id = _owned_by_the_other_key(app, "owner", "shared")
    client = app.test_client()

    theirs = _costs(app, client, headers, "shared", row_id)
    unknown = _costs(app, client, headers, "nobody", row_id)

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        for lookup, searches in theirs.items():
            for search in (s for statement in searches for s in statement):
                assert _BY_KEY.match(search) or _BY_ROW_ID.match(search), f"{lookup}: {search}"
    else:
        assert theirs == unknown
