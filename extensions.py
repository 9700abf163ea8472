"""Extension instances, unbound: create_app calls their init_app."""

import os

from flask import current_app, g, request
from flask_limiter import HeaderNames, Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Set before the first migration so every constraint and index has a stable name that
# Alembic can later alter or drop on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _own_rate_limit() -> str | None:
    client_key = g.get("client_key")  # set by auth.authenticate, which runs before the limiter
    return client_key.rate_limit if client_key is not None else None


def _application_limit() -> str:
    """One budget over every route: the client key's own limit, else RATELIMIT_DEFAULT."""
    return _own_rate_limit() or current_app.config["RATELIMIT_APPLICATION"]


def completion_limit() -> str:
    """The completion routes' limit: the client key's own limit, else RATELIMIT_COMPLETION."""
    return _own_rate_limit() or current_app.config["RATELIMIT_COMPLETION"]


def rate_limit_key() -> str:
    """Whom a request counts against: its client key, or its address when keys are off.

    The address is the peer's unless TRUSTED_PROXIES lets ProxyFix believe X-Forwarded-For.
    """
    client_key = g.get("client_key")
    return f"key:{client_key.id}" if client_key is not None else f"ip:{get_remote_address()}"


db = SQLAlchemy(model_class=Base)
# render_as_batch lets Alembic alter tables on SQLite (which has no ALTER COLUMN).
MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
migrate = Migrate(directory=MIGRATIONS_DIR, render_as_batch=True, compare_type=True)
# Limits are callables read from the app's config on each request, not strings fixed
# here: Flask-Limiter keeps the first app's limit strings on the instance otherwise.
# Flask-Limiter writes its window's reset as Retry-After on every response (and over a
# 503's own value). Clients honour Retry-After before retrying any failure, so the
# limiter writes it under this name instead, and app.register_response_headers turns it
# into Retry-After on a 429 alone. X-RateLimit-* go out on every response as usual.
LIMITER_RETRY_AFTER = "X-Limiter-Retry-After"
limiter = Limiter(
    key_func=rate_limit_key,
    application_limits=[_application_limit],
    headers_enabled=True,
    header_name_mapping={HeaderNames.RETRY_AFTER: LIMITER_RETRY_AFTER},
)
# A CORS preflight carries no key and asks nothing of the API: it never spends a budget.
limiter.request_filter(lambda: request.method == "OPTIONS")
