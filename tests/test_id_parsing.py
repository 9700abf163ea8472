"""Every id and cursor a client sends is parsed strictly: whatever text it is (any Unicode,
digits of other scripts included: "²" passes str.isdigit and fails int()), the answer is a
400 or a 404 (a 200 only for an id that names what exists), never a 5xx.

Properties (hypothesis) over each parser: the item ids of the Conversations API's item
routes (`msg_<row>`, `fc_<row>_<n>`, `fco_<row>`), the `after` cursors of both item listings,
the response and conversation ids of the Responses and Conversations APIs (in the path and
in a request body), and the row cursor of GET /conversations/<id>; on SQLite and PostgreSQL.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import CASES_RUN, app_settings, bearer, migrated_sqlite

from app import create_app
from database import unit_of_work
from extensions import db
from schemas import ErrorResponse, OpenAIErrorResponse
from services.client_keys import create_key

EXAMPLES = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)

# Digits of every script and numbers of every kind (², ①, ٣, Ⅻ), the characters a lax parser trips on.
odd_digits = st.text(st.characters(categories=["Nd", "No", "Nl"]) | st.sampled_from("0123456789"), max_size=24)
prefixes = st.sampled_from(["msg_", "fc_", "fco_", "resp_", "conv_", "item_", ""])
# An id shaped like ours with odd digits, sometimes with a tail ("fc_²_0"), or any text at all.
ids = (
    st.tuples(prefixes, odd_digits, st.sampled_from(["", "_0", "_①", "_x"])).map("".join)
    | st.text(min_size=1, max_size=300)
    | st.from_regex(r"\A(msg|fc|fco)_[0-9]{1,30}(_[0-9]{1,3})?\Z")
)
# The issue's own examples, on every run.
ISSUE_IDS = ("msg_²", "fc_²_0", "fco_①", "msg_٣", "fc_1_²", "msg_" + "9" * 19)


class _Service(tuple):
    """(app, key headers, known ids), named shortly for hypothesis's reports."""

    def __repr__(self) -> str:
        return "<service>"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, upstream):
    """One app per backend for every example: keys required, a conversation with items, a
    stored response, and the ids that exist (a 200 is right for those alone)."""
    url = migrated_sqlite("ids") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    app = create_app(app_settings(url, upstream, REQUIRE_API_KEY=True))
    with app.app_context(), unit_of_work() as session:
        _, key = create_key(session, "ids")
    client, headers = app.test_client(), bearer(key)
    conversation = client.post(
        "/v1/conversations",
        json={"items": [{"type": "message", "role": "user", "content": "hello"}]},
        headers=headers,
    ).get_json()["id"]
    items = client.get(f"/v1/conversations/{conversation}/items", headers=headers).get_json()["data"]
    response = client.post("/v1/responses", json={"model": "fake-model", "input": "hi"}, headers=headers).get_json()
    known = {"conversation": conversation, "response": response["id"], "items": {item["id"] for item in items}}
    yield _Service((app, headers, known))
    app.extensions["llm"].close()
    with app.app_context():
        db.engine.dispose()


def _status(service, method: str, path: str, allowed: set[int], **request) -> int:
    """Send one request; assert it is answered with one of `allowed`, never 5xx, errors in the envelope."""
    app, headers, _ = service
    CASES_RUN["hypothesis: ids and cursors"] += 1
    response = app.test_client().open(path, method=method, headers=headers, **request)
    body = response.get_data()
    assert response.status_code < 500, body
    assert response.status_code in allowed, (response.status_code, body)
    if response.status_code >= 400:
        (OpenAIErrorResponse if path.startswith("/v1/") else ErrorResponse).model_validate_json(body)
    return response.status_code


def _segment(text: str) -> str:
    return quote(text, safe="")


@EXAMPLES
@given(item_id=ids, method=st.sampled_from(["GET", "DELETE"]), owned=st.booleans())
@example(item_id="msg_²", method="GET", owned=True)
@example(item_id="fc_²_0", method="DELETE", owned=True)
@example(item_id="fco_①", method="GET", owned=False)
def test_any_item_id_in_the_path(service, item_id, method, owned):
    known = service[2]
    conversation = known["conversation"] if owned else "conv_unknown"
    exists = owned and item_id in known["items"]
    if exists and method == "DELETE":
        method = "GET"  # the fixture's items stay for the other examples
    path = f"/v1/conversations/{conversation}/items/{_segment(item_id)}"
    _status(service, method, path, {200} if exists else {400, 404})


@pytest.mark.parametrize("item_id", ISSUE_IDS)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_the_issues_item_ids_are_a_404(service, item_id, method):
    path = f"/v1/conversations/{service[2]['conversation']}/items/{_segment(item_id)}"
    assert _status(service, method, path, {404}) == 404


@EXAMPLES
@given(after=ids, order=st.sampled_from(["asc", "desc"]))
@example(after="msg_²", order="desc")
def test_any_after_cursor_of_a_conversations_items(service, after, order):
    path = f"/v1/conversations/{service[2]['conversation']}/items"
    _status(service, "GET", path, {200, 400, 404}, query_string={"after": after, "order": order})


@pytest.mark.parametrize("after", ISSUE_IDS)
def test_the_issues_after_cursors_name_no_item(service, after):
    app, headers, known = service
    path = f"/v1/conversations/{known['conversation']}/items"
    if _status(service, "GET", path, {200, 400, 404}, query_string={"after": after}) == 200:
        assert app.test_client().get(path, headers=headers, query_string={"after": after}).get_json()["data"] == []


@EXAMPLES
@given(after=ids)
@example(after="msg_²")
def test_any_after_cursor_of_a_responses_input_items(service, after):
    path = f"/v1/responses/{service[2]['response']}/input_items"
    _status(service, "GET", path, {200, 400, 404}, query_string={"after": after})


@EXAMPLES
@given(
    response_id=ids,
    route=st.sampled_from([("GET", ""), ("DELETE", ""), ("GET", "/input_items")]),
)
def test_any_response_id_in_the_path(service, response_id, route):
    method, tail = route
    _status(service, method, f"/v1/responses/{_segment(response_id)}{tail}", {400, 404})


@EXAMPLES
@given(conversation_id=ids, method=st.sampled_from(["GET", "POST", "DELETE"]))
def test_any_conversation_id_in_the_path(service, conversation_id, method):
    body = {"json": {"metadata": {"a": "b"}}} if method == "POST" else {}
    _status(service, method, f"/v1/conversations/{_segment(conversation_id)}", {400, 404}, **body)


@EXAMPLES
@given(reference=ids, field=st.sampled_from(["previous_response_id", "conversation", "conversation.id"]))
def test_any_response_or_conversation_id_in_a_responses_body(service, upstream, reference, field):
    value = {"id": reference} if field == "conversation.id" else reference
    calls = len(upstream.chat_requests())
    body = {"model": "fake-model", "input": "hi", field.split(".")[0]: value}
    _status(service, "POST", "/v1/responses", {400, 404}, json=body)
    assert len(upstream.chat_requests()) == calls, "an unknown id reached the upstream"


@EXAMPLES
@given(cursor=ids | odd_digits)
@example(cursor="²")
@example(cursor="1\n")
@example(cursor="9" * 19)
def test_any_row_cursor_of_a_conversation(service, cursor):
    path = f"/conversations/{service[2]['conversation']}"
    _status(service, "GET", path, {200, 400}, query_string={"cursor": cursor})
