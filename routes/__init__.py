"""Blueprints, one per resource."""

from flask_openapi3 import OpenAPI

from routes.api_docs import register_docs_routes
from routes.completions import bp as completions_bp
from routes.conversations import bp as conversations_bp
from routes.health import bp as health_bp
from routes.openai_compat import bp as openai_compat_bp


def register_blueprints(app: OpenAPI) -> None:
    """Attach every blueprint to `app`."""
    app.register_api(completions_bp)
    app.register_api(conversations_bp)
    app.register_api(health_bp)
    app.register_api(openai_compat_bp)
    register_docs_routes(app)
