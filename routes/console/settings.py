"""The console's settings page: the configuration in force, secrets masked."""

from __future__ import annotations

from flask import current_app, render_template

from routes.console.blueprint import console_bp
from services.console.settings import MASK, effective_settings, routing_in_force


@console_bp.get("/settings")
def settings_page():
    """Every setting of config.py with its value (secrets masked) and its source, and the
    routing the service routes by."""
    config = current_app.config
    return render_template(
        "console/settings.html",
        settings=effective_settings(config),
        routing=routing_in_force(current_app.extensions["llm"], config),
        routing_file=config.get("ROUTING_FILE"),
        mask=MASK,
    )
