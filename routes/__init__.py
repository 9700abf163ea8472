"""Blueprints, one per resource."""

from flask_openapi3 import OpenAPI

from request_body import register_body_checks
from routes.api_docs import register_docs_routes
from routes.chat import completions_bp, openai_compat_bp
from routes.conversations import conversations_bp
from routes.health import health_bp
from routes.openai_conversations import openai_conversations_bp
from routes.responses import ResponseIdConverter, responses_bp
from routes.responses_ws import responses_ws_bp


def register_blueprints(app: OpenAPI) -> None:
    """Attach every blueprint to `app`, after the checks every JSON body passes first."""
    register_body_checks(app)
    app.url_map.converters["response_id"] = ResponseIdConverter
    app.register_api(completions_bp)
    app.register_api(conversations_bp)
    app.register_api(health_bp)
    app.register_api(openai_compat_bp)
    app.register_api(responses_bp)
    app.register_blueprint(responses_ws_bp)  # the WebSocket beside POST /v1/responses (not in the document)
    app.register_api(openai_conversations_bp)
    register_docs_routes(app)
