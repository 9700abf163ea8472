"""The console's conversations pages in headless Chromium against gunicorn (issue 25): a
conversation made through the real openai SDK with a script in its prompt, found on the
page, read as a thread with the script shown as text and never run, opened at an exchange's
anchor, then erased through the confirmation. Screenshots go to tests/screenshots/."""

from __future__ import annotations

import sqlite3

import openai
import pytest
import requests
from console_support import screenshot, sign_in
from test_console_browser import create_key

pytestmark = pytest.mark.usefixtures("upstream")

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def ask(service, key: str, conversation: str, prompt: str):
    """One chat completion continuing `conversation`, as the SDK's README makes it."""
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0)
    try:
        return client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": prompt}],
            extra_headers={"X-Conversation-Id": conversation},
        )
    finally:
        client.close()


def test_a_conversation_with_a_script_in_it_is_read_as_text_and_erased(page, console_service):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, console_service)
    key = create_key(page, "team-xss")
    assert ask(console_service, key, "xss-thread", XSS).choices[0].message.content == f"echo: {XSS}"
    assert ask(console_service, key, "xss-thread", "and then?").choices[0].message.content == "echo: and then?"

    page.get_by_role("link", name="Conversations").click()
    page.get_by_label("Conversation id").fill("xss-")
    page.get_by_label("ids starting with it").check()
    page.get_by_role("button", name="Search").click()
    row = page.locator("tr.conversation", has=page.get_by_role("link", name="xss-thread"))
    assert row.locator("td.key").inner_text().startswith("team-xss")
    screenshot(page, "conversations")
    row.get_by_role("link", name="xss-thread").click()

    assert page.get_by_role("heading", name="Conversation xss-thread").is_visible()
    texts = page.locator("article.turn pre.text").all_inner_texts()
    assert texts == [XSS, f"echo: {XSS}", "and then?", "echo: and then?"]
    assert page.locator("main img, main script").count() == 0
    assert page.locator("section.exchange .status").all_inner_texts() == ["COMPLETED", "COMPLETED"]
    screenshot(page, "conversation")

    with sqlite3.connect(console_service.database) as db:
        exchange = db.execute("SELECT exchange_id FROM messages WHERE user_id = 'xss-thread' ORDER BY id").fetchone()[0]
    page.goto(f"{page.url}#exchange-{exchange}")
    assert page.locator("section.exchange:target").locator("pre.text").first.inner_text() == XSS

    page.get_by_role("link", name="Erase this conversation…").click()
    assert page.get_by_role("heading", name="Erase conversation xss-thread?").is_visible()
    screenshot(page, "conversation-erase")
    page.get_by_role("button", name="Erase it for good").click()
    assert page.get_by_role("status").first.inner_text().startswith("Erased conversation xss-thread: 4 messages")
    assert page.get_by_role("link", name="xss-thread").count() == 0
    answer = requests.get(
        f"{console_service.url}/conversations/xss-thread", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert answer.status_code == 404
    page.goto("/console/audit")
    assert any("conversation.erase" in line for line in page.locator("table.audit tbody tr").all_inner_texts())
    assert dialogs == []  # no script of the conversation ever ran
