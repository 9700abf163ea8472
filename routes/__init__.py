"""Blueprints, one per resource."""

from flask import Flask

from routes.completions import bp as completions_bp
from routes.conversations import bp as conversations_bp
from routes.health import bp as health_bp
from routes.openai_compat import bp as openai_compat_bp


def register_blueprints(app: Flask) -> None:
    """Attach every blueprint to `app`."""
    app.register_blueprint(completions_bp)
    app.register_blueprint(conversations_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(openai_compat_bp)
