"""The console's keys page: every key, its limits and today's usage; create, revoke and
change limits, each action written to the audit log in the same unit of work."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from database import unit_of_work
from routes.console.blueprint import console_bp, current_admin
from routes.console.forms import ActionForm, CreateKeyForm, LimitsForm
from services.client_keys import create_key, revoke_key, utc_today
from services.console.audit import record_action
from services.console.keys import PAGE_SIZE, change_limits, find_key, format_usd, keys_with_usage, limits_of


def _render(
    form: CreateKeyForm | None = None, created: dict | None = None, status: int = 200, after: int | None = None
):
    with unit_of_work(write=False) as db_session:
        keys = keys_with_usage(db_session, after)
    page = render_template(
        "console/keys.html",
        keys=keys,
        newer=keys[-1]["id"] if len(keys) == PAGE_SIZE else None,
        today=utc_today().isoformat(),
        form=form or CreateKeyForm(formdata=None),
        limits_form=LimitsForm(formdata=None),
        action_form=ActionForm(formdata=None),
        created=created,
        format_usd=format_usd,
    )
    return page, status


@console_bp.get("/keys")
def keys_page():
    """A page of keys with their limits, today's usage against their budget and their last
    day of use; `?after=<id>` for the next (newer) page."""
    return _render(after=request.args.get("after", type=int))


@console_bp.post("/keys")
def create_key_view():
    """Create a key; the page shows it this once (only its hash is stored)."""
    form = CreateKeyForm()
    if not form.validate():
        return _render(form, status=400)
    rate_limit, daily_tokens = form.rate_limit.data or None, form.daily_tokens.data
    with unit_of_work() as db_session:
        record, key = create_key(db_session, form.name.data, rate_limit, daily_tokens, *form.money_budgets())
        detail = {"name": record["name"], **limits_of(record)}
        record_action(db_session, current_admin().name, "key.create", record["prefix"], detail)
    return _render(created={**record, "key": key}, status=201)


@console_bp.post("/keys/<int:key_id>/revoke")
def revoke_key_view(key_id: int):
    """Revoke a key: refused from its next request, in every worker."""
    with unit_of_work() as db_session:
        key = find_key(db_session, key_id)
        if key is not None:
            revoked = revoke_key(db_session, key["prefix"])
            detail = {"name": key["name"], "revoked_at": revoked["revoked_at"]}
            record_action(db_session, current_admin().name, "key.revoke", key["prefix"], detail)
    flash(f"Revoked key {key['prefix']} ({key['name']})." if key else "No such key.")
    return redirect(url_for("console.keys_page"))


@console_bp.post("/keys/<int:key_id>/limits")
def change_limits_view(key_id: int):
    """Set a key's rate limit, daily token budget and daily and monthly USD budgets (empty:
    the defaults, no budget); the audit entry holds the limits before and after."""
    form = LimitsForm()
    if not form.validate():
        problems = "; ".join(f"{form[name].label.text}: {' '.join(errors)}" for name, errors in form.errors.items())
        flash(f"Limits not changed: {problems}")
        return redirect(url_for("console.keys_page"))
    rate_limit, daily_tokens = form.rate_limit.data or None, form.daily_tokens.data
    with unit_of_work() as db_session:
        before = find_key(db_session, key_id)
        after = change_limits(db_session, key_id, rate_limit, daily_tokens, *form.money_budgets())
        if after is not None:
            detail = {"from": limits_of(before), "to": limits_of(after)}
            record_action(db_session, current_admin().name, "key.limits", after["prefix"], detail)
    flash(f"Limits of key {after['prefix']} changed." if after else "No such key.")
    return redirect(url_for("console.keys_page"))
