"""The Requests and Overview pages driven in headless Chromium against gunicorn (issue 25):
a key made on the keys page, used with the openai SDK against /v1/chat/completions; the
request appears on the Requests page with its cost and opens, and so does its conversation;
the Overview counts it; HTML
in a model name stays text (no script runs). Screenshots go to tests/screenshots/."""

from __future__ import annotations

import openai
import pytest
from console_support import screenshot, sign_in
from fake_upstream import Reply
from test_console_browser import create_key

# gpt-4o-mini in the shipped table: 1000 prompt tokens at 0.15 and 500 completion at 0.60 per million.
COST = "0.000450"


def ask(service, key: str, model: str) -> str:
    """One chat completion through the service with `key`, as the SDK's README makes it."""
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0) as client:
        answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
    return answer.choices[0].message.content


@pytest.fixture
def scripts_run(page) -> list[str]:
    """Every dialog a script of the page opened (an XSS payload's alert would)."""
    opened: list[str] = []
    page.on("dialog", lambda dialog: (opened.append(dialog.message), dialog.dismiss()))
    return opened


def test_a_request_made_with_a_console_key_appears_with_its_cost_and_opens(
    page, console_service, upstream, scripts_run
):
    sign_in(page, console_service)
    assert page.url.endswith("/console/overview")
    key = create_key(page, "sdk-user")
    upstream.enqueue(Reply(text="hi there", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500))
    assert ask(console_service, key, "gpt-4o-mini") == "hi there"

    page.goto("/console/requests")
    row = page.locator("tr.request").first
    assert row.locator("td.model").inner_text() == "gpt-4o-mini"
    assert row.locator("td.cost").inner_text() == COST
    assert "sdk-user" in row.inner_text() and "/v1/chat/completions" in row.inner_text()
    screenshot(page, "requests")

    row.locator("a").first.click()
    page.wait_for_load_state()
    assert "/console/requests/" in page.url
    assert page.locator("table.request-detail td.cost").inner_text() == COST
    assert page.locator("a.conversation").get_attribute("href").startswith("/console/conversation?key=")
    screenshot(page, "request")
    # ... and its conversation opens as a thread: the prompt, the reply, what it cost.
    page.locator("a.conversation").click()
    page.wait_for_load_state()
    thread = page.locator("main").inner_text()
    assert "hello" in thread and "hi there" in thread and "$0.00045" in thread, thread
    screenshot(page, "request-conversation")

    page.get_by_role("link", name="Overview").click()
    page.wait_for_load_state()
    today = page.locator('tr.window[data-days="1"]')
    assert COST in today.inner_text()
    assert page.locator("svg rect.bar").count() == 60
    screenshot(page, "overview")
    assert scripts_run == []


def test_html_in_a_model_name_is_shown_as_text(page, console_service, upstream, scripts_run):
    sign_in(page, console_service)
    key = create_key(page, "xss-probe")
    payload = "<img src=x onerror=alert(1)>"
    upstream.enqueue(Reply(text="ok", model="fake-model"))
    ask(console_service, key, payload)
    page.goto("/console/requests?model=" + payload)
    assert page.locator("tr.request td.model").first.inner_text() == payload
    page.locator("tr.request a").first.click()
    page.wait_for_load_state()
    assert page.locator("table.request-detail td.model").inner_text() == payload
    assert page.locator("img").count() == 0 and scripts_run == []
