"""Write docs/postman_collection.json from the service's OpenAPI document.

    .venv/bin/python docs/build_postman.py

A test (tests/test_api_contract.py) fails when the collection and the document disagree,
so run this after adding or changing a route. Another (tests/test_postman_collection.py)
runs the collection with newman, in order, against a live server.

The collection is a walk through the service in the order a person clicks through it:
check it is up, start conversation "alice" on every chat route, read it back (rows,
usage, the list), and erase it last. Each request carries Postman tests for its status
and the fields the README promises. A route is placed and checked by its entry in STEPS;
a documented route with no entry still goes in (under "Other routes", before the erasing
step) with a test that it answers one of its documented 2xx statuses.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONVERSATION = "alice"

# The folders of the collection, in the order a run goes through them.
STAGES = [
    "Check the service",
    "Start a conversation",
    "Read it back",
    "See it in the metrics",
    "Other routes",  # documented routes with no entry in STEPS
    "Erase it",
]
UNLISTED_STAGE = "Other routes"

# What a path variable is set to: the conversation of the walk for `user_id`; any other
# (say a response `id`) refers to the collection variable of its name, which an earlier
# step `saves` from its answer.
PATH_VALUES = {"user_id": CONVERSATION}


def check(name: str, code: str) -> str:
    """One Postman test: `code` (JavaScript, using `pm`) must not throw."""
    return f"pm.test({json.dumps(name)}, function () {{ {code} }});"


def status(code: int) -> str:
    """The answer has status `code`."""
    return check(f"status is {code}", f"pm.response.to.have.status({code});")


def body(path: str, expectation: str, label: str) -> str:
    """`pm.expect(json.<path>).<expectation>` on the JSON answer."""
    return check(f"{path} {label}", f"const json = pm.response.json(); pm.expect(json.{path}).{expectation};")


def equals(path: str, value) -> str:
    return body(path, f"to.eql({json.dumps(value)})", f"is {json.dumps(value)}")


def text(path: str) -> str:
    return body(path, 'to.be.a("string").that.is.not.empty', "is a non-empty string")


def positive(path: str) -> str:
    return body(path, 'to.be.a("number").above(0)', "is a positive number")


def at_least(path: str, minimum: int) -> str:
    return body(path, f'to.be.a("number").at.least({minimum})', f"is at least {minimum}")


def header(name: str, value: str) -> str:
    """The answer carries header `name` with `value`."""
    return check(f"{name} header is {value}", f"pm.response.to.have.header({json.dumps(name)}, {json.dumps(value)});")


@dataclass(frozen=True)
class Step:
    """One request of the walk: where it goes, what it sends, and what its answer must show."""

    stage: str
    method: str
    path: str  # as in the OpenAPI document
    tests: list[str]
    json_body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Collection variables set from the JSON answer, {"variable": "field.path"}, for a later
    # step's path (e.g. a response id to read and delete).
    saves: dict[str, str] = field(default_factory=dict)


COMPLETED_USAGE = [positive("usage.total_tokens"), at_least("usage.prompt_tokens", 0)]

# In run order within each stage. A new route slots in by adding its entry here.
STEPS = [
    Step("Check the service", "GET", "/healthz", [status(200), equals("status", "ok")]),
    Step(
        "Check the service",
        "GET",
        "/readyz",
        [status(200), equals("status", "ready"), equals("database", "ok"), equals("ratelimit_storage", "ok")],
    ),
    Step(
        "Check the service",
        "GET",
        "/v1/models",
        [status(200), equals("object", "list"), body("data", 'to.be.an("array").that.is.not.empty', "lists a model")],
        saves={"model": "data[0].id"},
    ),
    Step(
        "Check the service",
        "GET",
        "/v1/models/{model}",
        [status(200), equals("object", "model"), text("id")],
    ),
    # The WebSocket mode's door: a plain GET is told to upgrade (Postman opens no WebSocket here).
    Step("Check the service", "GET", "/v1/responses", [status(426), header("Upgrade", "websocket")]),
    Step(
        "Start a conversation",
        "POST",
        "/openai-completion",
        [status(200), equals("user_id", CONVERSATION), text("completion"), text("model"), *COMPLETED_USAGE],
        json_body={"prompt": "Name three French cheeses.", "user_id": CONVERSATION},
    ),
    Step(
        "Start a conversation",
        "POST",
        "/process-payload/",
        [status(200), equals("user_id", CONVERSATION), text("content"), text("model"), *COMPLETED_USAGE],
        json_body={
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "You are an AI assistant."}]},
                {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
            ],
            "temperature": 0.7,
            "top_p": 0.95,
            "max_tokens": 800,
            "user_id": CONVERSATION,
        },
    ),
    Step(
        "Start a conversation",
        "POST",
        "/v1/chat/completions",
        [
            status(200),
            equals("object", "chat.completion"),
            text("choices[0].message.content"),
            text("model"),
            header("X-Conversation-Id", CONVERSATION),
        ],
        json_body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]},
        headers={"X-Conversation-Id": CONVERSATION},
    ),
    Step(
        "Start a conversation",
        "POST",
        "/v1/responses",
        [
            status(200),
            equals("object", "response"),
            equals("status", "completed"),
            text("output[0].content[0].text"),
            equals("conversation.id", CONVERSATION),
            positive("usage.total_tokens"),
        ],
        json_body={"model": "gpt-4o-mini", "input": "And a fourth cheese?", "conversation": CONVERSATION},
        saves={"response_id": "id"},
    ),
    Step(
        "Start a conversation",
        "POST",
        "/v1/conversations",
        [status(200), equals("object", "conversation"), text("id"), equals("metadata", {"topic": "cheese"})],
        json_body={"metadata": {"topic": "cheese"}, "items": [{"role": "user", "content": "Hello!"}]},
        saves={"conversation_id": "id"},
    ),
    Step(
        "Read it back",
        "GET",
        "/conversations/{user_id}",
        [
            status(200),
            equals("user_id", CONVERSATION),
            # Three exchanges of two turns each (/process-payload's system message is not stored).
            body("messages", 'to.be.an("array").with.lengthOf.at.least(6)', "holds every turn"),
            equals("messages[0].user_id", CONVERSATION),
            text("messages[0].exchange_id"),
            body("next_cursor", "to.satisfy(c => c === null || typeof c === 'string')", "is null or a cursor"),
        ],
    ),
    Step(
        "Read it back",
        "GET",
        "/conversations/{user_id}/usage",
        [
            status(200),
            equals("user_id", CONVERSATION),
            at_least("exchanges.completed", 3),
            equals("exchanges.failed", 0),
            at_least("messages", 6),
            positive("tokens.total"),
            text("first_message_at"),
            text("last_message_at"),
        ],
    ),
    Step(
        "Read it back",
        "GET",
        "/conversations",
        [
            status(200),
            body("conversations", 'to.be.an("array")', "is a list"),
            body("conversations.map(c => c.user_id)", f'to.include("{CONVERSATION}")', f"include {CONVERSATION}"),
            body("next_cursor", "to.satisfy(c => c === null || typeof c === 'string')", "is null or a cursor"),
        ],
    ),
    Step(
        "Read it back",
        "GET",
        "/v1/responses/{response_id}",
        [status(200), equals("object", "response"), equals("status", "completed")],
    ),
    Step(
        "Read it back",
        "GET",
        "/v1/responses/{response_id}/input_items",
        [status(200), equals("object", "list"), equals("data[0].type", "message"), equals("data[0].role", "user")],
    ),
    Step(
        "Read it back",
        "POST",
        "/v1/responses/input_tokens",
        [status(200), equals("object", "response.input_tokens"), positive("input_tokens")],
        json_body={"model": "gpt-4o-mini", "input": "And a fifth?", "previous_response_id": "{{response_id}}"},
    ),
    Step(
        "Read it back",
        "POST",
        "/v1/responses/compact",
        [
            # A model writes a summary shorter than the chain (200, the user messages then one
            # compaction item); the offline model only echoes, which is refused as no shorter.
            check(
                "a compaction, or the offline model's echo refused",
                "const json = pm.response.json();"
                " if (pm.response.code === 200) { pm.expect(json.object).to.eql('response.compaction');"
                " pm.expect(json.output[json.output.length - 1].type).to.eql('compaction'); }"
                " else { pm.response.to.have.status(502); pm.expect(json.error.code).to.eql('compaction_failed'); }",
            )
        ],
        json_body={"model": "gpt-4o-mini", "previous_response_id": "{{response_id}}"},
    ),
    Step(
        "Read it back",
        "GET",
        "/v1/conversations/{conversation_id}",
        [status(200), equals("object", "conversation"), equals("metadata", {"topic": "cheese"})],
    ),
    Step(
        "Read it back",
        "POST",
        "/v1/conversations/{conversation_id}",
        [status(200), equals("metadata", {"topic": "French cheese"})],
        json_body={"metadata": {"topic": "French cheese"}},
    ),
    Step(
        "Read it back",
        "POST",
        "/v1/conversations/{conversation_id}/items",
        [status(200), equals("object", "list"), equals("data[0].role", "assistant")],
        json_body={"items": [{"type": "message", "role": "assistant", "content": "Hi! How can I help?"}]},
        saves={"item_id": "data[0].id"},
    ),
    Step(
        "Read it back",
        "GET",
        "/v1/conversations/{conversation_id}/items",
        [status(200), equals("object", "list"), body("data", "to.have.lengthOf(2)", "holds both items")],
    ),
    Step(
        "Read it back",
        "GET",
        "/v1/conversations/{conversation_id}/items/{item_id}",
        [status(200), equals("type", "message"), equals("role", "assistant")],
    ),
    Step(
        "See it in the metrics",
        "GET",
        "/metrics",
        [
            status(200),
            check("counts requests", 'pm.expect(pm.response.text()).to.include("gateway_http_requests_total");'),
        ],
    ),
    Step(
        "Erase it",
        "DELETE",
        "/v1/conversations/{conversation_id}/items/{item_id}",
        [status(200), equals("object", "conversation")],
    ),
    Step("Erase it", "DELETE", "/v1/responses/{response_id}", [status(200), equals("deleted", True)]),
    Step("Erase it", "DELETE", "/v1/conversations/{conversation_id}", [status(200), equals("deleted", True)]),
    Step("Erase it", "DELETE", "/conversations/{user_id}", [status(204)]),
]


def _unlisted_tests(operation: dict) -> list[str]:
    codes = sorted(int(code) for code in operation.get("responses", {}) if code.isdigit() and code.startswith("2"))
    return [check(f"status is one of the documented {codes}", f"pm.expect(pm.response.code).to.be.oneOf({codes});")]


def _request(method: str, path: str, operation: dict, step: Step | None) -> dict:
    segments = [s.replace("{", ":").replace("}", "") for s in path.strip("/").split("/")]
    if path.endswith("/"):
        segments.append("")
    headers = {"Content-Type": "application/json", **(step.headers if step else {})}
    request = {
        "method": method,
        "header": [{"key": key, "value": value} for key, value in headers.items()],
        "url": {
            "raw": "{{baseUrl}}/" + "/".join(segments),
            "host": ["{{baseUrl}}"],
            "path": segments,
            "variable": [
                {"key": s[1:], "value": PATH_VALUES.get(s[1:], "{{" + s[1:] + "}}")}
                for s in segments
                if s.startswith(":")
            ],
        },
    }
    if not operation.get("security"):
        request["auth"] = {"type": "noauth"}  # health, metrics: open to anyone
    if step and step.json_body is not None:
        request["body"] = {
            "mode": "raw",
            "raw": json.dumps(step.json_body, indent=2),
            "options": {"raw": {"language": "json"}},
        }
    return request


def _test_script(step: Step | None, operation: dict) -> list[str]:
    lines = list(step.tests) if step else _unlisted_tests(operation)
    for variable, source in (step.saves if step else {}).items():
        lines.append(f'pm.collectionVariables.set("{variable}", pm.response.json().{source});')
    return lines


def build(document: dict) -> dict:
    """A Postman v2.1 collection with one request per documented operation, in walk order,
    each with Postman tests; raises when STEPS names an operation the document lacks."""
    documented = {
        (method.upper(), path): operation
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    stale = [(s.method, s.path) for s in STEPS if (s.method, s.path) not in documented]
    if stale:
        raise SystemExit(f"STEPS names operations the OpenAPI document does not have: {stale}")
    order = {(s.method, s.path): (STAGES.index(s.stage), i) for i, s in enumerate(STEPS)}
    steps = {(s.method, s.path): s for s in STEPS}
    # Unlisted routes keep the document's order, in their own stage before the erasing one.
    unlisted = (STAGES.index(UNLISTED_STAGE), 0)
    folders: dict[str, list] = {stage: [] for stage in STAGES}
    for key in sorted(documented, key=lambda k: order.get(k, unlisted)):
        method, path = key
        operation, step = documented[key], steps.get(key)
        folders[step.stage if step else UNLISTED_STAGE].append(
            {
                "name": operation.get("summary") or f"{method} {path}",
                "event": [
                    {"listen": "test", "script": {"type": "text/javascript", "exec": _test_script(step, operation)}}
                ],
                "request": _request(method, path, operation, step),
            }
        )
    return {
        "info": {
            "name": document["info"]["title"],
            "description": (
                "Run it in order (Postman's Run collection, or "
                "`newman run docs/postman_collection.json --env-var baseUrl=http://127.0.0.1:5000`): "
                f"it starts conversation '{CONVERSATION}' on every chat route, reads it back and erases it last."
            ),
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        # Every request sends {{apiKey}} (from `flask keys create`) unless it is marked noauth;
        # left empty, no Authorization header is sent (enough while REQUIRE_API_KEY is off).
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{apiKey}}", "type": "string"}]},
        "variable": [
            {"key": "baseUrl", "value": "http://127.0.0.1:5000"},
            {"key": "apiKey", "value": "", "description": "A client key; needed when REQUIRE_API_KEY is on"},
        ],
        "item": [{"name": stage, "item": items} for stage, items in folders.items() if items],
    }


def main() -> None:
    from app import create_app

    app = create_app({"APP_ENV": "testing", "LLM_OFFLINE": True, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    document = app.test_client().get("/openapi.json").get_json()
    target = ROOT / "docs" / "postman_collection.json"
    target.write_text(json.dumps(build(document), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
