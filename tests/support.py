"""Helpers shared by the tests."""

from __future__ import annotations

from extensions import db

# Built at run time so no key-shaped literal sits in the repository; tests search
# responses, rows and logs for it.
UPSTREAM_KEY = "sk-" + "testonly" * 4


def rows_of(app, user_id: str | None = None) -> list[dict]:
    """Every stored message row (of `user_id` when given), oldest first, as dicts."""
    from models import Message

    with app.app_context():
        query = db.select(Message).order_by(Message.id)
        if user_id is not None:
            query = query.where(Message.user_id == user_id)
        return [m.to_dict() for m in db.session.scalars(query)]
