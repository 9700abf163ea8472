"""The console's blueprint: signed-in operators only, CSRF on every POST, strict headers.

Client keys never open it: its views ignore `Authorization` (they are public to the API's
key check) and answer only to a session cookie signed at sign-in with an admin password.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flask import Blueprint, Flask, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect

from auth import public_blueprint
from database import unit_of_work
from services.admins import AdminIdentity, find_admin

ROOT = Path(__file__).resolve().parent.parent.parent
PREFIX = "/console"

console_bp = Blueprint(
    "console", __name__, url_prefix=PREFIX, static_folder=str(ROOT / "static" / "console"), static_url_path="/static"
)
public_blueprint(console_bp)  # no client key asked for, no API rate limit spent: the session guards it
csrf = CSRFProtect()

# Scripts, styles and images from the service itself only; no inline script or style, no
# framing, forms posting back here only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# Reached without a session: the sign-in page and the stylesheet.
OPEN_ENDPOINTS = frozenset({"console.sign_in", "console.static"})


def current_admin() -> AdminIdentity | None:
    """The operator signed in on this request, or None."""
    return g.get("console_admin")


@console_bp.before_request
def require_admin():
    """CSRF on every POST; then the signed-in admin, else off to the sign-in page."""
    if request.method == "POST":
        csrf.protect()
    g.console_admin = None
    admin_id, token = session.get("admin_id"), session.get("admin_token")
    if isinstance(admin_id, int) and isinstance(token, str):
        with unit_of_work(write=False) as db_session:
            g.console_admin = find_admin(db_session, admin_id, token)
        if g.console_admin is None:
            session.clear()  # the admin was deleted, or its password changed
    if g.console_admin is None and request.endpoint not in OPEN_ENDPOINTS:
        return redirect(url_for("console.sign_in"))
    return None


@console_bp.errorhandler(CSRFError)
def refuse_forged_form(exc: CSRFError):
    """A POST without this session's CSRF token: refused, nothing done."""
    return render_template("console/error.html", title="Form refused", message=exc.description), 400


def register_console(app: Flask) -> None:
    """Serve the console at /console when CONSOLE_ENABLED (config.py checked SECRET_KEY)."""
    if not app.config["CONSOLE_ENABLED"]:
        return
    app.config.update(
        SESSION_COOKIE_NAME="gateway_console",
        SESSION_COOKIE_PATH=PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        # CSRFProtect checks the console's POSTs only (require_admin); the API takes JSON with keys.
        WTF_CSRF_CHECK_DEFAULT=False,
    )
    csrf.init_app(app)
    app.register_blueprint(console_bp)
    app.after_request(add_security_headers)


def add_security_headers(response):
    """Every answer under /console (errors and redirects included) gets SECURITY_HEADERS."""
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response
