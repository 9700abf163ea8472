"""What the OpenAPI document says of each route (flask-openapi3), and /openapi.json, /docs.

Routes keep their own validation (the exact messages the API promises, like "Prompt is
required"), so flask-openapi3 only documents the models named in their signatures:
`delay_validation` tells it to pass the view its path arguments untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app, jsonify, redirect

from schemas import ErrorResponse, OpenAIErrorResponse

# Statuses any route may answer besides its success: bad input, too large, not JSON,
# rate limited, our own failure, and the database or upstream failing.
_CLIENT_ERRORS = (400, 413, 415, 429)
_SERVER_ERRORS = (500, 502, 503, 504)


def delay_validation(view: Callable[..., Any]) -> Callable[..., Any]:
    """Document the view's annotated models, but let the view validate its own input."""
    view.__delay_validate_request__ = True  # read by flask-openapi3 at call time
    return view


def responses(success: dict[int, Any], *, openai: bool = False, read_only: bool = False) -> dict[int, Any]:
    """The responses of one operation: its successes and the error envelope for the rest."""
    error = OpenAIErrorResponse if openai else ErrorResponse
    codes = (400, 404, 429, 500, 503) if read_only else (*_CLIENT_ERRORS, 404, *_SERVER_ERRORS)
    return {**{code: error for code in codes}, **success}


def _restore_contains(component_schemas: dict[str, Any]) -> None:
    # flask-openapi3's Schema model drops JSON Schema's `contains`; put back what the
    # pydantic models say ("at least one message that is not a system message").
    import schemas

    for name, component in component_schemas.items():
        model = getattr(schemas, name, None)
        if not (isinstance(model, type) and issubclass(model, schemas.BaseModel)):
            continue
        properties = model.model_json_schema().get("properties", {})
        for field, spec in properties.items():
            if "contains" in spec and field in component.get("properties", {}):
                component["properties"][field]["contains"] = spec["contains"]


def register_docs_routes(app) -> None:
    """/openapi.json (the document) and /docs (Swagger UI, served from the package's assets)."""
    from extensions import limiter

    @app.get("/openapi.json", doc_ui=False)
    @limiter.exempt
    def openapi_document():
        document = dict(current_app.api_doc)
        # flask-openapi3 writes `securitySchemes: null` when there are none; OpenAPI wants it absent.
        components = {k: v for k, v in (document.get("components") or {}).items() if v is not None}
        document["components"] = components
        _restore_contains(components.get("schemas", {}))
        return jsonify(document)

    @app.get("/docs", doc_ui=False)
    @limiter.exempt
    def swagger_ui():
        return redirect("/openapi/swagger")

    # Reading the documentation (the UI page and its assets) never spends the API budget.
    for name in ("openapi", "swagger"):
        if name in app.blueprints:
            limiter.exempt(app.blueprints[name])
