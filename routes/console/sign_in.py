"""Signing in to the console and out of it. Failed sign-ins are counted per address, like
failed API keys, and refused with 429 past CONSOLE_SIGN_IN_LIMIT, before any password check."""

from __future__ import annotations

import math
import time
from functools import lru_cache

from flask import current_app, flash, redirect, render_template, session, url_for
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse

from database import unit_of_work
from extensions import limiter
from routes.console.blueprint import console_bp, current_admin
from routes.console.forms import SignInForm
from services.admins import known_name, verify_admin
from services.console.audit import record_action

FAILURES = "console-sign-in-failures"


@lru_cache(maxsize=8)
def _limit(text: str) -> RateLimitItem:
    return parse(text)


def _seconds_until_allowed() -> int | None:
    """Seconds this address must wait (over its failed sign-ins), else None."""
    if not limiter.enabled:
        return None
    item, address = _limit(current_app.config["CONSOLE_SIGN_IN_LIMIT"]), get_remote_address()
    if limiter.limiter.test(item, FAILURES, address):
        return None
    reset_at, _ = limiter.limiter.get_window_stats(item, FAILURES, address)
    return max(1, math.ceil(reset_at - time.time()))


def _count_failure() -> None:
    if limiter.enabled:
        limiter.limiter.hit(_limit(current_app.config["CONSOLE_SIGN_IN_LIMIT"]), FAILURES, get_remote_address())


@console_bp.get("")
@console_bp.get("/")
def home():
    """The console opens on the overview page."""
    return redirect(url_for("console.overview_page"))


@console_bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    """The sign-in form; a right name and password start a signed session."""
    if current_admin() is not None:
        return redirect(url_for("console.overview_page"))
    form = SignInForm()
    if not form.is_submitted():
        return render_template("console/sign_in.html", form=form)
    wait = _seconds_until_allowed()
    if wait is not None:
        message = "Too many failed sign-ins from this address; retry later."
        return render_template("console/sign_in.html", form=form, error=message), 429, {"Retry-After": str(wait)}
    if not form.validate():
        return render_template("console/sign_in.html", form=form), 400
    address = {"address": get_remote_address()}
    with unit_of_work() as db_session:
        admin = verify_admin(db_session, form.name.data, form.password.data)
        if admin is None:
            record_action(db_session, known_name(db_session, form.name.data), "console.sign_in_failed", detail=address)
        else:
            record_action(db_session, admin.name, "console.sign_in", detail=address)
    if admin is None:
        _count_failure()
        return render_template("console/sign_in.html", form=form, error="Wrong name or password."), 401
    session.clear()
    session.permanent = True
    session.update(admin_id=admin.id, admin_token=admin.session_token)
    return redirect(url_for("console.overview_page"))


@console_bp.post("/sign-out")
def sign_out():
    """End the session (CSRF-checked, so no other site can sign an operator out)."""
    with unit_of_work() as db_session:
        record_action(db_session, current_admin().name, "console.sign_out")
    session.clear()
    flash("Signed out.")
    return redirect(url_for("console.sign_in"))
