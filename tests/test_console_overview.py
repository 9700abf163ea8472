"""The console's Overview page (issue 25), on each database backend: real traffic through
the API against the fake upstream, then today's, 7 and 30 days' totals, the breakdowns by
model, key and route, latency percentiles and the SVG charts, all from the daily rollups."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fake_upstream import Reply, Status
from support import bearer, create_client_key
from test_console import CONSOLE, make_admin, signed_in

from extensions import db
from services.console.overview import percentile

# gpt-4o-mini in the shipped table: 0.15 input, 0.60 output per million tokens.
MINI_COST = 1000 * 0.15 + 500 * 0.60  # 450 micro-dollars


@pytest.fixture
def console_app(make_app):
    app = make_app(**CONSOLE, REQUIRE_API_KEY=True)
    make_admin(app)
    return app


def cells(html: str, row_pattern: str) -> list[str]:
    """The text of the cells of the first table row matching `row_pattern`."""
    row = re.search(row_pattern + r"(.*?)</tr>", html, re.S)
    assert row, f"no row {row_pattern!r}"
    return [
        re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row.group(1), re.S)
    ]


def test_the_overview_sums_todays_traffic_by_model_key_and_route(console_app, upstream):
    alpha, beta = create_client_key(console_app, "alpha"), create_client_key(console_app, "beta")
    api = console_app.test_client()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    upstream.enqueue(
        Reply(text="a", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500),
        Reply(text="b", model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500),
        Status(400, message="no"),
    )
    assert api.post("/v1/chat/completions", json=body, headers=bearer(alpha)).status_code == 200
    assert api.post("/v1/chat/completions", json=body, headers=bearer(beta)).status_code == 200
    assert api.post("/openai-completion", json={"prompt": "x"}, headers=bearer(beta)).status_code == 400

    console = signed_in(console_app)
    page = console.get("/console/overview")
    assert page.status_code == 200
    # Requests, errors, prompt tokens, completion tokens, cost, p50, p95.
    today = cells(page.text, r'<tr class="window" data-days="1">')
    assert today[1:6] == ["3", "1", "2000", "1000", f"{2 * MINI_COST / 1e6:.6f}"]
    assert today[6].endswith(" ms") and today[7].endswith(" ms")
    assert cells(page.text, r'<tr class="window" data-days="30">')[1:6] == today[1:6]

    by_model = page.text.split('data-by="model"')[1].split("</table>")[0]
    assert cells(by_model, r'<tr class="part">')[:3] == ["gpt-4o-mini", "2", "0"]  # the costliest first
    by_key = page.text.split('data-by="api_key_id"')[1].split("</table>")[0]
    assert "alpha (" in by_key and "beta (" in by_key
    by_route = page.text.split('data-by="route"')[1].split("</table>")[0]
    assert cells(by_route, r'<tr class="part">')[:3] == ["/v1/chat/completions", "2", "0"]
    assert cells(by_route, r'<tr class="part">.*?<tr class="part">')[:3] == ["/openai-completion", "1", "1"]

    # Two charts of 30 bars; today's is the last and the tallest.
    assert page.text.count('<rect class="bar"') == 60
    assert "style=" not in page.text and "<script" not in page.text  # the CSP allows neither

    # The page reads the rollups, never the log: emptied, the log changes nothing shown.
    with console_app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM request_log"))
    assert cells(console.get("/console/overview").text, r'<tr class="window" data-days="1">') == today


def test_the_windows_count_days_back_from_today(console_app):
    today = datetime.now(UTC).date()
    rows = [
        (today, 1),
        (today - timedelta(days=6), 10),
        (today - timedelta(days=7), 100),
        (today - timedelta(days=30), 1000),
    ]
    with console_app.app_context(), db.engine.begin() as conn:
        for day, requests in rows:
            zeros = ", ".join(["0"] * 15)  # errors, tokens, cost, latency: none
            counters = "requests, errors, prompt_tokens, completion_tokens, cost_micros, latency_ms_total, "
            counters += ", ".join(f"latency_b{n}" for n in range(10))
            insert = f"INSERT INTO request_rollups (day, model, route, {counters}) VALUES (:day, 'm', '', :n, {zeros})"
            conn.execute(sa.text(insert), {"day": day, "n": requests})
            insert = f"INSERT INTO request_key_rollups (day, api_key_id, {counters}) VALUES (:day, 0, :n, {zeros})"
            conn.execute(sa.text(insert), {"day": day, "n": requests})
    page = signed_in(console_app).get("/console/overview?days=7").text
    counts = [cells(page, rf'<tr class="window" data-days="{days}">')[1] for days in (1, 7, 30)]
    assert counts == ["1", "11", "111"]
    assert cells(page.split('data-by="model"')[1], r'<tr class="part">')[:2] == ["m", "11"]
    assert cells(page.split('data-by="api_key_id"')[1], r'<tr class="part">')[:2] == ["no key", "11"]


def test_latency_percentiles_come_from_the_histogram():
    assert percentile([0] * 10, 0.5) is None
    assert percentile([0, 0, 4, 0, 0, 0, 0, 0, 0, 0], 0.5) == "375 ms"  # halfway into 250..500
    assert percentile([90, 0, 0, 0, 0, 0, 0, 0, 0, 10], 0.95) == "> 60000 ms"
    assert percentile([90, 0, 0, 0, 0, 0, 0, 0, 0, 10], 0.5) == "< 100 ms"  # not made up within 0..100
