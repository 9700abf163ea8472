"""Extension instances, unbound: create_app calls their init_app."""

import os

from flask_limiter import HeaderNames
from flask_migrate import Migrate
from flask_sock import Sock
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from ratelimit import GatewayLimiter, application_limit, is_preflight, rate_limit_key
from telemetry import LIMITER_RETRY_AFTER

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


db = SQLAlchemy(model_class=Base)
# render_as_batch lets Alembic alter tables on SQLite (which has no ALTER COLUMN).
MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
migrate = Migrate(directory=MIGRATIONS_DIR, render_as_batch=True, compare_type=True)
# Limits are callables read from the app's config on each request, not strings fixed
# here: Flask-Limiter keeps the first app's limit strings on the instance otherwise.
# Flask-Limiter writes its window's reset as Retry-After on every response (and over a
# 503's own value). Clients honour Retry-After before retrying any failure, so the
# limiter writes it under LIMITER_RETRY_AFTER instead, and telemetry's response hook
# turns it into Retry-After on a 429 alone. X-RateLimit-* go out on every response as usual.
limiter = GatewayLimiter(
    key_func=rate_limit_key,
    application_limits=[application_limit],
    headers_enabled=True,
    header_name_mapping={HeaderNames.RETRY_AFTER: LIMITER_RETRY_AFTER},
)
limiter.request_filter(is_preflight)
# WebSocket routes (flask-sock on simple-websocket): served by gunicorn's own workers.
sock = Sock()
