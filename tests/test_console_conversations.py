"""The console's conversations pages through Flask's test client on each database backend
(issue 25): real traffic through /v1/chat/completions against the fake upstream, then the
pages: the newest conversations by key and keyset pages with no duplicate and no gap, the
search by id and prefix, one conversation as a thread (tool calls, failures, cost, images,
pages of a long one), and erasure behind a confirmation and CSRF, audited.
tests/test_console_conversations_browser.py drives the same pages in Chromium."""

from __future__ import annotations

import html
import re

import pytest
import sqlalchemy as sa
from console_support import csrf_token
from fake_upstream import Reply, Status, tool_call
from support import bearer, create_client_key
from test_console import CONSOLE, make_admin, signed_in

from extensions import db
from models import AuditEntry, Message
from services.console import conversation as thread_service
from services.console import conversations as listing_service
from services.console.conversations import prefix_end
from services.summaries import record_summary

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


@pytest.fixture
def console_app(make_app):
    app = make_app(**CONSOLE, REQUIRE_API_KEY=True)
    make_admin(app)
    return app


def chat(client, key: str, conversation: str, content="hello", model: str = "fake-model", **extra):
    """One chat completion through the API, continuing `conversation` with `key`."""
    messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
    headers = {**bearer(key), "X-Conversation-Id": conversation}
    return client.post("/v1/chat/completions", json={"model": model, "messages": messages, **extra}, headers=headers)


def key_id_of(app, name: str) -> int:
    with app.app_context():
        return db.session.execute(sa.text("SELECT id FROM api_keys WHERE name = :n"), {"n": name}).scalar_one()


def listed(page_html: str) -> list[str]:
    """The conversation ids a conversations page lists, in order."""
    cells = re.findall(r'<td class="conversation-id">\s*<a href="[^"]*">(.*?)</a>', page_html, re.S)
    return [html.unescape(cell) for cell in cells]


def next_link(page_html: str) -> str | None:
    found = re.search(r'class="next-page" href="([^"]+)"', page_html)
    return html.unescape(found.group(1)) if found else None


def all_pages(client, url: str) -> list[list[str]]:
    pages = []
    while url:
        answer = client.get(url)
        assert answer.status_code == 200, answer.text
        pages.append(listed(answer.text))
        url = next_link(answer.text)
    return pages


def count(app, table: str, **where) -> int:
    clause = " AND ".join(f"{name} = :{name}" for name in where) or "1 = 1"
    with app.app_context():
        return db.session.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {clause}"), where).scalar_one()


def test_a_keys_conversations_newest_activity_first_in_keyset_pages(console_app, monkeypatch):
    api = console_app.test_client()
    alpha, beta = create_client_key(console_app, "alpha"), create_client_key(console_app, "beta")
    for number in range(9):
        assert chat(api, alpha, f"conv-{number}").status_code == 200
        assert chat(api, beta, f"conv-{number}").status_code == 200  # the same ids under another key
    for number in (2, 5, 0):  # older conversations come back: their newest activity moves up
        assert chat(api, alpha, f"conv-{number}", "again").status_code == 200
    newest_first = ["conv-0", "conv-5", "conv-2", "conv-8", "conv-7", "conv-6", "conv-4", "conv-3", "conv-1"]
    # Small pages read a few rows at a time, so the walk crosses many batches and pages.
    monkeypatch.setattr(listing_service, "PAGE_SIZE", 2)
    monkeypatch.setattr(listing_service, "SCAN_BATCH", 3)
    console = signed_in(console_app)
    key = key_id_of(console_app, "alpha")
    pages = all_pages(console, f"/console/conversations?key={key}")
    assert [len(page) for page in pages] == [2, 2, 2, 2, 1]
    assert sum(pages, []) == newest_first  # each once, none missing, alpha's only
    everyone = sum(all_pages(console, "/console/conversations"), [])
    assert sorted(everyone) == sorted(newest_first * 2) and everyone[:3] == ["conv-0", "conv-5", "conv-2"]
    first = console.get(f"/console/conversations?key={key}").text
    assert "alpha" in first and f'href="/console/conversation?key={key}&amp;id=conv-0"' in first


def test_a_page_of_a_walk_that_reads_its_limit_ends_early_and_goes_on(console_app, monkeypatch):
    api = console_app.test_client()
    alpha = create_client_key(console_app, "alpha")
    for number in range(4):
        chat(api, alpha, f"conv-{number}")
    for _ in range(4):
        chat(api, alpha, "busy")  # eight rows of one conversation above the others
    monkeypatch.setattr(listing_service, "PAGE_SIZE", 2)
    monkeypatch.setattr(listing_service, "SCAN_BATCH", 2)
    monkeypatch.setattr(listing_service, "SCAN_LIMIT", 4)
    pages = all_pages(signed_in(console_app), "/console/conversations")
    assert [] in pages  # a page that read its limit without a new conversation still goes on
    assert sum(pages, []) == ["busy", "conv-3", "conv-2", "conv-1", "conv-0"]


def test_search_by_id_and_by_prefix_within_a_key_or_across_keys(console_app, monkeypatch):
    api = console_app.test_client()
    alpha, beta = create_client_key(console_app, "alpha"), create_client_key(console_app, "beta")
    for name in ("team-a", "team-b", "team-c", "teammate", "other", "team"):
        chat(api, alpha, name)
    chat(api, beta, "team-b")
    chat(api, beta, "tean")  # just past the prefix's range
    console = signed_in(console_app)
    key = key_id_of(console_app, "alpha")
    exact = console.get("/console/conversations?q=team-b").text
    assert listed(exact) == ["team-b", "team-b"] and "alpha" in exact and "beta" in exact
    assert listed(console.get(f"/console/conversations?q=team-b&key={key}").text) == ["team-b"]
    assert listed(console.get("/console/conversations?q=team-").text) == []  # exact unless prefix=1
    monkeypatch.setattr(listing_service, "PAGE_SIZE", 2)
    pages = all_pages(console, "/console/conversations?q=team&prefix=1")
    assert sum(pages, []) == ["team", "team-a", "team-b", "team-b", "team-c", "teammate"]
    assert [len(page) for page in pages] == [2, 3, 1]  # two ids a page, with every key of each
    assert sum(all_pages(console, f"/console/conversations?q=team-&prefix=1&key={key}"), []) == [
        "team-a",
        "team-b",
        "team-c",
    ]
    assert listed(console.get("/console/conversations?q=nobody&prefix=1").text) == []


def test_prefix_ranges_end_past_every_string_that_starts_with_the_prefix():
    assert prefix_end("team") == "tean"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None
    assert prefix_end("x\ud7ff") == "x\ue000"


def test_a_conversation_reads_as_a_thread_with_tool_calls_failures_and_cost(console_app, upstream):
    api = console_app.test_client()
    alpha = create_client_key(console_app, "alpha")
    arguments = {"city": "<b>Paris</b>"}
    upstream.enqueue(Reply(text=None, tool_calls=[tool_call("call_1", "get_weather", arguments)]))
    system = {"role": "system", "content": "You are terse."}
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    asked = [system, {"role": "user", "content": [{"type": "text", "text": XSS}, image]}]
    assert chat(api, alpha, "thread", asked).status_code == 200
    answered = [{"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    assert chat(api, alpha, "thread", answered).status_code == 200
    upstream.enqueue(Status(500))
    assert chat(api, alpha, "thread", "and tomorrow?").status_code == 502
    key = key_id_of(console_app, "alpha")

    page = signed_in(console_app).get(f"/console/conversation?key={key}&id=thread")
    assert page.status_code == 200
    text = page.text
    assert XSS not in text and html.escape(XSS, quote=False) in text  # shown, as text
    assert "<b>Paris</b>" not in text and "&lt;b&gt;Paris&lt;/b&gt;" in text
    assert 'class="tool-name">get_weather<' in text and "call_1" in text and "sunny, 21 C" in text
    assert '<a href="https://example.com/cat.png" rel="noopener noreferrer nofollow">' in text
    assert "<img" not in text
    with console_app.app_context():
        exchanges = db.session.execute(
            sa.text("SELECT exchange_id, status FROM messages WHERE user_id = 'thread' ORDER BY id")
        ).all()
    assert [status for _, status in dict(exchanges).items()] == ["completed", "completed", "failed"]
    anchors = re.findall(r'<section class="exchange status-(\w+)" id="exchange-([^"]+)"', text)
    assert anchors == [(status, exchange) for exchange, status in dict(exchanges).items()]
    assert 'class="error exchange-error"' in text
    roles = re.findall(r'<article class="turn role-(\w+)', text)
    assert roles == ["user", "assistant", "tool", "assistant", "user"]  # a client's system messages are not stored
    assert "3: 2 completed, 1 failed" in " ".join(text.split())


def test_a_long_conversation_is_read_in_pages_of_whole_exchanges(console_app, monkeypatch):
    api = console_app.test_client()
    alpha = create_client_key(console_app, "alpha")
    for number in range(7):
        assert chat(api, alpha, "long", f"turn {number}").status_code == 200
    monkeypatch.setattr(thread_service, "PAGE_ROWS", 3)  # rows; a page ends with a whole exchange
    console, key = signed_in(console_app), key_id_of(console_app, "alpha")
    url, seen = f"/console/conversation?key={key}&id=long", []
    while url:
        text = console.get(url).text
        seen.append(re.findall(r'<pre class="text">turn (\d)</pre>', text))
        later = re.search(r'class="later" href="([^"]+)"', text)
        url = html.unescape(later.group(1)) if later else None
    assert seen == [["0", "1"], ["2", "3"], ["4", "5"], ["6"]]
    last = console.get(f"/console/conversation?key={key}&id=long&end=1").text
    assert re.findall(r'<pre class="text">turn (\d)</pre>', last) == ["5", "6"]
    earlier = html.unescape(re.search(r'class="earlier" href="([^"]+)"', last).group(1))
    assert re.findall(r'<pre class="text">turn (\d)</pre>', console.get(earlier).text) == ["3", "4"]
    with console_app.app_context():
        rows = db.session.scalars(sa.select(Message).where(Message.user_id == "long")).all()
        exchange = next(row.exchange_id for row in rows if row.content == "turn 4")
    opened = console.get(f"/console/conversation?key={key}&id=long&exchange={exchange}").text
    assert re.findall(r'<pre class="text">turn (\d)</pre>', opened)[0] == "4"


def test_another_keys_conversation_is_not_shown_under_a_key(console_app):
    api = console_app.test_client()
    alpha, beta = create_client_key(console_app, "alpha"), create_client_key(console_app, "beta")
    chat(api, alpha, "shared", "alpha's words")
    chat(api, beta, "shared", "beta's words")
    console = signed_in(console_app)
    text = console.get(f"/console/conversation?key={key_id_of(console_app, 'alpha')}&id=shared").text
    assert "alpha&#39;s words" in text and "beta" not in text
    assert console.get("/console/conversation?key=&id=shared").status_code == 404  # not keyless
    assert console.get("/console/conversation?key=999&id=shared").status_code == 404
    assert console.get("/console/conversation?key=x&id=shared").status_code == 404


def test_keyless_conversations_are_listed_and_read_with_an_empty_key(make_app):
    app = make_app(**CONSOLE)
    make_admin(app)
    assert app.test_client().post("/openai-completion", json={"prompt": "hi", "user_id": "open"}).status_code == 200
    console = signed_in(app)
    assert listed(console.get("/console/conversations?key=").text) == ["open"]
    page = console.get("/console/conversation?key=&id=open")
    assert page.status_code == 200 and "echo: hi" in page.text and "no key" in page.text


def test_erasing_needs_the_confirmation_and_its_csrf_token_and_is_audited(console_app):
    api = console_app.test_client()
    alpha, beta = create_client_key(console_app, "alpha"), create_client_key(console_app, "beta")
    item = {"type": "message", "role": "user", "content": "kept by the Conversations API"}
    made = api.post("/v1/conversations", json={"items": [item], "metadata": {"topic": "x"}}, headers=bearer(alpha))
    assert made.status_code == 200, made.text
    doomed = made.get_json()["id"]
    chat(api, alpha, doomed, "first")
    answer = api.post(
        "/v1/responses",
        json={"model": "fake-model", "input": "via responses", "conversation": doomed},
        headers=bearer(alpha),
    )
    assert answer.status_code == 200, answer.text
    chat(api, beta, doomed, "beta keeps this")  # the same id under another key
    key = key_id_of(console_app, "alpha")
    console = signed_in(console_app)
    rows = count(console_app, "messages", user_id=doomed, api_key_id=key)
    assert rows == 5 and count(console_app, "responses", user_id=doomed, api_key_id=key) == 1
    assert count(console_app, "conversations", user_id=doomed, api_key_id=key) == 1

    confirm = console.get(f"/console/conversation/erase?key={key}&id={doomed}")
    assert confirm.status_code == 200 and f"its\n{rows} messages" in confirm.text
    form = {"key": str(key), "id": doomed}
    assert console.post("/console/conversation/erase", data=form).status_code == 400  # no CSRF token
    unconfirmed = console.post("/console/conversation/erase", data={**form, "csrf_token": csrf_token(confirm.text)})
    assert unconfirmed.status_code == 303 and "/console/conversation/erase?" in unconfirmed.headers["Location"]
    assert count(console_app, "messages", user_id=doomed, api_key_id=key) == rows

    erased = console.post(
        "/console/conversation/erase", data={**form, "confirm": "yes", "csrf_token": csrf_token(confirm.text)}
    )
    assert erased.status_code == 303
    assert f"Erased conversation {doomed}: {rows} messages" in console.get(erased.headers["Location"]).text
    for table in ("messages", "responses", "conversations"):
        assert count(console_app, table, user_id=doomed, api_key_id=key) == 0
    assert count(console_app, "messages", user_id=doomed) == 2  # beta's conversation stays
    assert api.get(f"/v1/conversations/{doomed}", headers=bearer(alpha)).status_code == 404
    with console_app.app_context():
        entry = db.session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id.desc())).first().to_dict()
    assert (entry["actor"], entry["action"], entry["target"]) == ("ops", "conversation.erase", doomed)
    assert entry["detail"] == {"key": alpha[:12], "conversation": doomed, "messages": rows}
    assert console.get(f"/console/conversation?key={key}&id={doomed}").status_code == 404


def test_a_summary_row_is_shown_as_a_block_of_its_own(console_app):
    """Compaction (issue 24) stores summaries as rows marked as such: shown apart, escaped."""
    api = console_app.test_client()
    alpha = create_client_key(console_app, "alpha")
    chat(api, alpha, "compacted", "remember me")
    with console_app.app_context():
        asked = db.session.scalars(sa.select(Message).where(Message.user_id == "compacted")).first()
        summary, through = "The user <b>said</b> remember me.", asked.public_id
        row = {
            "content": summary,
            "compacts_through": asked.id,
            "message_fields": {"compacts_through": asked.public_id},
            "model": "fake-model",
        }
        record_summary(db.session, "summary-1", "compacted", asked.api_key_id, row)
        db.session.commit()
    text = signed_in(console_app).get(f"/console/conversation?key={key_id_of(console_app, 'alpha')}&id=compacted").text
    block = text.split('<article class="turn summary"')[1].split("</article>")[0]
    assert "Summary of earlier exchanges" in block and "The user &lt;b&gt;said&lt;/b&gt; remember me." in block
    assert f"through row <code>{through}</code>" in block
    # Counted as a summary, not as an exchange the client left (1 exchange, 1 summary).
    counts = text.split("<dt>Exchanges</dt>")[1].split("</dd>")[0]
    assert "1 completed" in counts and "1 summaries" in counts and "disconnected" not in counts, counts


def test_every_exchange_status_is_shown_and_counted(console_app):
    api = console_app.test_client()
    alpha = create_client_key(console_app, "alpha")
    for number in range(5):
        chat(api, alpha, "statuses", f"turn {number}")
    statuses = ["completed", "failed", "disconnected", "abandoned", "pending"]
    with console_app.app_context():
        rows = db.session.scalars(sa.select(Message).where(Message.user_id == "statuses").order_by(Message.id)).all()
        exchanges = list(dict.fromkeys(row.exchange_id for row in rows))
        for exchange, status in zip(exchanges, statuses, strict=True):
            db.session.execute(sa.update(Message).where(Message.exchange_id == exchange).values(status=status))
        db.session.commit()
    text = signed_in(console_app).get(f"/console/conversation?key={key_id_of(console_app, 'alpha')}&id=statuses").text
    assert re.findall(r'<section class="exchange status-(\w+)"', text) == statuses
    assert "5: 1 completed, 1 failed, 1 disconnected, 1 abandoned, 1 pending" in " ".join(text.split())


@pytest.mark.parametrize(
    "path", ["/console/conversations", "/console/conversation?key=&id=x", "/console/conversation/erase?key=&id=x"]
)
def test_the_pages_need_a_signed_in_operator_and_carry_the_strict_headers(console_app, path):
    key = create_client_key(console_app, "alpha")
    answer = console_app.test_client().get(path, headers=bearer(key))  # a client key opens nothing
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/sign-in"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in signed_in(console_app).get(path).headers["Content-Security-Policy"]
