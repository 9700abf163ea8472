"""The request log and the console's Requests page (issue 25), on each database backend:
real traffic through the API against the fake upstream, then the log rows and the page;
keyset paging with neither duplicates nor gaps; filters; an exchange's own page; the rows
a journal replay and the sweeper write; user content shown inert."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fake_upstream import Reply, Status
from support import bearer, create_client_key
from test_console import CONSOLE, make_admin, signed_in

from database import unit_of_work
from extensions import db
from models import Message, MessageStatus, RequestLog
from services.exchanges import record_turn
from services.recorder import Ending, replay_entry
from services.sweeper import ABANDONED_ERROR, sweep

# gpt-4o-mini in the shipped table: 0.15 input, 0.60 output per million tokens.
MINI_COST = 1000 * 0.15 + 500 * 0.60  # 450 micro-dollars
ROLLUPS = ("request_rollups", "request_key_rollups")


@pytest.fixture
def console_app(make_app):
    app = make_app(**CONSOLE, REQUIRE_API_KEY=True)
    make_admin(app)
    return app


def log_rows(app) -> list[dict]:
    with app.app_context(), db.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.text("SELECT * FROM request_log ORDER BY id"))]


def chat(client, key: str, content: str = "hi", model: str = "gpt-4o-mini"):
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return client.post("/v1/chat/completions", json=body, headers=bearer(key))


def listed_exchanges(html: str) -> list[str]:
    return re.findall(r'<tr class="request" data-exchange="([^"]+)"', html)


def test_each_exchange_is_logged_with_its_route_model_cost_and_latency(console_app, upstream):
    key = create_client_key(console_app, "alpha")
    api = console_app.test_client()
    upstream.enqueue(Reply(text="one", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500))
    assert chat(api, key).status_code == 200
    upstream.enqueue(Reply(text="two", model="gpt-4o-mini", prompt_tokens=10, completion_tokens=5))
    seed = api.post("/openai-completion", json={"prompt": "hello", "user_id": "seeded"}, headers=bearer(key))
    assert seed.status_code == 200
    upstream.enqueue(Status(400, message="bad things"))
    assert chat(api, key, model="gpt-4o").status_code == 400

    first, second, failed = log_rows(console_app)
    assert (first["route"], first["model"], first["answered_model"], first["status"]) == (
        "/v1/chat/completions",
        "gpt-4o-mini",
        "gpt-4o-mini",
        "completed",
    )
    assert (first["prompt_tokens"], first["completion_tokens"], first["cost_micros"]) == (1000, 500, MINI_COST)
    assert first["latency_ms"] is not None and first["latency_ms"] >= 0
    assert (second["route"], second["user_id"]) == ("/openai-completion", "seeded")
    assert (failed["status"], failed["model"], failed["cost_micros"]) == ("failed", "gpt-4o", None)
    assert "bad things" in failed["error"]
    assert len({row["api_key_id"] for row in (first, second, failed)}) == 1

    with console_app.app_context(), db.engine.connect() as conn:
        rollups = conn.execute(sa.text("SELECT model, route, requests, errors, cost_micros FROM request_rollups"))
        by_model = {(row.model, row.route): tuple(row)[2:] for row in rollups}
    assert by_model[("gpt-4o-mini", "/v1/chat/completions")] == (1, 0, MINI_COST)
    assert by_model[("gpt-4o", "/v1/chat/completions")] == (1, 1, 0)
    with console_app.app_context(), db.engine.connect() as conn:
        by_key = conn.execute(sa.text("SELECT api_key_id, requests, errors, cost_micros FROM request_key_rollups"))
        # The second reply: 10 and 5 tokens of gpt-4o-mini, 4.5 micro-dollars, rounded to 5.
        assert [tuple(row) for row in by_key] == [(first["api_key_id"], 3, 1, MINI_COST + 5)]


def test_the_requests_page_shows_the_log_filters_it_and_opens_an_exchange(console_app, upstream):
    alpha, beta = create_client_key(console_app, "alpha"), create_client_key(console_app, "beta")
    api = console_app.test_client()
    upstream.enqueue(Reply(text="one", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500))
    assert chat(api, alpha).status_code == 200
    assert chat(api, beta, model="fake-model").status_code == 200
    upstream.enqueue(Status(400, message="refused upstream"))
    assert chat(api, beta, model="fake-model").status_code == 400
    costly, cheap, failed = (row["exchange_id"] for row in log_rows(console_app))

    console = signed_in(console_app)
    page = console.get("/console/requests")
    assert page.status_code == 200
    assert listed_exchanges(page.text) == [failed, cheap, costly]  # newest first
    assert "0.000450" in page.text and "/v1/chat/completions" in page.text

    assert listed_exchanges(console.get(f"/console/requests?key={alpha[:12]}").text) == [costly]
    pasted = console.get(f"/console/requests?key={alpha}")  # a whole key: filtered by its prefix, never shown
    assert listed_exchanges(pasted.text) == [costly] and alpha not in pasted.text
    assert listed_exchanges(console.get("/console/requests?model=fake-model").text) == [failed, cheap]
    assert listed_exchanges(console.get("/console/requests?status=failed").text) == [failed]
    assert listed_exchanges(console.get("/console/requests?route=/openai-completion").text) == []
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert listed_exchanges(console.get(f"/console/requests?since={tomorrow}").text) == []
    assert len(listed_exchanges(console.get(f"/console/requests?until={tomorrow}").text)) == 3
    unknown = console.get("/console/requests?key=nobody&since=soon")
    assert listed_exchanges(unknown.text) == [] and "give a key" in unknown.text and "give a date" in unknown.text

    detail = console.get(f"/console/requests/{costly}")
    assert detail.status_code == 200
    assert "0.000450" in detail.text and "alpha" in detail.text
    conversation = re.search(r'<a class="conversation" href="([^"]+)"', detail.text).group(1)
    assert conversation.startswith("/console/conversation?key=") and conversation.endswith(f"#exchange-{costly}")
    assert console.get("/console/requests/no-such-exchange").status_code == 404


def _paged_turns(console_app, monkeypatch, count: int) -> list[str]:
    """`count` turns of one key, logged, with pages of 3; their exchange ids newest first."""
    monkeypatch.setattr("services.console.requests.PAGE_SIZE", 3)
    key = create_client_key(console_app, "pager")
    api = console_app.test_client()
    for number in range(count):
        assert chat(api, key, content=f"turn {number}", model="fake-model").status_code == 200
    return [row["exchange_id"] for row in log_rows(console_app)][::-1]


def test_pages_follow_the_keyset_with_neither_duplicates_nor_gaps(console_app, monkeypatch):
    newest_first = _paged_turns(console_app, monkeypatch, 8)

    console, url, seen, pages = signed_in(console_app), "/console/requests?model=fake-model", [], 0
    while url:
        page = console.get(url)
        assert "OFFSET" not in page.text
        seen += listed_exchanges(page.text)
        pages += 1
        found = re.search(r'<a rel="next" href="([^"]+)"', page.text)
        url = found.group(1).replace("&amp;", "&") if found else None
        assert url is None or "model=fake-model" in url  # the filters go on to the next page
    assert seen == newest_first and pages == 3


def test_the_next_page_goes_on_when_its_last_row_has_gone_meanwhile(console_app, monkeypatch):
    """The "Older requests" link holds the last row's time and id, so a row replaced (an
    ending recorded again) or pruned between two page views does not end the list early."""
    newest_first = _paged_turns(console_app, monkeypatch, 6)
    console = signed_in(console_app)
    first = console.get("/console/requests")
    assert listed_exchanges(first.text) == newest_first[:3]
    with console_app.app_context(), unit_of_work() as session:  # the page's last row goes
        session.execute(sa.delete(RequestLog).where(RequestLog.exchange_id == newest_first[2]))
    link = re.search(r'<a rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    assert listed_exchanges(console.get(link).text) == newest_first[3:]


def test_a_replayed_journal_entry_writes_its_log_row_and_an_old_entry_still_replays(console_app):
    with console_app.app_context():
        with unit_of_work() as session:
            record_turn(session, "ex-journaled", "journaled", None, [{"role": "user", "content": "q"}])
            record_turn(session, "ex-old-entry", "journaled", None, [{"role": "user", "content": "q"}])
        reply = {"role": "assistant", "content": "a", "message_fields": None, "model": "gpt-4o-mini"}
        reply.update(prompt_tokens=3, completion_tokens=4, cost_micros=7)
        ending = Ending("ex-journaled", "journaled", None, MessageStatus.COMPLETED, reply=reply, model="gpt-4o-mini")
        replay_entry({**ending.__class__(**{**ending.__dict__, "route": "/v1/responses", "latency_ms": 42}).as_entry()})
        old_entry = Ending("ex-old-entry", "journaled", None, MessageStatus.COMPLETED, reply=reply).as_entry()
        del old_entry["route"], old_entry["latency_ms"]
        old_entry["error"] = "e" * 5000  # a long error (an edited line): cut to fit, the ending kept
        replay_entry(old_entry)
        replay_entry(old_entry)  # applied twice (a commit that looked failed): one row still
    rows = {row["exchange_id"]: row for row in log_rows(console_app)}
    assert len(rows) == 2
    journaled, old = rows["ex-journaled"], rows["ex-old-entry"]
    assert (journaled["route"], journaled["latency_ms"], journaled["cost_micros"]) == ("/v1/responses", 42, 7)
    assert (old["route"], old["latency_ms"], old["model"], old["prompt_tokens"]) == (None, None, "gpt-4o-mini", 3)
    assert old["error"] == "e" * 300


def test_an_abandoned_exchange_is_logged_by_the_sweeper_and_replaced_by_its_late_reply(console_app):
    with console_app.app_context():
        with unit_of_work() as session:
            record_turn(session, "ex-abandoned", "swept", None, [{"role": "user", "content": "slow"}])
        assert sweep(datetime.now(UTC) + timedelta(hours=1)).exchanges == 1
        [row] = log_rows(console_app)
        assert (row["status"], row["error"], row["user_id"]) == ("abandoned", ABANDONED_ERROR, "swept")
        with db.engine.connect() as conn:
            counted = [
                conn.execute(sa.text(f"SELECT SUM(requests), SUM(errors) FROM {table}")).one() for table in ROLLUPS
            ]
        assert [tuple(row) for row in counted] == [(1, 1), (1, 1)]

        reply = {"role": "assistant", "content": "late", "message_fields": None, "model": "fake-model"}
        replay_entry(Ending("ex-abandoned", "swept", None, MessageStatus.COMPLETED, reply=reply).as_entry())
        [row] = log_rows(console_app)
        assert (row["status"], row["error"]) == ("completed", None)
        with db.engine.connect() as conn:
            counted = [
                conn.execute(sa.text(f"SELECT SUM(requests), SUM(errors) FROM {table}")).one() for table in ROLLUPS
            ]
        assert [tuple(row) for row in counted] == [(1, 0), (1, 0)]  # the abandoned count taken back out
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Message)) == 2


def test_html_in_a_model_name_or_an_error_is_shown_inert(console_app, upstream):
    key = create_client_key(console_app, "<b>key</b>")
    payload = "<img src=x onerror=alert(1)>"
    upstream.enqueue(Status(400, message=f"upstream says {payload}"))
    assert chat(console_app.test_client(), key, model=f"m{payload}").status_code == 400
    console = signed_in(console_app)
    [exchange] = listed_exchanges(console.get("/console/requests").text)
    for page in (console.get("/console/requests").text, console.get(f"/console/requests/{exchange}").text):
        assert payload not in page and "<b>key" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
