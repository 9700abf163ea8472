"""Property tests of the validation layer (hypothesis): whatever a client sends,

- the answer is never a 5xx, and its status is one the OpenAPI document lists;
- an error is the JSON envelope (OpenAI's shape under /v1), a success the documented model;
- a rejected request writes no row and never reaches the upstream; an accepted one does both.

Bodies are drawn three ways: arbitrary JSON, objects built from each route's own fields with
values of any type, and raw bytes under assorted content types. Path ids and the
conversation header are drawn as arbitrary text. Runs are derandomized (CI replays them).
"""

from __future__ import annotations

from collections import defaultdict
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import CASES_RUN, app_settings, bearer, migrated_sqlite

from app import create_app
from database import unit_of_work
from extensions import db
from schemas import (
    ChatCompletionResponse,
    CompletionResponse,
    ConversationPageResponse,
    ErrorResponse,
    OpenAIErrorResponse,
    ProcessPayloadResponse,
)
from services.client_keys import create_key

EXAMPLES = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
FIELD_NAMES = ["prompt", "user_id", "stream", "messages", "role", "content", "type", "text", "model", "image_url"]
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
roles = st.sampled_from(["user", "assistant", "system", "developer", "tool", "bogus", ""]) | json_values
parts = st.fixed_dictionaries(
    {},
    optional={"type": st.sampled_from(["text", "image_url", "audio"]) | json_values, "text": st.text() | json_values},
)
contents = st.text(max_size=60) | st.lists(parts, max_size=3) | json_values


def mostly(valid, anything=json_values):
    """Valid values three times in four: a body of several fields is then often wholly valid."""
    return st.one_of(valid, valid, valid, anything)


valid_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant"]), "content": st.text(min_size=1, max_size=30).filter(str.strip)}
    ),
    min_size=1,
    max_size=3,
)
messages = mostly(
    valid_messages,
    st.lists(st.fixed_dictionaries({}, optional={"role": roles, "content": contents}), max_size=4) | json_values,
)
user_ids = mostly(st.from_regex(r"\A[A-Za-z0-9._:-]{1,12}\Z"), st.text(max_size=140) | json_values)
ROUTE_FIELDS = {
    "/openai-completion": {
        "prompt": st.text(max_size=60) | json_values,
        "user_id": user_ids,
        "stream": mostly(st.booleans()),
    },
    "/process-payload/": {
        "messages": messages,
        "user_id": user_ids,
        "temperature": mostly(st.none() | st.floats(0, 2)),
        "top_p": mostly(st.none() | st.floats(0, 1)),
        "max_tokens": mostly(st.none() | st.integers(1, 4096)),
        "model": mostly(st.none() | st.just("fake-model")),
        "stream": mostly(st.booleans()),
    },
    "/v1/chat/completions": {
        "model": mostly(st.just("fake-model")),
        "messages": messages,
        "user_id": user_ids,
        "temperature": mostly(st.none() | st.floats(0, 2)),
        "stream": mostly(st.booleans()),
    },
}
# The statuses each kind of draw produced, per route.
STATUSES: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
SUCCESS_MODELS = {
    "/openai-completion": CompletionResponse,
    "/process-payload/": ProcessPayloadResponse,
    "/v1/chat/completions": ChatCompletionResponse,
}


class _Service(tuple):
    """(app, key headers, OpenAPI document), named shortly: Hypothesis prints a failing
    example's arguments, and the document's 74 kB repr made it warn (an error here) in
    place of showing the failure itself."""

    def __repr__(self) -> str:
        return "<service: app, key, document>"


@pytest.fixture(scope="module")
def service(upstream):
    """One app for every example (a fixture per example would be rebuilt each time): keys
    required, the fake upstream answering, a migrated SQLite database."""
    app = create_app(app_settings(migrated_sqlite("properties"), upstream, REQUIRE_API_KEY=True))
    with app.app_context(), unit_of_work() as session:
        _, key = create_key(session, "properties")
    document = app.test_client().get("/openapi.json").get_json()
    yield _Service((app, bearer(key), document))
    app.extensions["llm"].close()
    with app.app_context():
        db.engine.dispose()


def _row_count(app) -> int:
    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one()


def _documented(document, path: str, method: str) -> set[int]:
    template = path
    if path.startswith("/conversations/"):
        # The id is quoted whole (no "/" of its own): a third segment is the usage route,
        # whatever the id reads ("usage" is an id too).
        template = "/conversations/{user_id}" + ("/usage" if path.count("/") == 3 else "")
    return {int(code) for code in document["paths"][template][method]["responses"]}


def _check(service, upstream, method: str, path: str, kind: str, **request) -> int:
    """Send one request; assert the properties; return its status."""
    app, key, document = service
    CASES_RUN[f"hypothesis: {kind}"] += 1
    rows, calls = _row_count(app), len(upstream.chat_requests())
    headers = {**key, **request.pop("headers", {})}
    response = app.test_client().open(path, method=method, headers=headers, **request)
    body = response.get_data()  # reads a stream to its end
    status = response.status_code
    response.close()
    STATUSES[(kind, path)].add(status)

    assert status < 500, body
    assert status in _documented(document, path, method.lower()), (status, body)
    if status >= 400:
        error_model = OpenAIErrorResponse if path.startswith("/v1/") else ErrorResponse
        error_model.model_validate_json(body)
        assert _row_count(app) == rows, "a rejected request wrote a row"
        assert len(upstream.chat_requests()) == calls, "a rejected request reached the upstream"
    elif method == "POST":
        assert _row_count(app) > rows and len(upstream.chat_requests()) == calls + 1
        if response.mimetype == "application/json":
            SUCCESS_MODELS[path].model_validate_json(body)
        else:
            assert response.mimetype == "text/event-stream"
    return status


@pytest.mark.parametrize("path", list(ROUTE_FIELDS))
@EXAMPLES
@given(data=st.data())
def test_any_json_body(service, upstream, path, data):
    body = data.draw(json_values, label="body")
    _check(service, upstream, "POST", path, "arbitrary JSON bodies", json=body)


@pytest.mark.parametrize("path", list(ROUTE_FIELDS))
@EXAMPLES
@given(data=st.data())
def test_the_routes_own_fields_with_values_of_any_type(service, upstream, path, data):
    body = data.draw(st.fixed_dictionaries({}, optional=ROUTE_FIELDS[path]), label="body")
    _check(service, upstream, "POST", path, "bodies of the routes' own fields", json=body)


@EXAMPLES
@given(
    raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
    path=st.sampled_from(list(ROUTE_FIELDS)),
)
def test_raw_bytes_under_any_content_type(service, upstream, raw, content_type, path):
    headers = {"Content-Type": content_type} if content_type else {}
    _check(service, upstream, "POST", path, "raw bodies", data=raw, headers=headers)


@EXAMPLES
@given(user_id=st.text(min_size=1, max_size=200), verb=st.sampled_from(["GET", "DELETE", "USAGE"]))
def test_any_user_id_in_the_path(service, upstream, user_id, verb):
    path = f"/conversations/{quote(user_id, safe='')}" + ("/usage" if verb == "USAGE" else "")
    method = "GET" if verb == "USAGE" else verb
    status = _check(service, upstream, method, path, "user_id paths")
    if status == 200:
        ConversationPageResponse.model_validate_json(service[0].test_client().get(path, headers=service[1]).get_data())


@EXAMPLES
@given(conversation=st.text(max_size=200).filter(lambda s: "\n" not in s and "\r" not in s))
def test_any_conversation_header(service, upstream, conversation):
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"X-Conversation-Id": conversation.encode("utf-8").decode("latin-1")}
    _check(service, upstream, "POST", "/v1/chat/completions", "conversation headers", json=body, headers=headers)


@EXAMPLES
@given(query=st.dictionaries(st.sampled_from(["limit", "cursor", "other"]) | st.text(max_size=5), st.text(max_size=20)))
def test_any_listing_query(service, upstream, query):
    status = _check(service, upstream, "GET", "/conversations", "listing queries", query_string=query)
    assert status in (200, 400)


def test_the_draws_reached_both_acceptance_and_rejection():
    """The properties are only as good as their draws: each route's own-field bodies must
    have produced accepted requests (rows, upstream call) as well as rejected ones."""
    if not STATUSES:
        pytest.skip("runs after the property tests of this module")
    for path in ROUTE_FIELDS:
        seen = STATUSES[("bodies of the routes' own fields", path)]
        assert 200 in seen and 400 in seen, (path, seen)


def test_a_header_or_query_models_schema_is_pydantics_and_made_once():
    """flask-openapi3 reads a header or query model's JSON schema on every request it
    validates; the model answers with pydantic's schema, made the first time only."""
    from pydantic import BaseModel

    from schemas import ConversationHeader, ConversationListQuery, ItemListQuery

    for model in (ConversationHeader, ConversationListQuery, ItemListQuery):
        assert model.model_json_schema() is model.model_json_schema()
        assert model.model_json_schema() == BaseModel.model_json_schema.__func__(model)
    # With arguments (the OpenAPI document's), pydantic answers as it always does.
    fresh = ConversationHeader.model_json_schema(by_alias=False)
    assert fresh == BaseModel.model_json_schema.__func__(ConversationHeader, by_alias=False)
    assert fresh is not ConversationHeader.model_json_schema(by_alias=False)
    assert "conversation_id" in fresh["properties"]
    assert "X-Conversation-Id" in ConversationHeader.model_json_schema()["properties"]

    # A model made from another keeps a schema of its own.
    class Extended(ConversationHeader):
        trace: str | None = None

    assert "trace" in Extended.model_json_schema()["properties"]
    assert "trace" not in ConversationHeader.model_json_schema()["properties"]
