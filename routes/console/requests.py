"""The console's Requests page: the request log, filtered and keyset-paged, and one exchange."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import current_app, render_template, request, url_for

from database import unit_of_work
from models import as_utc
from routes.console.blueprint import PREFIX, console_bp
from services.console.requests import (
    STATUSES,
    RequestFilters,
    key_filter_text,
    key_id_of,
    request_detail,
    request_page,
)

FILTER_NAMES = ("key", "model", "route", "status", "since", "until")


def _moment(text: str) -> datetime | None:
    """A date or date-time the form sent ("2026-12-03", "2026-12-03T10:00"), as UTC; None if it is none."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _filters(session, args: dict[str, str]) -> tuple[RequestFilters, list[str]]:
    """The filters the query string asks for, and a sentence for each value it could not read."""
    problems: list[str] = []
    key_id = None
    if args.get("key"):
        key_id = key_id_of(session, args["key"])
        if key_id is None:
            problems.append("Key: give a key's id or prefix.")
            key_id = -1  # names no key: an empty page, not every key's
    status = args.get("status") or None
    if status is not None and status not in STATUSES:
        problems.append("Status: not a status an exchange has.")
    moments = {}
    for name in ("since", "until"):
        moments[name] = _moment(args[name]) if args.get(name) else None
        if args.get(name) and moments[name] is None:
            problems.append(f"{name.capitalize()}: give a date (2026-12-03) or a date and time (2026-12-03T10:00).")
    filters = RequestFilters(key_id, args.get("model") or None, args.get("route") or None, status, **moments)
    return filters, problems


def conversation_url(api_key_id: int | None, user_id: str, exchange_id: str) -> str:
    """The Conversations page at this exchange (its own endpoint once that page is there)."""
    query = {"key": "" if api_key_id is None else api_key_id, "id": user_id}
    if "console.conversation_page" in current_app.view_functions:
        return url_for("console.conversation_page", **query, _anchor=f"exchange-{exchange_id}")
    return f"{PREFIX}/conversation?{urlencode(query)}#exchange-{exchange_id}"


@console_bp.get("/requests")
def requests_page():
    """A page of the request log, newest first; `?before=<id>` for the next (older) page."""
    args = {name: request.args.get(name, "").strip() for name in FILTER_NAMES}
    args["key"] = key_filter_text(args["key"])
    before, at = request.args.get("before", type=int), _instant(request.args.get("at", ""))
    with unit_of_work(write=False) as db_session:
        filters, problems = _filters(db_session, args)
        rows, older = request_page(db_session, filters, before, at=at)
    shown = {name: value for name, value in args.items() if value}
    cursor = {**shown, "before": older, "at": rows[-1]["created_at"]} if older else None
    return render_template(
        "console/requests.html", rows=rows, cursor=cursor, args=args, shown=shown, problems=problems, statuses=STATUSES
    )


def _instant(text: str) -> datetime | None:
    """A cursor's ISO 8601 instant, in UTC; None when it is missing or no instant."""
    try:
        return as_utc(datetime.fromisoformat(text)) if text else None
    except ValueError:
        return None


@console_bp.get("/requests/<exchange_id>")
def request_detail_page(exchange_id: str):
    """One exchange: its log row, its upstream attempts, a link to its conversation."""
    with unit_of_work(write=False) as db_session:
        detail = request_detail(db_session, exchange_id[:36])
    if detail is None:
        message = "No exchange with this id is in the request log."
        return render_template("console/error.html", title="Not found", message=message), 404
    conversation = conversation_url(detail["api_key_id"], detail["user_id"], detail["exchange_id"])
    return render_template("console/request.html", row=detail, conversation=conversation)
