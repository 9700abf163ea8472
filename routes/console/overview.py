"""The console's Overview page, its landing page: totals, breakdowns and charts from the rollups."""

from __future__ import annotations

from flask import render_template, request

from database import unit_of_work
from routes.console.blueprint import console_bp
from services.client_keys import utc_today
from services.console.overview import WINDOWS, bar_chart, breakdown, window_totals


@console_bp.get("/overview")
def overview_page():
    """Today, 7 and 30 days; the breakdowns over `?days=` (1, 7 or 30; 30 by default)."""
    days = request.args.get("days", type=int)
    days = days if days in WINDOWS else WINDOWS[-1]
    today = utc_today()
    with unit_of_work(write=False) as db_session:
        windows, daily = window_totals(db_session, today)
        breakdowns = {by: breakdown(db_session, today, days, by) for by in ("model", "api_key_id", "route")}
    charts = {"requests": bar_chart(daily, "requests"), "cost": bar_chart(daily, "cost_usd")}
    return render_template(
        "console/overview.html",
        today=today.isoformat(),
        windows=windows,
        days=days,
        choices=WINDOWS,
        breakdowns=breakdowns,
        charts=charts,
    )
