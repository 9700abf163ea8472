"""/openapi.json and /docs: the OpenAPI document flask-openapi3 builds from every route's
declaration (routes/openapi.py), with the links between operations added, and Swagger UI.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import current_app, jsonify, redirect

import schemas
from auth import public, public_blueprint


def _restore_contains(component_schemas: dict[str, Any]) -> None:
    # flask-openapi3's Schema model drops JSON Schema's `contains`; put back what the
    # pydantic models say ("at least one message that is not a system message").
    for name, component in component_schemas.items():
        model = getattr(schemas, name, None)
        if not (isinstance(model, type) and issubclass(model, schemas.BaseModel)):
            continue
        properties = model.model_json_schema().get("properties", {})
        for field, spec in properties.items():
            if "contains" in spec and field in component.get("properties", {}):
                # A copy: the model's schema is shared (see schemas.Validated), the document is edited.
                component["properties"][field]["contains"] = copy.deepcopy(spec["contains"])


# OpenAPI links: which answers lead to which operations, and with what user_id. Clients
# (and schemathesis' stateful tests) follow them: start a conversation, then read it.
_CONVERSATION_OPERATIONS = (
    ("get", "/conversations/{user_id}", "ReadConversation"),
    ("get", "/conversations/{user_id}/usage", "ReadConversationUsage"),
    ("delete", "/conversations/{user_id}", "EraseConversation"),
)
_CONVERSATION_SOURCES = (
    ("post", "/openai-completion", "$response.body#/user_id"),
    ("post", "/process-payload/", "$response.body#/user_id"),
    ("post", "/v1/chat/completions", "$response.header.X-Conversation-Id"),
    ("get", "/conversations", "$response.body#/conversations/0/user_id"),
)


def _add_links(paths: dict[str, Any]) -> None:
    for method, path, user_id in _CONVERSATION_SOURCES:
        success = paths.get(path, {}).get(method, {}).get("responses", {}).get("200")
        if success is None:
            continue
        success["links"] = {
            name: {"operationId": paths[target][verb]["operationId"], "parameters": {"user_id": user_id}}
            for verb, target, name in _CONVERSATION_OPERATIONS
            if verb in paths.get(target, {})
        }


def register_docs_routes(app) -> None:
    """/openapi.json (the document) and /docs (Swagger UI, served from the package's assets)."""

    @app.get("/openapi.json", doc_ui=False)
    @public
    def openapi_document():
        document = dict(current_app.api_doc)
        # flask-openapi3 writes `securitySchemes: null` when there are none; OpenAPI wants it absent.
        components = {k: v for k, v in (document.get("components") or {}).items() if v is not None}
        document["components"] = components
        _restore_contains(components.get("schemas", {}))
        _add_links(document.get("paths", {}))
        return jsonify(document)

    @app.get("/docs", doc_ui=False)
    @public
    def swagger_ui():
        return redirect("/openapi/swagger")

    # Reading the documentation (flask-openapi3's UI page and assets) needs no key and
    # never spends the API budget.
    for name in ("openapi", "swagger"):
        if name in app.blueprints:
            public_blueprint(app.blueprints[name])
