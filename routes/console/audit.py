"""The console's audit page: who did what and when, newest first."""

from __future__ import annotations

from flask import render_template, request

from database import unit_of_work
from routes.console.blueprint import console_bp
from services.console.audit import PAGE_SIZE, recent_actions


@console_bp.get("/audit")
def audit_page():
    """A page of audit entries; `?before=<id>` for the next (older) page."""
    before = request.args.get("before", type=int)
    with unit_of_work(write=False) as db_session:
        entries = recent_actions(db_session, before)
    older = entries[-1]["id"] if len(entries) == PAGE_SIZE else None
    return render_template("console/audit.html", entries=entries, older=older)
