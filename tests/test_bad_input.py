"""Each bad request gets its JSON error, and nothing is stored or sent upstream."""

from __future__ import annotations

import json

import pytest
from support import rows_of

PROMPT_REQUIRED = {"error": "Prompt is required"}

COMPLETION_CASES = [
    pytest.param({}, id="no-prompt"),
    pytest.param({"prompt": None}, id="null-prompt"),
    pytest.param({"prompt": 42}, id="number-prompt"),
    pytest.param({"prompt": ["hi"]}, id="list-prompt"),
    pytest.param({"prompt": ""}, id="empty-prompt"),
    pytest.param({"prompt": "   \n\t"}, id="blank-prompt"),
    pytest.param({"user_id": "u-1"}, id="user-id-only"),
    pytest.param(["prompt"], id="array-body"),
]


@pytest.mark.parametrize("body", COMPLETION_CASES)
def test_missing_or_bad_prompt_answers_the_documented_error(make_app, upstream, body):
    app = make_app()
    response = app.test_client().post("/openai-completion", json=body)
    assert response.status_code == 400
    assert response.get_json() == PROMPT_REQUIRED
    assert rows_of(app) == []
    assert upstream.received == []


@pytest.mark.parametrize(
    ("user_id", "message"),
    [
        (123, "Input should be a valid string"),
        ("", "String should match pattern '^[A-Za-z0-9._:-]{1,128}$'"),
        ("has space", "String should match pattern '^[A-Za-z0-9._:-]{1,128}$'"),
        ("x" * 129, "String should match pattern '^[A-Za-z0-9._:-]{1,128}$'"),
    ],
)
def test_bad_user_id_is_named(make_app, upstream, user_id, message):
    app = make_app()
    response = app.test_client().post("/openai-completion", json={"prompt": "hi", "user_id": user_id})
    assert response.status_code == 400
    assert response.get_json() == {"error": "Invalid request", "details": [{"field": "user_id", "message": message}]}
    assert rows_of(app) == [] and upstream.received == []


def test_prompt_over_the_character_limit_is_refused(make_app, upstream):
    app = make_app(MAX_PROMPT_CHARS=10)
    response = app.test_client().post("/openai-completion", json={"prompt": "x" * 11})
    assert response.status_code == 400
    assert response.get_json() == {"error": "Prompt is too long: 11 characters, the limit is 10"}
    ok = app.test_client().post("/openai-completion", json={"prompt": "x" * 10})
    assert ok.status_code == 200
    assert len(rows_of(app)) == 2  # only the accepted exchange


PAYLOAD_CASES = [
    pytest.param({}, [("messages", "Field required")], id="no-messages"),
    pytest.param(
        {"messages": []}, [("messages", "List should have at least 1 item after validation, not 0")], id="empty"
    ),
    pytest.param({"messages": "hi"}, [("messages", "Input should be a valid list")], id="messages-not-list"),
    pytest.param(
        {"messages": [{"role": "robot", "content": "hi"}]},
        [("messages.0.role", "Input should be 'system', 'user' or 'assistant'")],
        id="unknown-role",
    ),
    pytest.param(
        {"messages": [{"role": "user"}]},
        [("messages.0.content", "Field required")],
        id="no-content",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": 7}]},
        [("messages.0.content", "Content must be a string or a list of content parts")],
        id="content-number",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": []}]},
        [("messages.0.content", "List should have at least 1 item after validation, not 0")],
        id="content-empty-list",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "audio", "data": "x"}]}]},
        [("messages.0.content.0", "Content part type must be 'text' or 'image_url'")],
        id="unknown-part",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        [("messages.0.content.0.text", "Input should be a valid string")],
        id="text-part-not-string",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        [("messages.0.content.0.image_url.url", "Field required")],
        id="image-without-url",
    ),
    pytest.param(
        {"messages": [{"role": "system", "content": "only rules"}]},
        [("messages", "messages must include at least one user or assistant message")],
        id="system-only",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5},
        [("temperature", "Input should be less than or equal to 2")],
        id="temperature-high",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "hi"}], "temperature": -0.1},
        [("temperature", "Input should be greater than or equal to 0")],
        id="temperature-negative",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "hi"}], "temperature": "0.7"},
        [("temperature", "Input should be a valid number")],
        id="temperature-string",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5},
        [("top_p", "Input should be less than or equal to 1")],
        id="top-p-high",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
        [("max_tokens", "Input should be greater than or equal to 1")],
        id="max-tokens-zero",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5},
        [("max_tokens", "Input should be a valid integer")],
        id="max-tokens-float",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "hi"}], "model": 3},
        [("model", "Input should be a valid string")],
        id="model-number",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "hi"}], "user_id": "no spaces please"},
        [("user_id", "String should match pattern '^[A-Za-z0-9._:-]{1,128}$'")],
        id="bad-user-id",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "hi"}] * 257},
        [("messages", "List should have at most 256 items after validation, not 257")],
        id="too-many-messages",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "p"}] * 65}]},
        [("messages.0.content", "List should have at most 64 items after validation, not 65")],
        id="too-many-parts",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "x" * 100_001}]},
        [("messages.0.content", "String should have at most 100000 characters")],
        id="message-too-long",
    ),
    pytest.param(
        {"messages": [{"role": "robot", "content": "hi"}], "temperature": 9, "top_p": -1},
        [
            ("messages.0.role", "Input should be 'system', 'user' or 'assistant'"),
            ("temperature", "Input should be less than or equal to 2"),
            ("top_p", "Input should be greater than or equal to 0"),
        ],
        id="several-bad-fields",
    ),
]


@pytest.mark.parametrize(("body", "expected"), PAYLOAD_CASES)
def test_invalid_payload_names_each_bad_field(make_app, upstream, body, expected):
    app = make_app()
    response = app.test_client().post("/process-payload/", json=body)
    assert response.status_code == 400
    payload = response.get_json()
    assert payload["error"] == "Invalid payload"
    assert [(d["field"], d["message"]) for d in payload["details"]] == expected
    assert rows_of(app) == []
    assert upstream.received == []


def test_payload_body_that_is_not_an_object(make_app):
    app = make_app()
    response = app.test_client().post("/process-payload/", json=[{"role": "user", "content": "hi"}])
    assert response.status_code == 400
    assert response.get_json() == {"error": "Request body must be a JSON object"}


@pytest.mark.parametrize("path", ["/openai-completion", "/process-payload/"])
def test_not_json_and_wrong_content_type(make_app, upstream, path):
    app = make_app()
    client = app.test_client()

    wrong_type = client.post(path, data=json.dumps({"prompt": "hi"}), content_type="text/plain")
    assert wrong_type.status_code == 415
    assert wrong_type.get_json() == {"error": "Content-Type must be application/json"}

    broken = client.post(path, data='{"prompt": "hi"', content_type="application/json")
    assert broken.status_code == 400
    assert broken.get_json() == {"error": "Request body is not valid JSON"}

    no_body = client.post(path, content_type="application/json")
    assert no_body.status_code == 400
    assert no_body.get_json() == {"error": "Request body is not valid JSON"}

    assert rows_of(app) == [] and upstream.received == []


@pytest.mark.parametrize("path", ["/openai-completion", "/process-payload/"])
def test_body_over_the_size_limit_is_413(make_app, upstream, path):
    app = make_app(MAX_CONTENT_LENGTH=1000)
    response = app.test_client().post(path, json={"prompt": "x" * 2000, "messages": []})
    assert response.status_code == 413
    assert response.get_json() == {"error": "Request body is too large (limit 1000 bytes)"}
    assert rows_of(app) == [] and upstream.received == []


def test_unknown_route_and_wrong_method(client):
    missing = client.get("/no-such-thing")
    assert missing.status_code == 404
    assert missing.get_json() == {"error": "Not found"}

    wrong = client.get("/openai-completion")
    assert wrong.status_code == 405
    assert wrong.get_json() == {"error": "Method not allowed"}
    assert "POST" in wrong.headers["Allow"]


def test_unexpected_exception_answers_500_json_without_a_trace(make_app):
    app = make_app()

    class BrokenModel:
        offline = False

        def complete(self, messages, **params):
            raise RuntimeError("internal detail that must not leak")

        def close(self):
            pass

    app.extensions["chat"].llm = BrokenModel()
    response = app.test_client().post("/openai-completion", json={"prompt": "hi", "user_id": "e-1"})

    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal server error", "request_id": response.headers["X-Request-ID"]}
    assert "internal detail" not in response.get_data(as_text=True)
    assert [r["status"] for r in rows_of(app, "e-1")] == ["failed"]


@pytest.mark.parametrize("path", ["/openai-completion", "/process-payload/", "/v1/chat/completions"])
def test_deeply_nested_json_is_refused_not_crashed_on(make_app, upstream, path):
    app = make_app(MAX_JSON_DEPTH=32)
    client = app.test_client()
    # 200,000 levels would exhaust the parser's recursion; 33 is just past the limit.
    for depth in (200_000, 33):
        body = '{"prompt": "x", "model": "m", "messages": [], "x": ' + "[" * depth + "]" * depth + "}"
        response = client.post(path, data=body, content_type="application/json")
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert (error["message"] if isinstance(error, dict) else error) == "Request body nests deeper than 32 levels"
    assert rows_of(app) == [] and upstream.received == []


def test_brackets_inside_strings_are_not_nesting(make_app):
    app = make_app(MAX_JSON_DEPTH=4)
    prompt = "[{" * 50 + ' and a \\" quote ' + "}]" * 50
    response = app.test_client().post("/openai-completion", json={"prompt": prompt, "user_id": "brackets"})
    assert response.status_code == 200
    assert rows_of(app, "brackets")[0]["content"] == prompt


# Every chat route, plain and streamed, with a body whose client text is 11 characters.
OVERSIZED_TURNS = [
    pytest.param("/openai-completion", {"prompt": "x" * 11}, id="openai-completion"),
    pytest.param("/process-payload/", {"messages": [{"role": "user", "content": "x" * 11}]}, id="process-payload"),
    pytest.param(
        "/process-payload/",
        {"messages": [{"role": "system", "content": "x" * 6}, {"role": "user", "content": "x" * 5}]},
        id="process-payload-system-counts",
    ),
    pytest.param(
        "/v1/chat/completions",
        {"model": "fake-model", "messages": [{"role": "user", "content": "x" * 11}]},
        id="v1-chat-completions",
    ),
    pytest.param("/v1/responses", {"model": "fake-model", "input": "x" * 11}, id="v1-responses"),
    pytest.param(
        "/v1/responses",
        {"model": "fake-model", "instructions": "x" * 6, "input": "x" * 5},
        id="v1-responses-instructions-count",
    ),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(("path", "body"), OVERSIZED_TURNS)
def test_max_prompt_chars_answers_the_same_on_every_chat_route(make_app, upstream, path, body, stream):
    app = make_app(MAX_PROMPT_CHARS=10)
    response = app.test_client().post(path, json={**body, "stream": stream})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["message"] if isinstance(error, dict) else error) == (
        "Prompt is too long: 11 characters, the limit is 10"
    )
    assert rows_of(app) == [] and upstream.received == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/process-payload/", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"input": "hi"}),
    ],
    ids=["process-payload", "v1-chat-completions", "v1-responses"],
)
def test_allowed_models_answer_the_same_on_every_chat_route_that_names_one(make_app, upstream, path, body, stream):
    app = make_app(ALLOWED_MODELS=["fake-model"])
    body = {**body, "model": "other-model", "stream": stream}
    response = app.test_client().post(path, json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert message == "Model 'other-model' is not allowed here; allowed: fake-model"
    assert rows_of(app) == [] and upstream.received == []
