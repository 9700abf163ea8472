"""The OpenAPI document, Swagger UI, the Postman collection, and schemathesis over every route."""

from __future__ import annotations

import json

import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from support import CASES_RUN, ROOT, app_settings, bearer, create_client_key, migrated_sqlite

from app import create_app
from database import unit_of_work
from services.client_keys import create_key

CONTRACT_APP = create_app(
    app_settings(
        migrated_sqlite("contract"),
        # The offline model answers, so every exchange the fuzzer starts completes for real.
        LLM_OFFLINE=True,
        # As in production: every API route needs a key (schemathesis also checks that one
        # sent without it is refused with 401).
        REQUIRE_API_KEY=True,
        # Room for the oversized bodies the fuzzer builds to break the per-message bounds,
        # so they meet validation (400) rather than the size limit (413, tested elsewhere).
        MAX_CONTENT_LENGTH=64 * 1024 * 1024,
    )
)
with CONTRACT_APP.app_context(), unit_of_work() as session:
    _, CONTRACT_KEY = create_key(session, "schemathesis")
schema = schemathesis.openapi.from_wsgi("/openapi.json", CONTRACT_APP)


@schema.auth()
class ContractKey:
    """Every generated request presents the contract key, as a real client would."""

    def get(self, case, context):
        return CONTRACT_KEY

    def set(self, case, key, context):
        case.headers = {**(case.headers or {}), **bearer(key)}


# derandomize: CI replays exactly the examples that passed here, never a new draw.
REPLAYABLE = {"deadline": None, "derandomize": True, "database": None, "suppress_health_check": list(HealthCheck)}


def beyond_json_schema(case) -> list:
    """The checks a case is spared: OpenAI's own cross-field rules on the Responses and
    Conversations bodies (tool_choice naming a tool in tools, not both previous_response_id
    and conversation, a previous response that must exist, the part types each role takes)
    are beyond JSON Schema, so a schema-valid body may rightly be refused with a 400. And GET
    /v1/responses is the WebSocket mode's door: OpenAPI cannot describe its upgrade, so every
    plain GET it documents is rightly answered 426. POST /v1/responses/compact is answered by
    the offline model here, whose "summary" (an echo) is never shorter than what it would
    replace: compaction rightly refuses it, 502 compaction_failed."""
    if case.operation.label == "POST /v1/responses/compact":
        return [positive_data_acceptance, not_a_server_error]
    if case.operation.label.startswith(("POST /v1/responses", "POST /v1/conversations")):
        return [positive_data_acceptance]
    if case.operation.label == "GET /v1/responses":
        return [positive_data_acceptance]
    return []


@schema.parametrize()
# max_examples bounds the fuzzing phase only: each operation also runs its documented
# examples and the coverage phase (each schema's boundary and missing-field cases, drawn
# deterministically). 50 fuzzed per operation: 2,972 cases in 19 s; 100 ran 4,022 in 31 s.
@settings(max_examples=50, **REPLAYABLE)
def test_every_documented_endpoint_conforms_and_never_fails(case):
    # Checks: no 5xx, status codes, content types, headers and bodies all as documented,
    # and (ignored_auth) that the same request without the key is refused.
    CASES_RUN["schemathesis: single operations"] += 1
    case.call_and_validate(excluded_checks=beyond_json_schema(case))


class AuthenticatedScenarios(schema.as_state_machine()):
    """Sequences that follow the document's links: start a conversation, then read its
    rows and usage, list it, erase it, and read it again, with the user_id each answer gave."""

    def setup(self):
        # Each scenario starts from the same empty conversations: the bundles a scenario
        # draws from (GET /conversations lists) must not depend on the scenarios before it,
        # or Hypothesis cannot replay a draw (FlakyStrategyDefinition).
        with CONTRACT_APP.app_context(), unit_of_work() as session:
            for table in ("messages", "responses", "conversations", "api_key_usage"):
                session.execute(sa.text(f"DELETE FROM {table}"))

    def before_call(self, case):
        CASES_RUN["schemathesis: stateful steps"] += 1

    def validate_response(self, response, case, additional_checks=None, **kwargs):
        case.validate_response(
            response,
            additional_checks=additional_checks,
            excluded_checks=beyond_json_schema(case),
            transport_kwargs=kwargs,
        )


def test_linked_operations_conform_in_sequence():
    AuthenticatedScenarios.run(settings=settings(max_examples=60, stateful_step_count=6, **REPLAYABLE))


def test_the_document_links_conversations_to_the_routes_that_read_them():
    document = CONTRACT_APP.test_client().get("/openapi.json").get_json()
    links = document["paths"]["/openai-completion"]["post"]["responses"]["200"]["links"]
    read = document["paths"]["/conversations/{user_id}"]["get"]["operationId"]
    assert links["ReadConversation"] == {"operationId": read, "parameters": {"user_id": "$response.body#/user_id"}}
    v1 = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["links"]
    assert v1["EraseConversation"]["parameters"] == {"user_id": "$response.header.X-Conversation-Id"}
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document["paths"]["/healthz"]["get"].get("security") is None
    assert document["paths"]["/conversations"]["get"]["security"] == [{"bearerAuth": []}]


def test_openapi_document_is_generated_from_the_schemas():
    document = CONTRACT_APP.test_client().get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    operation = document["paths"]["/openai-completion"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CompletionRequest"
    }
    assert set(document["components"]["schemas"]["CompletionRequest"]["properties"]) == {"prompt", "user_id", "stream"}
    assert "text/event-stream" in operation["responses"]["200"]["content"]


def test_swagger_ui_is_served_with_its_assets_and_no_cdn():
    client = CONTRACT_APP.test_client()
    page = client.get("/docs", follow_redirects=True)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "swagger-ui" in html
    assert "https://" not in html.replace("https://swagger.io", "")  # nothing fetched from a CDN
    for asset in ("swagger/js/swagger-ui-bundle.js", "swagger/css/swagger-ui.css"):
        response = client.get(f"/openapi/{asset}")
        assert response.status_code == 200 and len(response.data) > 10_000
        response.close()


def test_postman_collection_matches_the_openapi_document():
    document = CONTRACT_APP.test_client().get("/openapi.json").get_json()
    documented = {
        (method.upper(), path.replace("{", ":").replace("}", ""))
        for path, operations in document["paths"].items()
        for method in operations
    }
    collection = json.loads((ROOT / "docs" / "postman_collection.json").read_text())
    items = [item for folder in collection["item"] for item in folder.get("item", [folder])]
    in_collection = {(i["request"]["method"], "/" + "/".join(i["request"]["url"]["path"])) for i in items}
    assert in_collection == documented


def test_reading_the_docs_does_not_spend_the_rate_limit(make_app):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_APPLICATION="2 per hour", REQUIRE_API_KEY=True)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/docs", follow_redirects=True).status_code == 200
        assert client.get("/openapi.json").status_code == 200
        asset = client.get("/openapi/swagger/css/swagger-ui.css")
        assert asset.status_code == 200
        asset.close()
    key = bearer(create_client_key(app))
    assert client.post("/openai-completion", json={"prompt": "a"}, headers=key).status_code == 200
    assert client.post("/openai-completion", json={"prompt": "b"}, headers=key).status_code == 200
    assert client.post("/openai-completion", json={"prompt": "c"}, headers=key).status_code == 429


def test_the_openapi_document_is_byte_identical_to_the_one_recorded():
    """tests/data/openapi.json was generated before the modules moved (issue 20): a move of
    code must not change the document. A deliberate change of the API regenerates the file
    (`GET /openapi.json` of this module's CONTRACT_APP) in the same commit."""
    recorded = (ROOT / "tests" / "data" / "openapi.json").read_bytes()
    assert CONTRACT_APP.test_client().get("/openapi.json").data == recorded
