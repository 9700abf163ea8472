"""The console's keys page in money (issue 25): each key's cost today against its daily USD
budget and this month's against its monthly one (bars), and the create and limits forms'
USD budget fields, read as `flask keys create --daily-usd/--monthly-usd` reads them and
audited with from/to. Through Flask's test client on each backend, a real fake upstream."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from console_support import SECRET_KEY, csrf_token
from fake_upstream import Reply
from support import bearer
from test_console import make_admin, signed_in

from extensions import db
from models import AuditEntry
from services.console.keys import format_usd

CONSOLE = {"CONSOLE_ENABLED": True, "SECRET_KEY": SECRET_KEY, "REQUIRE_API_KEY": True}


@pytest.fixture
def console(make_app):
    app = make_app(**CONSOLE)
    make_admin(app)
    return app, signed_in(app)


def _row(html: str, name: str) -> str:
    match = re.search(
        r'<tr class="key" data-prefix="[^"]+">\s*<td class="name">' + re.escape(name) + r"</td>(.*?)</tr>", html, re.S
    )
    assert match, f"no row for {name}"
    return match.group(1)


def _cell(row: str, css: str) -> str:
    match = re.search(rf'<td class="{css}">(.*?)</td>', row, re.S)
    assert match, css
    return " ".join(match.group(1).split())


def _stored(app, name: str) -> tuple:
    with app.app_context():
        query = sa.text("SELECT daily_usd_micros, monthly_usd_micros FROM api_keys WHERE name = :name")
        return tuple(db.session.execute(query, {"name": name}).one())


def _audit_details(app, action: str) -> list[dict]:
    with app.app_context():
        entries = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))
        return [entry.detail for entry in entries]


def test_a_key_made_in_the_form_gets_its_usd_budgets_and_its_spend_shows_against_them(console, upstream):
    app, client = console
    token = csrf_token(client.get("/console/keys").text)
    form = {"name": "team", "daily_usd": "0.001", "monthly_usd": " 0.002 ", "csrf_token": token}
    created = client.post("/console/keys", data=form)
    assert created.status_code == 201
    key = re.search(r'<code id="new-key">([^<]+)</code>', created.text).group(1)
    assert _stored(app, "team") == (1000, 2000)
    (detail,) = _audit_details(app, "key.create")
    assert (detail["daily_usd"], detail["monthly_usd"]) == (0.001, 0.002)

    # 1000 prompt tokens at $0.15 and 1000 completion tokens at $0.60 per million: $0.00075.
    upstream.enqueue(Reply(text="priced", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=1000))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}
    answered = app.test_client().post("/v1/chat/completions", json=body, headers=bearer(key))
    assert answered.status_code == 200, answered.text

    row = _row(client.get("/console/keys").text, "team")
    assert _cell(row, "usd-today").endswith("$0.00075 / $0.001")
    assert '<meter min="0" max="0.001" value="0.00075"' in row
    assert _cell(row, "usd-month").endswith("$0.00075 / $0.002")
    assert '<meter min="0" max="0.002" value="0.00075"' in row


def test_a_key_without_usd_budgets_shows_its_spend_alone(console):
    app, client = console
    token = csrf_token(client.get("/console/keys").text)
    assert client.post("/console/keys", data={"name": "free", "csrf_token": token}).status_code == 201
    assert _stored(app, "free") == (None, None)
    row = _row(client.get("/console/keys").text, "free")
    assert _cell(row, "usd-today") == "$0.00 (no budget)" and _cell(row, "usd-month") == "$0.00 (no budget)"
    assert "<meter" not in row.split('class="usd-today"')[1]


@pytest.mark.parametrize("amount", ["-1", "0", "abc", "0.0000001", "nan"])
def test_an_amount_that_is_no_usd_budget_is_refused_and_nothing_is_made(console, amount):
    app, client = console
    token = csrf_token(client.get("/console/keys").text)
    refused = client.post("/console/keys", data={"name": "team", "daily_usd": amount, "csrf_token": token})
    assert refused.status_code == 400
    assert "Daily USD:" in refused.text
    with app.app_context():
        assert db.session.execute(sa.text("SELECT count(*) FROM api_keys")).scalar() == 0


def test_the_limits_form_changes_usd_budgets_audited_from_and_to(console):
    app, client = console
    token = csrf_token(client.get("/console/keys").text)
    client.post("/console/keys", data={"name": "team", "daily_usd": "5", "monthly_usd": "50", "csrf_token": token})
    key_id = re.search(r"/console/keys/(\d+)/limits", client.get("/console/keys").text).group(1)
    limits = {"rate_limit": "", "daily_tokens": "", "daily_usd": "0.25", "monthly_usd": "", "csrf_token": token}
    changed = client.post(f"/console/keys/{key_id}/limits", data=limits)
    assert changed.status_code == 302
    assert _stored(app, "team") == (250_000, None)
    (detail,) = _audit_details(app, "key.limits")
    assert detail["from"] == {"rate_limit": None, "daily_tokens": None, "daily_usd": 5.0, "monthly_usd": 50.0}
    assert detail["to"] == {"rate_limit": None, "daily_tokens": None, "daily_usd": 0.25, "monthly_usd": None}
    page = client.get("/console/keys").text
    assert 'name="daily_usd" value="0.25"' in page

    bad = client.post(f"/console/keys/{key_id}/limits", data={**limits, "monthly_usd": "-3"})
    assert bad.status_code == 302 and _stored(app, "team") == (250_000, None)
    assert "Monthly USD:" in client.get("/console/keys").text
    assert len(_audit_details(app, "key.limits")) == 1


@pytest.mark.parametrize(
    ("amount", "text"), [(0, "$0.00"), (5.0, "$5.00"), (0.25, "$0.25"), (0.00075, "$0.00075"), (12.5, "$12.50")]
)
def test_usd_amounts_show_to_the_cent_or_the_micro_dollar(amount, text):
    assert format_usd(amount) == text
