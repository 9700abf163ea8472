"""Migrations build the schema from nothing, and agree with the models."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from app import create_app
from extensions import db


def test_upgrade_from_nothing_matches_the_models_and_downgrades(empty_database_url):
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database_url, "APP_ENV": "testing", "LLM_OFFLINE": True})
    try:
        with app.app_context():
            upgrade()
            inspector = sa.inspect(db.engine)
            assert "messages" in inspector.get_table_names()
            indexes = {ix["name"] for ix in inspector.get_indexes("messages")}
            by_key = "ix_messages_api_key_id_user_id_status_id"
            assert {"ix_messages_user_id", "ix_messages_exchange_id", by_key} <= indexes

            with db.engine.connect() as conn:
                differences = compare_metadata(MigrationContext.configure(conn), db.metadata)
            assert differences == []

            downgrade(revision="base")
            assert "messages" not in sa.inspect(db.engine).get_table_names()
            db.engine.dispose()
    finally:
        app.extensions["llm"].close()
