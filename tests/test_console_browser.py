"""The operator's console driven in headless Chromium against gunicorn (issue 25): sign in,
a wrong password, a key made on the page used with the openai SDK until it is revoked,
its limits changed, a form without its CSRF token, a script in a key name shown as text.
Each page is saved as a screenshot in tests/screenshots/ (git-ignored)."""

from __future__ import annotations

import sqlite3

import openai
import pytest
from console_support import ADMIN, screenshot, sign_in

pytestmark = pytest.mark.usefixtures("upstream")


def ask(service, key: str, prompt: str = "hello"):
    """One chat completion through the service with `key`, as the SDK's README makes it."""
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0)
    try:
        return client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": prompt}])
    finally:
        client.close()


def create_key(page, name: str, daily_tokens: str = "") -> str:
    """Create a key on the keys page; return the key the page shows once."""
    page.goto("/console/keys")
    page.get_by_label("Name").fill(name)
    if daily_tokens:
        page.locator("form.create-key").get_by_label("Daily tokens").fill(daily_tokens)
    page.get_by_role("button", name="Create key").click()
    return page.locator("#new-key").inner_text()


def key_row(page, name: str):
    return page.locator("tr.key", has=page.locator("td.name", has_text=name))


def test_an_admin_signs_in_to_the_keys_page_and_out(page, console_service):
    page.goto("/console/keys")
    assert page.url.endswith("/console/sign-in")  # no session: sent to sign in
    screenshot(page, "sign-in")
    sign_in(page, console_service)
    assert page.url.endswith("/console/overview")  # the console opens on its overview
    page.goto("/console/keys")
    assert page.get_by_role("heading", name="Client keys").is_visible()
    assert page.locator("header .who").inner_text() == ADMIN
    cookie = next(c for c in page.context.cookies() if c["name"] == "gateway_console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    screenshot(page, "keys")
    page.get_by_role("button", name="Sign out").click()
    assert page.url.endswith("/console/sign-in")
    page.goto("/console/keys")
    assert page.url.endswith("/console/sign-in")


def test_a_wrong_password_is_refused(page, console_service):
    sign_in(page, console_service, password="not-the-password")
    assert page.url.endswith("/console/sign-in")
    assert page.get_by_role("alert").inner_text() == "Wrong name or password."
    screenshot(page, "sign-in-refused")
    page.goto("/console/keys")
    assert page.url.endswith("/console/sign-in")


def test_a_key_made_in_the_console_answers_until_it_is_revoked(page, console_service):
    sign_in(page, console_service)
    key = create_key(page, "team-alpha", daily_tokens="100000")
    assert key.startswith("gw_")
    screenshot(page, "key-created")
    reply = ask(console_service, key)
    assert reply.choices[0].message.content == "echo: hello"

    page.goto("/console/keys")
    row = key_row(page, "team-alpha")
    meter = row.locator("meter")
    assert int(meter.get_attribute("value")) == reply.usage.total_tokens > 0
    assert meter.get_attribute("max") == "100000"
    assert row.locator("td.last-used").inner_text() != "never"
    assert key not in page.content()  # shown once, on creation only

    row.get_by_role("button", name="Revoke").click()
    assert key_row(page, "team-alpha").locator("td.status").inner_text() == "revoked"
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(console_service, key)
    assert refused.value.status_code == 401

    page.goto("/console/audit")
    screenshot(page, "audit")
    actions = page.locator("table.audit tbody tr").all_inner_texts()
    assert any(f"{ADMIN}\tkey.create" in line for line in actions)
    assert any(f"{ADMIN}\tkey.revoke" in line for line in actions)
    with sqlite3.connect(console_service.database) as db:
        stored = "".join(str(row) for table in ("audit_log", "api_keys")
                         for row in db.execute(f"SELECT * FROM {table}"))
    assert key not in stored


def test_a_budget_set_on_the_page_holds_from_the_next_request(page, console_service):
    sign_in(page, console_service)
    key = create_key(page, "team-beta")
    assert ask(console_service, key).choices[0].message.content == "echo: hello"
    page.goto("/console/keys")
    limits = key_row(page, "team-beta").locator("form.limits")
    limits.get_by_label("Daily tokens").fill("1")
    limits.get_by_role("button", name="Save").click()
    assert page.get_by_role("status").first.inner_text().startswith("Limits of key")
    with pytest.raises(openai.RateLimitError) as refused:
        ask(console_service, key)
    assert refused.value.body["code"] == "daily_token_budget_exceeded"


def test_a_form_without_its_csrf_token_is_refused(page, console_service):
    sign_in(page, console_service)
    page.goto("/console/keys")
    page.locator("form.create-key input[name=csrf_token]").evaluate("input => input.remove()")
    page.get_by_label("Name").fill("forged")
    page.get_by_role("button", name="Create key").click()
    assert page.get_by_role("heading", name="Form refused").is_visible()
    screenshot(page, "csrf-refused")
    page.goto("/console/keys")
    assert key_row(page, "forged").count() == 0


def test_a_script_in_a_key_name_is_shown_as_text(page, console_service):
    payload = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
    sign_in(page, console_service)
    create_key(page, payload)
    page.goto("/console/keys")
    assert page.locator("tr.key td.name", has_text="<script>").first.inner_text() == payload
    assert page.title() == "Keys · LLM gateway"
    assert page.locator("main script, main img").count() == 0
    screenshot(page, "keys-escaped")
